// ResNet-18/34/50/101 (He et al., CVPR 2016; torchvision's v1.5 layout, stride on the 3×3, or with
// `stride_in_1x1` the original v1 / Caffe layout, stride on the first 1×1) with
// attention in every block (timm's slots: SE/ECA/DS after the last norm before the residual add; SK
// replaces the 3×3 convolution) or at DSNet's stage placement, and `dsnet_resnet50` (seed 000, Fig. 3).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "osteonet/attention/attention.hpp"
#include "osteonet/backbones/backbone.hpp"
#include "osteonet/detail/layers.hpp"
#include "osteonet/detail/norm.hpp"

namespace osteonet::backbones {

namespace detail_resnet {
/// conv1x1 + BN (or FrozenBatchNorm2d) shortcut when a block changes shape (torchvision's `downsample`).
inline torch::nn::Sequential make_downsample(int64_t inplanes, int64_t outplanes, int64_t stride, bool frozen_bn) {
  if (stride == 1 && inplanes == outplanes) return torch::nn::Sequential(nullptr);
  torch::nn::Sequential seq(detail::conv2d(inplanes, outplanes, 1, stride, 0));
  if (frozen_bn)
    seq->push_back(detail::FrozenBatchNorm2d(outplanes));
  else
    seq->push_back(detail::batch_norm(outplanes));
  return seq;
}

/// The residual branch's input: x, or downsample(x) (its norm fused in place at inference).
inline torch::Tensor shortcut(torch::nn::Sequential& downsample, const torch::Tensor& x) {
  if (!downsample) return x;
  if (core::overridden(downsample.get())) return core::call(downsample, x);
  auto layers = downsample->begin();  // [conv, norm]
  bool python = false;
  auto y = core::call(layers[0], x, &python);
  auto norm = downsample->ptr(1);
  if (!python && !core::overridden(norm.get()) && detail::fused_norm_act_(y, *norm, {}, /*relu=*/false)) return y;
  return core::call(layers[1], y);
}

/// bn(x) [+ attention] + identity, then ReLU: the end of every residual block. Without attention
/// the norm, the addition and the ReLU are one fused in-place pass at inference. `x_owned`: `x` is
/// the block's own temporary (Python did not compute it), so it may be overwritten.
inline torch::Tensor finish_block(detail::Norm2d& bn, std::optional<torch::nn::AnyModule>& attn,
                                  const torch::Tensor& x, bool x_owned, const torch::Tensor& identity) {
  if (!attn) return bn.forward_act(x, /*relu=*/true, identity, x_owned);
  bool python = false;
  auto out = core::call(*attn, bn.forward_act(x, /*relu=*/false, {}, x_owned), &python);
  if (python)
    out = out + identity;  // a hook may hold the attention's output
  else
    out += identity;
  return out.relu_();
}
}  // namespace detail_resnet

/// Two 3×3 convolutions (ResNet-18/34). SK replaces conv1 (which carries the stride).
class BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl>, public core::TensorInvocable<BasicBlockImpl> {
 public:
  static constexpr int64_t expansion = 1;

  BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, attention::AttentionOptions attn,
                 bool frozen_bn = false, bool stride_in_1x1 = false)
      : inplanes_(inplanes), planes_(planes), stride_(stride), attn_options_(std::move(attn)), frozen_bn_(frozen_bn) {
    OSTEONET_CHECK(!stride_in_1x1, "BasicBlock: stride_in_1x1 applies to bottleneck ResNets (resnet50/101), "
                                   "got stride_in_1x1=true for a basic block");
    reset();
  }

