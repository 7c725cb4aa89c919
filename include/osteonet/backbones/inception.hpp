// Inception-v3 (Szegedy et al., CVPR 2016), torchvision's layout, auxiliary head optional; one of
// seed 001's comparison networks. DSNet-style attention placement: after maxpool1 (stride 4, 64
// channels, `attn_stem`) and after Mixed_7c (2048 channels, `attn_last`).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::backbones {

/// conv (no bias) + BN(eps 1e-3) + ReLU, named conv and bn.
class BasicConv2dImpl : public torch::nn::Cloneable<BasicConv2dImpl>, public core::TensorInvocable<BasicConv2dImpl> {
 public:
  BasicConv2dImpl(int64_t in, int64_t out, std::array<int64_t, 2> k, int64_t stride = 1,
                  std::array<int64_t, 2> pad = {0, 0})
      : in_(in), out_(out), k_(k), stride_(stride), pad_(pad) {
    reset();
  }
  BasicConv2dImpl(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0)
      : BasicConv2dImpl(in, out, {k, k}, stride, {pad, pad}) {}
  void reset() override {
    conv = register_module("conv", detail::conv2d_hw(in_, out_, k_, pad_, stride_));
    bn = register_module("bn", detail::batch_norm(out_, 1e-3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    bool python = false;
    auto y = core::call(bn, core::call(conv, x), &python);
    return python ? torch::relu(y) : y.relu_();  // in place unless a hook may hold the norm's output
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};

 private:
  int64_t in_, out_;
  std::array<int64_t, 2> k_;
  int64_t stride_;
  std::array<int64_t, 2> pad_;
};
TORCH_MODULE(BasicConv2d);

namespace detail_inception {
inline torch::Tensor avg3(const torch::Tensor& x) { return torch::avg_pool2d(x, 3, 1, 1); }
inline torch::Tensor max3s2(const torch::Tensor& x) { return torch::max_pool2d(x, 3, 2); }
}  // namespace detail_inception

/// Registers a BasicConv2d under `name` (Inception blocks have many).
#define OSTEONET_BASIC_CONV(name, ...) name = register_module(#name, BasicConv2d(__VA_ARGS__))

class InceptionAImpl : public torch::nn::Cloneable<InceptionAImpl>, public core::TensorInvocable<InceptionAImpl> {
 public:
  InceptionAImpl(int64_t in, int64_t pool_features) : in_(in), pool_(pool_features) { reset(); }
  void reset() override {
    OSTEONET_BASIC_CONV(branch1x1, in_, 64, 1);
    OSTEONET_BASIC_CONV(branch5x5_1, in_, 48, 1);
    OSTEONET_BASIC_CONV(branch5x5_2, 48, 64, 5, 1, 2);
    OSTEONET_BASIC_CONV(branch3x3dbl_1, in_, 64, 1);
    OSTEONET_BASIC_CONV(branch3x3dbl_2, 64, 96, 3, 1, 1);
    OSTEONET_BASIC_CONV(branch3x3dbl_3, 96, 96, 3, 1, 1);
    OSTEONET_BASIC_CONV(branch_pool, in_, pool_, 1);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::cat({core::call(branch1x1, x), core::call(branch5x5_2, core::call(branch5x5_1, x)), core::call(branch3x3dbl_3, core::call(branch3x3dbl_2, core::call(branch3x3dbl_1, x))),
                       core::call(branch_pool, detail_inception::avg3(x))},
                      1);
  }
  BasicConv2d branch1x1{nullptr}, branch5x5_1{nullptr}, branch5x5_2{nullptr}, branch3x3dbl_1{nullptr},
      branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr}, branch_pool{nullptr};

 private:
  int64_t in_, pool_;
};
TORCH_MODULE(InceptionA);

class InceptionBImpl : public torch::nn::Cloneable<InceptionBImpl>, public core::TensorInvocable<InceptionBImpl> {
 public:
  explicit InceptionBImpl(int64_t in) : in_(in) { reset(); }
  void reset() override {
    OSTEONET_BASIC_CONV(branch3x3, in_, 384, 3, 2);
    OSTEONET_BASIC_CONV(branch3x3dbl_1, in_, 64, 1);
    OSTEONET_BASIC_CONV(branch3x3dbl_2, 64, 96, 3, 1, 1);
    OSTEONET_BASIC_CONV(branch3x3dbl_3, 96, 96, 3, 2);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::cat({core::call(branch3x3, x), core::call(branch3x3dbl_3, core::call(branch3x3dbl_2, core::call(branch3x3dbl_1, x))), detail_inception::max3s2(x)}, 1);
  }
  BasicConv2d branch3x3{nullptr}, branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr};

