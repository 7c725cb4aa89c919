// U-Net (Ronneberger et al., MICCAI 2015) — classic, or with any osteonet backbone as its encoder
// through the backbone's feature-map description — and U-Net++ (Zhou et al., DLMIA 2018: nested
// skip paths, optional deep supervision). 2-D, any number of classes. Seeds 003 (vertebral bodies)
// and 004 (hip regions).
//
// Choices: 3×3 convolutions are padded (output size = input size, as in most modern U-Nets; the
// original used unpadded convolutions and cropping), BatchNorm after each convolution, decoders
// upsample by transposed convolution (classic) or bilinear interpolation to the skip's exact size
// (backbone encoders, U-Net++), so odd input sizes work.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/backbones/registry.hpp"  // the encoders
#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/core/model_registry.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::segmentation {

/// conv3×3-BN-ReLU twice (U-Net's unit), submodules `0`..`5` of a Seq.
inline detail::Seq double_conv(int64_t in, int64_t out, int64_t mid = 0) {
  if (mid <= 0) mid = out;
  return detail::Seq(detail::conv2d(in, mid, 3), detail::batch_norm(mid), torch::nn::ReLU(true),
                     detail::conv2d(mid, out, 3), detail::batch_norm(out), torch::nn::ReLU(true));
}

/// Resizes `x` to the spatial size of `like` (bilinear, align_corners=false).
inline torch::Tensor resize_like(const torch::Tensor& x, const torch::Tensor& like) {
  if (x.size(2) == like.size(2) && x.size(3) == like.size(3)) return x;
  return torch::nn::functional::interpolate(
      x, torch::nn::functional::InterpolateFuncOptions()
             .size(std::vector<int64_t>{like.size(2), like.size(3)})
             .mode(torch::kBilinear)
             .align_corners(false));
}

/// Every segmentation model: logits N x num_classes x H x W at the input's size.
class SegmenterImpl : public core::Invocable {
 public:
  ~SegmenterImpl() override = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  /// Deep-supervision heads in training (U-Net++), else {forward(x)}.
  virtual std::vector<torch::Tensor> forward_all(torch::Tensor x) { return {forward(std::move(x))}; }
  virtual torch::nn::Module& module() = 0;
  std::vector<torch::Tensor> invoke(const std::vector<torch::Tensor>& args) override {
    OSTEONET_CHECK(args.size() == 1, seg_name_, ": forward takes one tensor, got ", args.size());
    return {forward(args[0])};
  }
  const std::string& model_name() const { return seg_name_; }
  int64_t in_chans() const { return in_chans_; }
  int64_t num_classes() const { return num_classes_; }

  void check_input(const torch::Tensor& x) const {
    OSTEONET_CHECK_TYPE(x.defined() && x.is_floating_point(), seg_name_, ": expected a floating-point input, got ",
                        x.defined() ? std::string(c10::toString(x.scalar_type())) : "undefined");
    OSTEONET_CHECK(x.dim() == 4, seg_name_, ": expected a 4-D input (N, C, H, W), got a ", x.dim(), "-D tensor of shape ",
                   x.sizes());
    OSTEONET_CHECK(x.size(1) == in_chans_, seg_name_, ": expected ", in_chans_, " input channels, got ", x.size(1));
    OSTEONET_CHECK(x.size(2) >= min_size_ && x.size(3) >= min_size_, seg_name_, ": expected height and width >= ",
                   min_size_, ", got ", x.size(2), "x", x.size(3));
  }

 protected:
  std::string seg_name_ = "segmenter";
  int64_t in_chans_ = 1, num_classes_ = 2, min_size_ = 16;
};

/// Options for UNet.
///
/// Example:
/// ```
/// UNet net(UNetOptions().in_chans(1).num_classes(5).base_channels(32));           // classic
/// UNet r34(UNetOptions().encoder("resnet34").in_chans(1).num_classes(2));         // ResNet-34 encoder
/// ```
struct UNetOptions {
  TORCH_ARG(int64_t, in_chans) = 1;
  /// Output channels (logits); 1 for a binary mask with a sigmoid, >= 2 with a softmax.
  TORCH_ARG(int64_t, num_classes) = 2;
  /// "" for the classic encoder, else a registered backbone's name (core::models().names("backbone")).
  TORCH_ARG(std::string, encoder) = "";
  /// Classic: channels of the first level (doubling per level). Backbone: ignored.
  TORCH_ARG(int64_t, base_channels) = 64;
  /// Classic: number of down-sampling steps (the original has 4).
  TORCH_ARG(int64_t, depth) = 4;
  /// Decoder channels per level, deepest first (backbone encoders); empty = {256, 128, 64, 32, 16}.
  TORCH_ARG(std::vector<int64_t>, decoder_channels) = std::vector<int64_t>{};
};