  void reset() override {
    if (attention::replaces_conv(attn_options_)) {
      sk_ = attention::create_attention(attn_options_, inplanes_, planes_, stride_);
      register_module("conv1", sk_->ptr());
    } else {
      conv1 = register_module("conv1", detail::conv2d(inplanes_, planes_, 3, stride_));
      bn1 = detail::Norm2d(planes_, frozen_bn_);
      register_module("bn1", bn1.ptr());
      attn_ = attention::create_attention(attn_options_, planes_);
    }
    conv2 = register_module("conv2", detail::conv2d(planes_, planes_, 3));
    bn2 = detail::Norm2d(planes_, frozen_bn_);
    register_module("bn2", bn2.ptr());
    if (attn_) register_module("attn", attn_->ptr());
    downsample = detail_resnet::make_downsample(inplanes_, planes_, stride_, frozen_bn_);
    if (downsample) register_module("downsample", downsample);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    bool python = false;
    torch::Tensor out;
    if (sk_) {
      out = core::call(*sk_, x);
    } else {
      out = core::call(conv1, x, &python);
      out = bn1.forward_act(out, /*relu=*/true, {}, !python);
    }
    out = core::call(conv2, out, &python);
    return detail_resnet::finish_block(bn2, attn_, out, !python, detail_resnet::shortcut(downsample, x));
  }

  /// The last norm of the block (zeroed by zero_init_residual).
  detail::Norm2d last_norm() const { return bn2; }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  detail::Norm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};

 private:
  int64_t inplanes_, planes_, stride_;
  attention::AttentionOptions attn_options_;
  bool frozen_bn_;
  std::optional<torch::nn::AnyModule> sk_, attn_;
};
TORCH_MODULE(BasicBlock);

/// 1×1 -> 3×3 (stride) -> 1×1 bottleneck (ResNet-50/101); with `stride_in_1x1` the stride is on the
/// first 1×1 (ResNet v1, the Caffe/Keras weights' layout). SK replaces conv2.
class BottleneckImpl : public torch::nn::Cloneable<BottleneckImpl>, public core::TensorInvocable<BottleneckImpl> {
 public:
  static constexpr int64_t expansion = 4;

  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, attention::AttentionOptions attn,
                 bool frozen_bn = false, bool stride_in_1x1 = false)
      : inplanes_(inplanes),
        planes_(planes),
        stride_(stride),
        attn_options_(std::move(attn)),
        frozen_bn_(frozen_bn),
        stride_in_1x1_(stride_in_1x1) {
    reset();
  }

  void reset() override {
    const int64_t width = planes_, out = planes_ * expansion;
    const int64_t s1 = stride_in_1x1_ ? stride_ : 1, s3 = stride_in_1x1_ ? 1 : stride_;
    conv1 = register_module("conv1", detail::conv2d(inplanes_, width, 1, s1, 0));
    bn1 = detail::Norm2d(width, frozen_bn_);
    register_module("bn1", bn1.ptr());
    if (attention::replaces_conv(attn_options_)) {
      sk_ = attention::create_attention(attn_options_, width, width, s3);
      register_module("conv2", sk_->ptr());
    } else {
      conv2 = register_module("conv2", detail::conv2d(width, width, 3, s3));
      bn2 = detail::Norm2d(width, frozen_bn_);
      register_module("bn2", bn2.ptr());
      attn_ = attention::create_attention(attn_options_, out);
    }
    conv3 = register_module("conv3", detail::conv2d(width, out, 1, 1, 0));
    bn3 = detail::Norm2d(out, frozen_bn_);
    register_module("bn3", bn3.ptr());
    if (attn_) register_module("attn", attn_->ptr());
    downsample = detail_resnet::make_downsample(inplanes_, out, stride_, frozen_bn_);
    if (downsample) register_module("downsample", downsample);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    bool python = false;
    auto out = core::call(conv1, x, &python);
    out = bn1.forward_act(out, /*relu=*/true, {}, !python);
    if (sk_) {
      out = core::call(*sk_, out);
    } else {
      out = core::call(conv2, out, &python);
      out = bn2.forward_act(out, /*relu=*/true, {}, !python);
    }
    out = core::call(conv3, out, &python);
    return detail_resnet::finish_block(bn3, attn_, out, !python, detail_resnet::shortcut(downsample, x));
  }

  detail::Norm2d last_norm() const { return bn3; }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  detail::Norm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};

 private:
  int64_t inplanes_, planes_, stride_;
  attention::AttentionOptions attn_options_;
  bool frozen_bn_;
  bool stride_in_1x1_;
  std::optional<torch::nn::AnyModule> sk_, attn_;
};
TORCH_MODULE(Bottleneck);