 private:
  int64_t in_;
};
TORCH_MODULE(InceptionB);

class InceptionCImpl : public torch::nn::Cloneable<InceptionCImpl>, public core::TensorInvocable<InceptionCImpl> {
 public:
  InceptionCImpl(int64_t in, int64_t c7) : in_(in), c7_(c7) { reset(); }
  void reset() override {
    const std::array<int64_t, 2> k17{1, 7}, k71{7, 1}, p17{0, 3}, p71{3, 0};
    OSTEONET_BASIC_CONV(branch1x1, in_, 192, 1);
    OSTEONET_BASIC_CONV(branch7x7_1, in_, c7_, 1);
    OSTEONET_BASIC_CONV(branch7x7_2, c7_, c7_, k17, 1, p17);
    OSTEONET_BASIC_CONV(branch7x7_3, c7_, 192, k71, 1, p71);
    OSTEONET_BASIC_CONV(branch7x7dbl_1, in_, c7_, 1);
    OSTEONET_BASIC_CONV(branch7x7dbl_2, c7_, c7_, k71, 1, p71);
    OSTEONET_BASIC_CONV(branch7x7dbl_3, c7_, c7_, k17, 1, p17);
    OSTEONET_BASIC_CONV(branch7x7dbl_4, c7_, c7_, k71, 1, p71);
    OSTEONET_BASIC_CONV(branch7x7dbl_5, c7_, 192, k17, 1, p17);
    OSTEONET_BASIC_CONV(branch_pool, in_, 192, 1);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto b7 = core::call(branch7x7_3, core::call(branch7x7_2, core::call(branch7x7_1, x)));
    auto b7d = core::call(branch7x7dbl_5, core::call(branch7x7dbl_4, core::call(branch7x7dbl_3, core::call(branch7x7dbl_2, core::call(branch7x7dbl_1, x)))));
    return torch::cat({core::call(branch1x1, x), b7, b7d, core::call(branch_pool, detail_inception::avg3(x))}, 1);
  }
  BasicConv2d branch1x1{nullptr}, branch7x7_1{nullptr}, branch7x7_2{nullptr}, branch7x7_3{nullptr},
      branch7x7dbl_1{nullptr}, branch7x7dbl_2{nullptr}, branch7x7dbl_3{nullptr}, branch7x7dbl_4{nullptr},
      branch7x7dbl_5{nullptr}, branch_pool{nullptr};

 private:
  int64_t in_, c7_;
};
TORCH_MODULE(InceptionC);

class InceptionDImpl : public torch::nn::Cloneable<InceptionDImpl>, public core::TensorInvocable<InceptionDImpl> {
 public:
  explicit InceptionDImpl(int64_t in) : in_(in) { reset(); }
  void reset() override {
    OSTEONET_BASIC_CONV(branch3x3_1, in_, 192, 1);
    OSTEONET_BASIC_CONV(branch3x3_2, 192, 320, 3, 2);
    OSTEONET_BASIC_CONV(branch7x7x3_1, in_, 192, 1);
    OSTEONET_BASIC_CONV(branch7x7x3_2, 192, 192, std::array<int64_t, 2>{1, 7}, 1, std::array<int64_t, 2>{0, 3});
    OSTEONET_BASIC_CONV(branch7x7x3_3, 192, 192, std::array<int64_t, 2>{7, 1}, 1, std::array<int64_t, 2>{3, 0});
    OSTEONET_BASIC_CONV(branch7x7x3_4, 192, 192, 3, 2);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::cat({core::call(branch3x3_2, core::call(branch3x3_1, x)), core::call(branch7x7x3_4, core::call(branch7x7x3_3, core::call(branch7x7x3_2, core::call(branch7x7x3_1, x)))),
                       detail_inception::max3s2(x)},
                      1);
  }
  BasicConv2d branch3x3_1{nullptr}, branch3x3_2{nullptr}, branch7x7x3_1{nullptr}, branch7x7x3_2{nullptr},
      branch7x7x3_3{nullptr}, branch7x7x3_4{nullptr};