/// U-Net. Classic: `down.i` (double conv), `up.i` (transposed conv), `dec.i` (double conv), `head`.
/// Backbone encoder: `encoder` (the osteonet backbone, num_classes 0), `dec.i`, `head`.
class UNetImpl : public torch::nn::Cloneable<UNetImpl>, public SegmenterImpl {
 public:
  explicit UNetImpl(UNetOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    in_chans_ = options.in_chans();
    num_classes_ = options.num_classes();
    OSTEONET_CHECK(in_chans_ > 0 && num_classes_ > 0, "UNet: in_chans and num_classes must be positive, got in_chans=",
                   in_chans_, " num_classes=", num_classes_);
    down = register_module("down", torch::nn::ModuleList());
    up = register_module("up", torch::nn::ModuleList());
    dec = register_module("dec", torch::nn::ModuleList());
    if (options.encoder().empty()) {
      seg_name_ = "unet";
      OSTEONET_CHECK(options.depth() >= 1 && options.depth() <= 6, "UNet: depth must be in 1..6, got depth=", options.depth());
      OSTEONET_CHECK(options.base_channels() > 0, "UNet: base_channels must be positive, got ", options.base_channels());
      min_size_ = int64_t{1} << options.depth();
      int64_t c = options.base_channels();
      down->push_back(double_conv(in_chans_, c));
      for (int64_t i = 0; i < options.depth(); ++i) down->push_back(double_conv(c << i, c << (i + 1)));
      for (int64_t i = options.depth(); i > 0; --i) {
        up->push_back(torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(c << i, c << (i - 1), 2).stride(2)));
        dec->push_back(double_conv(c << i, c << (i - 1)));
      }
      head = register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, num_classes_, 1)));
    } else {
      seg_name_ = "unet_" + options.encoder();
      core::models().at(options.encoder(), "backbone");
      encoder_ = core::create<backbones::BackboneImpl>(
          options.encoder(), OptionMap({{"num_classes", int64_t{0}}, {"in_chans", in_chans_}}));
      register_module("encoder", encoder_->module().shared_from_this());
      const auto& info = encoder_->feature_info();
      min_size_ = std::max<int64_t>(info.back().stride, encoder_->min_input_size());
      std::vector<int64_t> widths = options.decoder_channels();
      if (widths.empty()) widths = {256, 128, 64, 32, 16};
      OSTEONET_CHECK(widths.size() >= info.size(), "UNet: need ", info.size(), " decoder widths for encoder '",
                     options.encoder(), "', got ", widths.size());
      int64_t c = info.back().channels;
      for (size_t i = 0; i + 1 < info.size(); ++i) {  // deepest skip first
        const auto& skip = info[info.size() - 2 - i];
        dec->push_back(double_conv(c + skip.channels, widths[i]));
        c = widths[i];
      }
      // Up to full resolution when the shallowest map is strided (ResNet's stride 2).
      if (info.front().stride > 1) {
        dec->push_back(double_conv(c, widths[info.size() - 1]));
        c = widths[info.size() - 1];
      }
      head = register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, num_classes_, 1)));
    }
  }

  torch::Tensor forward(torch::Tensor x) override {
    check_input(x);
    if (!encoder_) {
      std::vector<torch::Tensor> skips;
      for (size_t i = 0; i < down->size(); ++i) {
        if (i > 0) x = torch::max_pool2d(x, 2);
        x = core::call(*down[i]->as<detail::SeqImpl>(), x);
        skips.push_back(x);
      }
      for (size_t i = 0; i < up->size(); ++i) {
        const auto& skip = skips[skips.size() - 2 - i];
        x = core::call(*up[i]->as<torch::nn::ConvTranspose2dImpl>(), x);
        x = pad_to(x, skip);
        x = core::call(*dec[i]->as<detail::SeqImpl>(), torch::cat({skip, x}, 1));
      }
      return core::call(head, x);
    }
    auto feats = encoder_->forward_intermediates(x);
    auto y = feats.back();
    size_t d = 0;
    for (size_t i = 0; i + 1 < feats.size(); ++i, ++d) {
      const auto& skip = feats[feats.size() - 2 - i];
      y = core::call(*dec[d]->as<detail::SeqImpl>(), torch::cat({skip, resize_like(y, skip)}, 1));
    }
    if (d < dec->size()) y = core::call(*dec[d]->as<detail::SeqImpl>(), resize_like(y, x));
    return resize_like(core::call(head, y), x);
  }

  torch::nn::Module& module() override { return *this; }
  /// The backbone encoder runs through forward_intermediates (its maps), not as one call.
  std::vector<std::string> opaque_children() const override { return {"encoder"}; }
  std::vector<std::string> walked_children() const override { return {"down", "up", "dec"}; }

  UNetOptions options;
  torch::nn::ModuleList down{nullptr}, up{nullptr}, dec{nullptr};
  torch::nn::Conv2d head{nullptr};

 private:
  // Zero-pads the upsampled map to the skip's size (odd sizes lose a row/column when pooling).
  static torch::Tensor pad_to(const torch::Tensor& x, const torch::Tensor& like) {
    const int64_t dh = like.size(2) - x.size(2), dw = like.size(3) - x.size(3);
    if (dh == 0 && dw == 0) return x;
    return torch::constant_pad_nd(x, {dw / 2, dw - dw / 2, dh / 2, dh - dh / 2});
  }

  std::shared_ptr<backbones::BackboneImpl> encoder_;
};
TORCH_MODULE(UNet);