/// Options for ResNet.
///
/// Example:
/// ```
/// auto net = resnet50(ResNetOptions().num_classes(3).attention(attention::attention_options("se"))
///                         .placement(AttentionPlacement::kBlocks));
/// ```
struct ResNetOptions {
  ResNetOptions(std::vector<int64_t> layers = {3, 4, 6, 3}) : layers_(std::move(layers)) {}  // NOLINT
  /// Blocks per stage.
  TORCH_ARG(std::vector<int64_t>, layers);
  OSTEONET_BACKBONE_ARGS
  /// Attention in every block (timm's slots) or at DSNet's two stage positions.
  TORCH_ARG(AttentionPlacement, placement) = AttentionPlacement::kBlocks;
  /// Zero the last BatchNorm of each block (Goyal et al.), as torchvision's option.
  TORCH_ARG(bool, zero_init_residual) = false;
  /// torchvision's FrozenBatchNorm2d in place of every BatchNorm2d (the norm of its pretrained
  /// detectors: statistics and affine parameters as buffers, no num_batches_tracked).
  TORCH_ARG(bool, frozen_bn) = false;
  /// ResNet v1 (the original Caffe/Keras layout): the stride of layer2-4's first block is on its
  /// first 1×1 convolution, not on the 3×3 (torchvision's v1.5). Bottleneck ResNets only; module
  /// names and state-dict keys are the same either way.
  TORCH_ARG(bool, stride_in_1x1) = false;
};

/// ResNet with torchvision's module names and order (conv1, bn1, relu, maxpool, layer1..4, avgpool,
/// fc; DSNet's attn_stem after maxpool and attn_last after layer4), Block = BasicBlockImpl or
/// BottleneckImpl. Feature maps: relu (stride 2), layer1..layer4 (strides 4..32).
template <typename Block>
class ResNetImpl : public Backbone<ResNetImpl<Block>> {
  // Names from the (dependent) base, so the body reads as in the non-template backbones.
  using Base = Backbone<ResNetImpl<Block>>;
  using Base::feature_info_;
  using Base::in_chans_;
  using Base::init_common;
  using Base::model_name_;
  using Base::num_classes_;
  using Base::probe_;

 public:
  using Base::check_input;
  using Base::last_attention;
  using Base::stem_attention;
  explicit ResNetImpl(ResNetOptions options, std::string name = "resnet") : options(std::move(options)) {
    model_name_ = std::move(name);
    reset();
  }