 private:
  int64_t in_;
};
TORCH_MODULE(InceptionD);

class InceptionEImpl : public torch::nn::Cloneable<InceptionEImpl>, public core::TensorInvocable<InceptionEImpl> {
 public:
  explicit InceptionEImpl(int64_t in) : in_(in) { reset(); }
  void reset() override {
    const std::array<int64_t, 2> k13{1, 3}, k31{3, 1}, p13{0, 1}, p31{1, 0};
    OSTEONET_BASIC_CONV(branch1x1, in_, 320, 1);
    OSTEONET_BASIC_CONV(branch3x3_1, in_, 384, 1);
    OSTEONET_BASIC_CONV(branch3x3_2a, 384, 384, k13, 1, p13);
    OSTEONET_BASIC_CONV(branch3x3_2b, 384, 384, k31, 1, p31);
    OSTEONET_BASIC_CONV(branch3x3dbl_1, in_, 448, 1);
    OSTEONET_BASIC_CONV(branch3x3dbl_2, 448, 384, 3, 1, 1);
    OSTEONET_BASIC_CONV(branch3x3dbl_3a, 384, 384, k13, 1, p13);
    OSTEONET_BASIC_CONV(branch3x3dbl_3b, 384, 384, k31, 1, p31);
    OSTEONET_BASIC_CONV(branch_pool, in_, 192, 1);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto b3 = core::call(branch3x3_1, x);
    auto b3d = core::call(branch3x3dbl_2, core::call(branch3x3dbl_1, x));
    return torch::cat({core::call(branch1x1, x), torch::cat({core::call(branch3x3_2a, b3), core::call(branch3x3_2b, b3)}, 1),
                       torch::cat({core::call(branch3x3dbl_3a, b3d), core::call(branch3x3dbl_3b, b3d)}, 1),
                       core::call(branch_pool, detail_inception::avg3(x))},
                      1);
  }
  BasicConv2d branch1x1{nullptr}, branch3x3_1{nullptr}, branch3x3_2a{nullptr}, branch3x3_2b{nullptr},
      branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3a{nullptr}, branch3x3dbl_3b{nullptr},
      branch_pool{nullptr};

 private:
  int64_t in_;
};
TORCH_MODULE(InceptionE);

class InceptionAuxImpl : public torch::nn::Cloneable<InceptionAuxImpl>, public core::TensorInvocable<InceptionAuxImpl> {
 public:
  InceptionAuxImpl(int64_t in, int64_t num_classes) : in_(in), num_classes_(num_classes) { reset(); }
  void reset() override {
    OSTEONET_BASIC_CONV(conv0, in_, 128, 1);
    OSTEONET_BASIC_CONV(conv1, 128, 768, 5);
    fc = register_module("fc", torch::nn::Linear(768, num_classes_));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = core::call(conv1, core::call(conv0, torch::avg_pool2d(x, 5, 3)));
    return core::call(fc, torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1));
  }
  BasicConv2d conv0{nullptr}, conv1{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  int64_t in_, num_classes_;
};
TORCH_MODULE(InceptionAux);

#undef OSTEONET_BASIC_CONV

/// Options for Inception-v3.
///
/// Example:
/// ```
/// auto net = inception_v3(InceptionV3Options().num_classes(2).aux_logits(false));
/// ```
struct InceptionV3Options {
  /// Build the auxiliary classifier (AuxLogits) used in training.
  TORCH_ARG(bool, aux_logits) = true;
  /// Re-normalise ImageNet-normalised input to [-1, 1] (torchvision's pretrained weights expect it).
  TORCH_ARG(bool, transform_input) = false;
  TORCH_ARG(double, dropout) = 0.5;
  OSTEONET_BACKBONE_ARGS
};