/// Options for UNetPlusPlus.
///
/// Example:
/// ```
/// UNetPlusPlus net(UNetPlusPlusOptions().in_chans(1).num_classes(5).deep_supervision(true));
/// ```
struct UNetPlusPlusOptions {
  TORCH_ARG(int64_t, in_chans) = 1;
  TORCH_ARG(int64_t, num_classes) = 2;
  /// Channels per level (U-Net++ paper: 32, 64, 128, 256, 512).
  TORCH_ARG(std::vector<int64_t>, channels) = std::vector<int64_t>{32, 64, 128, 256, 512};
  /// One 1×1 head on each of X^{0,1..L}; training returns all, inference their mean ("accurate"
  /// mode of the paper) or the last one (`fast_inference`).
  TORCH_ARG(bool, deep_supervision) = false;
  TORCH_ARG(bool, fast_inference) = false;
};

/// Nested U-Net: nodes `x_i_j` (double convs; X^{i,j} = conv([X^{i,0..j-1}, up(X^{i+1,j-1})])),
/// heads `head` or `head_j` under deep supervision.
class UNetPlusPlusImpl : public torch::nn::Cloneable<UNetPlusPlusImpl>, public SegmenterImpl {
 public:
  explicit UNetPlusPlusImpl(UNetPlusPlusOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    seg_name_ = "unet_plusplus";
    in_chans_ = options.in_chans();
    num_classes_ = options.num_classes();
    const auto& ch = options.channels();
    OSTEONET_CHECK(ch.size() >= 2, "UNetPlusPlus: needs at least 2 levels, got ", ch.size());
    OSTEONET_CHECK(in_chans_ > 0 && num_classes_ > 0, "UNetPlusPlus: in_chans and num_classes must be positive");
    levels_ = static_cast<int64_t>(ch.size());
    min_size_ = int64_t{1} << (levels_ - 1);
    nodes_.assign(levels_, std::vector<detail::Seq>(levels_, detail::Seq(nullptr)));
    for (int64_t j = 0; j < levels_; ++j) {
      for (int64_t i = 0; i + j < levels_; ++i) {
        int64_t in = j == 0 ? (i == 0 ? in_chans_ : ch[i - 1]) : ch[i] * j + ch[i + 1];
        nodes_[i][j] = register_module("x_" + std::to_string(i) + "_" + std::to_string(j), double_conv(in, ch[i]));
      }
    }
    heads = register_module("heads", torch::nn::ModuleList());
    const int64_t n_heads = options.deep_supervision() ? levels_ - 1 : 1;
    for (int64_t k = 0; k < n_heads; ++k) heads->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(ch[0], num_classes_, 1)));
  }

  std::vector<torch::Tensor> forward_all(torch::Tensor x) override {
    check_input(x);
    std::vector<std::vector<torch::Tensor>> X(levels_, std::vector<torch::Tensor>(levels_));
    for (int64_t i = 0; i < levels_; ++i)
      X[i][0] = core::call(nodes_[i][0], i == 0 ? x : torch::max_pool2d(X[i - 1][0], 2));
    for (int64_t j = 1; j < levels_; ++j) {
      for (int64_t i = 0; i + j < levels_; ++i) {
        std::vector<torch::Tensor> parts(X[i].begin(), X[i].begin() + j);
        parts.push_back(resize_like(X[i + 1][j - 1], X[i][0]));
        X[i][j] = core::call(nodes_[i][j], torch::cat(parts, 1));
      }
    }
    std::vector<torch::Tensor> outs;
    if (options.deep_supervision()) {
      for (int64_t k = 0; k < levels_ - 1; ++k) outs.push_back(core::call(*heads[k]->as<torch::nn::Conv2dImpl>(), X[0][k + 1]));
    } else {
      outs.push_back(core::call(*heads[0]->as<torch::nn::Conv2dImpl>(), X[0][levels_ - 1]));
    }
    return outs;
  }

  torch::Tensor forward(torch::Tensor x) override {
    auto outs = forward_all(std::move(x));
    if (outs.size() == 1 || options.fast_inference()) return outs.back();
    return torch::stack(outs).mean(0);
  }

  torch::nn::Module& module() override { return *this; }

  std::vector<std::string> walked_children() const override { return {"heads"}; }

  UNetPlusPlusOptions options;
  torch::nn::ModuleList heads{nullptr};

 private:
  int64_t levels_ = 0;
  std::vector<std::vector<detail::Seq>> nodes_;
};
TORCH_MODULE(UNetPlusPlus);

}  // namespace osteonet::segmentation