  void reset() override {
    OSTEONET_CHECK(options.layers().size() == 4, model_name_, ": expected 4 stages, got ", options.layers().size());
    init_common(options);
    const bool in_blocks = options.placement() == AttentionPlacement::kBlocks;
    const attention::AttentionOptions block_attn =
        in_blocks ? options.attention() : attention::AttentionOptions{attention::NoAttentionOptions{}};

    conv1 = this->register_module("conv1", detail::conv2d(in_chans_, 64, 7, 2, 3));
    bn1 = detail::Norm2d(64, options.frozen_bn());
    this->register_module("bn1", bn1.ptr());
    relu = this->register_module("relu", torch::nn::ReLU(torch::nn::ReLUOptions(true)));
    maxpool = this->register_module("maxpool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
    if (!in_blocks) this->register_stem_attention(options.attention(), 64);
    int64_t inplanes = 64;
    const int64_t planes[4] = {64, 128, 256, 512};
    torch::nn::Sequential* stages[4] = {&layer1, &layer2, &layer3, &layer4};
    for (int i = 0; i < 4; ++i) {
      torch::nn::Sequential seq;
      for (int64_t b = 0; b < options.layers()[i]; ++b) {
        const int64_t stride = (b == 0 && i > 0) ? 2 : 1;
        seq->push_back(std::make_shared<Block>(inplanes, planes[i], stride, block_attn, options.frozen_bn(),
                                               options.stride_in_1x1()));
        inplanes = planes[i] * Block::expansion;
      }
      *stages[i] = this->register_module("layer" + std::to_string(i + 1), seq);
    }
    if (!in_blocks) this->register_last_attention(options.attention(), inplanes);
    avgpool = this->register_module("avgpool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
    fc = torch::nn::Linear(nullptr);
    if (num_classes_ > 0) fc = this->register_module("fc", torch::nn::Linear(inplanes, num_classes_));
    probe_ = conv1->weight;
    this->set_stem_path("conv1");
    feature_info_ = {{"relu", 64, 2},
                     {"layer1", 64 * Block::expansion, 4},
                     {"layer2", 128 * Block::expansion, 8},
                     {"layer3", 256 * Block::expansion, 16},
                     {"layer4", 512 * Block::expansion, 32}};
    detail::init_kaiming_fan_out(*this, /*linear_std=*/0.0);
    if (options.zero_init_residual()) {
      torch::NoGradGuard no_grad;
      for (auto* stage : stages)
        for (auto& m : **stage) m.get<Block>().last_norm().weight().zero_();
    }
    this->finish_init();
  }

  torch::Tensor forward_features(torch::Tensor x) override {
    check_input(x);
    x = core::call(layer1, stem_attention(core::call(maxpool, stem(x))));
    return last_attention(core::call(layer4, core::call(layer3, core::call(layer2, x))));
  }

  torch::Tensor forward_head(torch::Tensor x, bool pre_logits = false) override {
    x = core::call(avgpool, x).flatten(1);
    return pre_logits || !fc ? x : core::call(fc, x);
  }

  std::vector<torch::Tensor> forward_intermediates(torch::Tensor x) override {
    check_input(x);
    auto s = stem(x);
    auto c2 = core::call(layer1, stem_attention(core::call(maxpool, s)));
    auto c3 = core::call(layer2, c2);
    auto c4 = core::call(layer3, c3);
    auto c5 = last_attention(core::call(layer4, c4));
    return {s, c2, c3, c4, c5};
  }

  std::string head_path() const override { return fc ? "fc" : ""; }

  void reset_classifier(int64_t num_classes) override {  // PyTorch's Linear init, as torchvision's
    this->replace_head(fc, "fc", num_classes, [](int64_t n) { return torch::nn::Linear(512 * Block::expansion, n); }, 0.0);
  }

  ResNetOptions options;
  torch::nn::Conv2d conv1{nullptr};
  detail::Norm2d bn1{nullptr};
  torch::nn::ReLU relu{nullptr};
  torch::nn::MaxPool2d maxpool{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  // conv1 -> bn1 -> relu (the norm and the ReLU fused at inference while C++ runs all three).
  torch::Tensor stem(const torch::Tensor& x) {
    bool python = false;
    auto s = core::call(conv1, x, &python);
    if (core::overridden(relu.get())) return core::call(relu, bn1.forward_act(s, /*relu=*/false, {}, !python));
    return bn1.forward_act(s, /*relu=*/true, {}, !python);
  }
};

template <typename Block>
class ResNet : public torch::nn::ModuleHolder<ResNetImpl<Block>> {
 public:
  using torch::nn::ModuleHolder<ResNetImpl<Block>>::ModuleHolder;
};

using ResNetBasic = ResNet<BasicBlockImpl>;
using ResNetBottleneck = ResNet<BottleneckImpl>;

inline ResNetBasic resnet18(ResNetOptions o = {}) { return ResNetBasic(o.layers({2, 2, 2, 2}), "resnet18"); }
inline ResNetBasic resnet34(ResNetOptions o = {}) { return ResNetBasic(o.layers({3, 4, 6, 3}), "resnet34"); }
inline ResNetBottleneck resnet50(ResNetOptions o = {}) { return ResNetBottleneck(o.layers({3, 4, 6, 3}), "resnet50"); }
inline ResNetBottleneck resnet101(ResNetOptions o = {}) { return ResNetBottleneck(o.layers({3, 4, 23, 3}), "resnet101"); }

/// DSNet's backbone (seed 000, Fig. 3): ResNet-50 with a DS module after the 7×7/max-pool stem stage
/// (`attn_stem`, 64 channels) and after the last stage (`attn_last`, 2048 channels). `ds` overrides
/// the DS options (see attention/dual_selective.hpp for the choices the paper leaves open).
inline ResNetBottleneck dsnet_resnet50(ResNetOptions o = {},
                                       attention::DualSelectiveOptions ds = attention::DualSelectiveOptions()) {
  return ResNetBottleneck(o.layers({3, 4, 6, 3}).attention(ds).placement(AttentionPlacement::kDSNet),
                          "dsnet_resnet50");
}

}  // namespace osteonet::backbones