/// torchvision's names (Conv2d_1a_3x3 ... Mixed_7c, AuxLogits, fc). Feature maps: Conv2d_2b_3x3
/// (stride 2), Conv2d_4a_3x3 (4), Mixed_5d (8), Mixed_6e (16), Mixed_7c (32).
class InceptionV3Impl : public Backbone<InceptionV3Impl> {
 public:
  explicit InceptionV3Impl(InceptionV3Options options, std::string name = "inception_v3")
      : options(std::move(options)) {
    model_name_ = std::move(name);
    min_input_size_ = 75;
    reset();
  }

  void reset() override {
    init_common(options);
    OSTEONET_CHECK(!options.transform_input() || in_chans_ == 3, model_name_,
                   ": transform_input needs 3 input channels, got in_chans=", in_chans_);
    Conv2d_1a_3x3 = register_module("Conv2d_1a_3x3", BasicConv2d(in_chans_, 32, 3, 2));
    Conv2d_2a_3x3 = register_module("Conv2d_2a_3x3", BasicConv2d(32, 32, 3));
    Conv2d_2b_3x3 = register_module("Conv2d_2b_3x3", BasicConv2d(32, 64, 3, 1, 1));
    Conv2d_3b_1x1 = register_module("Conv2d_3b_1x1", BasicConv2d(64, 80, 1));
    Conv2d_4a_3x3 = register_module("Conv2d_4a_3x3", BasicConv2d(80, 192, 3));
    Mixed_5b = register_module("Mixed_5b", InceptionA(192, 32));
    Mixed_5c = register_module("Mixed_5c", InceptionA(256, 64));
    Mixed_5d = register_module("Mixed_5d", InceptionA(288, 64));
    Mixed_6a = register_module("Mixed_6a", InceptionB(288));
    Mixed_6b = register_module("Mixed_6b", InceptionC(768, 128));
    Mixed_6c = register_module("Mixed_6c", InceptionC(768, 160));
    Mixed_6d = register_module("Mixed_6d", InceptionC(768, 160));
    Mixed_6e = register_module("Mixed_6e", InceptionC(768, 192));
    if (options.aux_logits() && num_classes_ > 0)
      AuxLogits = register_module("AuxLogits", InceptionAux(768, num_classes_));
    Mixed_7a = register_module("Mixed_7a", InceptionD(768));
    Mixed_7b = register_module("Mixed_7b", InceptionE(1280));
    Mixed_7c = register_module("Mixed_7c", InceptionE(2048));
    probe_ = Conv2d_1a_3x3->conv->weight;
    set_stem_path("Conv2d_1a_3x3.conv");
    register_stage_attention(options.attention(), 64, 2048);
    if (num_classes_ > 0) fc = register_module("fc", torch::nn::Linear(2048, num_classes_));
    feature_info_ = {{"Conv2d_2b_3x3", 64, 2}, {"Conv2d_4a_3x3", 192, 4}, {"Mixed_5d", 288, 8},
                     {"Mixed_6e", 768, 16},    {"Mixed_7c", 2048, 32}};
    // torchvision: truncated normal (std 0.1; AuxLogits.conv1 0.01, AuxLogits.fc 0.001), unit/zero norms.
    torch::NoGradGuard no_grad;
    for (auto& kv : named_modules("", /*include_self=*/false)) {
      double std = 0.1;
      if (kv.key() == "AuxLogits.conv1.conv") std = 0.01;
      if (kv.key() == "AuxLogits.fc") std = 0.001;
      if (auto* c = kv.value()->as<torch::nn::Conv2dImpl>()) torch::nn::init::normal_(c->weight, 0, std).clamp_(-2, 2);
      if (auto* l = kv.value()->as<torch::nn::LinearImpl>()) torch::nn::init::normal_(l->weight, 0, std).clamp_(-2, 2);
      if (auto* b = kv.value()->as<torch::nn::BatchNorm2dImpl>()) {
        torch::nn::init::ones_(b->weight);
        torch::nn::init::zeros_(b->bias);
      }
    }
    finish_init();
  }

  torch::Tensor forward_features(torch::Tensor x) override { return body(x, nullptr, nullptr); }

  torch::Tensor forward_head(torch::Tensor x, bool pre_logits = false) override {
    auto y = torch::adaptive_avg_pool2d(x, {1, 1});
    y = torch::dropout(y, options.dropout(), is_training()).flatten(1);
    return pre_logits || !fc ? y : core::call(fc, y);
  }

  /// {logits, aux_logits} in training mode with the auxiliary head; {logits} otherwise.
  std::vector<torch::Tensor> forward_heads(torch::Tensor x) override {
    torch::Tensor aux;
    const bool with_aux = is_training() && AuxLogits;
    OSTEONET_CHECK(!with_aux || (x.dim() == 4 && x.size(2) >= 299 && x.size(3) >= 299), model_name_,
                   ": the auxiliary head needs height and width >= 299 in training, got ", x.sizes(),
                   " (build with aux_logits=false for smaller inputs)");
    auto y = forward_head(body(x, nullptr, with_aux ? &aux : nullptr));
    if (aux.defined()) return {y, aux};
    return {y};
  }

  std::vector<torch::Tensor> forward_intermediates(torch::Tensor x) override {
    std::vector<torch::Tensor> taps;
    taps.push_back(body(x, &taps, nullptr));
    return taps;
  }

  std::string head_path() const override { return fc ? "fc" : ""; }

  /// A new `fc` (and AuxLogits.fc, when the auxiliary head exists; num_classes 0 removes both).
  void reset_classifier(int64_t num_classes) override {
    set_num_classes(num_classes);
    if (fc) unregister_module("fc");
    fc = torch::nn::Linear(nullptr);
    if (AuxLogits) {
      if (num_classes > 0) {
        AuxLogits->fc = AuxLogits->replace_module("fc", torch::nn::Linear(768, num_classes));
      } else {
        unregister_module("AuxLogits");
        AuxLogits = InceptionAux(nullptr);
      }
    }
    if (num_classes > 0) fc = register_module("fc", torch::nn::Linear(2048, num_classes));
  }

  InceptionV3Options options;
  BasicConv2d Conv2d_1a_3x3{nullptr}, Conv2d_2a_3x3{nullptr}, Conv2d_2b_3x3{nullptr}, Conv2d_3b_1x1{nullptr},
      Conv2d_4a_3x3{nullptr};
  InceptionA Mixed_5b{nullptr}, Mixed_5c{nullptr}, Mixed_5d{nullptr};
  InceptionB Mixed_6a{nullptr};
  InceptionC Mixed_6b{nullptr}, Mixed_6c{nullptr}, Mixed_6d{nullptr}, Mixed_6e{nullptr};
  InceptionAux AuxLogits{nullptr};
  InceptionD Mixed_7a{nullptr};
  InceptionE Mixed_7b{nullptr}, Mixed_7c{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  torch::Tensor transform(const torch::Tensor& x) const {
    if (!options.transform_input()) return x;
    auto c0 = x.select(1, 0).unsqueeze(1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5;
    auto c1 = x.select(1, 1).unsqueeze(1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5;
    auto c2 = x.select(1, 2).unsqueeze(1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5;
    return torch::cat({c0, c1, c2}, 1);
  }

  // The convolutional body up to Mixed_7c (with the stage attention); optional taps and aux logits.
  torch::Tensor body(torch::Tensor x, std::vector<torch::Tensor>* taps, torch::Tensor* aux) {
    check_input(x);
    auto tap = [&](const torch::Tensor& t) {
      if (taps) taps->push_back(t);
    };
    x = core::call(Conv2d_2b_3x3, core::call(Conv2d_2a_3x3, core::call(Conv2d_1a_3x3, transform(x))));
    tap(x);
    x = stem_attention(torch::max_pool2d(x, 3, 2));
    x = core::call(Conv2d_4a_3x3, core::call(Conv2d_3b_1x1, x));
    tap(x);
    x = core::call(Mixed_5d, core::call(Mixed_5c, core::call(Mixed_5b, torch::max_pool2d(x, 3, 2))));
    tap(x);
    x = core::call(Mixed_6e, core::call(Mixed_6d, core::call(Mixed_6c, core::call(Mixed_6b, core::call(Mixed_6a, x)))));
    tap(x);
    if (aux) *aux = core::call(AuxLogits, x);
    return last_attention(core::call(Mixed_7c, core::call(Mixed_7b, core::call(Mixed_7a, x))));
  }
};
TORCH_MODULE(InceptionV3);

inline InceptionV3 inception_v3(InceptionV3Options o = {}) { return InceptionV3(std::move(o)); }

}  // namespace osteonet::backbones
