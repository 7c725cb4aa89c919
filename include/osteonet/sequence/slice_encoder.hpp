// The slice encoder of seed 002 (CNN/LSTM detection of osteoporotic vertebral fractures, §2.1):
// `ovf_resnet34`, a ResNet-34 whose classifier becomes 512 -> 32 -> 1 (sigmoid output, BCE loss).
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/backbones/registry.hpp"
#include "osteonet/backbones/resnet.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/core/model_registry.hpp"

namespace osteonet::sequence {

/// Options for OvfResNet34.
///
/// Example:
/// ```
/// auto enc = OvfResNet34(OvfResNet34Options().num_classes(1));
/// auto logits = enc->forward(torch::randn({8, 3, 224, 224}));   // 8 x 1
/// auto feats = enc->features(torch::randn({8, 3, 224, 224}));   // 8 x 32 (the aggregator's input)
/// ```
struct OvfResNet34Options {
  /// Outputs of the last FC layer: 1 in the paper (a logit; sigmoid gives the slice probability).
  /// 0 drops `fc2` and makes forward() return the 32-d embedding (the registry's "headless" rule).
  TORCH_ARG(int64_t, num_classes) = 1;
  TORCH_ARG(int64_t, in_chans) = 3;
  /// Attention inside the ResNet-34 blocks (none in the paper).
  TORCH_ARG(::osteonet::attention::AttentionOptions, attention) = ::osteonet::attention::NoAttentionOptions{};
  /// Width of the embedding between the two FC layers (32 in the paper).
  TORCH_ARG(int64_t, embed_dim) = 32;
};

/// ResNet-34 (torchvision layout, `backbone.*`) + head `fc1` (Linear 512 -> 32), `bn1` (BatchNorm1d),
/// ReLU, `fc2` (Linear 32 -> 1).
///
/// The paper says "BatchNorm and ReLU after the two FC layers". Read literally, a ReLU after the
/// last FC layer would clamp the logit at 0 (every slice probability >= 0.5) and a BatchNorm on it
/// would only rescale the logit, so osteonet puts BatchNorm + ReLU after `fc1` only: the
/// 32-d feature vector ("the output of the penultimate FC layer", §3.3.1) is relu(bn1(fc1(pooled))),
/// and `fc2` maps it to the logit.
///
/// Methods: backbone_features (N x 512 pooled), embed (512 -> 32), features (image -> 32),
/// head (32 -> logit), forward (image -> logit). `set_batchnorm_frozen(true)` keeps every BatchNorm
/// in eval mode through later train() calls and stops their parameters' gradients (§3.3.1: BN is
/// frozen after the encoder's training).
class OvfResNet34Impl : public backbones::Backbone<OvfResNet34Impl> {
 public:
  explicit OvfResNet34Impl(OvfResNet34Options options = {}) : options(std::move(options)) { reset(); }

  void reset() override {
    model_name_ = "ovf_resnet34";
    init_common(options);
    OSTEONET_CHECK(options.embed_dim() > 0, model_name_, ": embed_dim must be positive, got embed_dim=",
                   options.embed_dim());
    backbone = register_module("backbone", backbones::resnet34(backbones::ResNetOptions()
                                                                   .num_classes(0)
                                                                   .in_chans(options.in_chans())
                                                                   .attention(options.attention())));
    fc1 = register_module("fc1", torch::nn::Linear(512, options.embed_dim()));
    bn1 = register_module("bn1", torch::nn::BatchNorm1d(options.embed_dim()));
    fc2 = torch::nn::Linear(nullptr);
    if (options.num_classes() > 0) fc2 = register_module("fc2", torch::nn::Linear(options.embed_dim(), options.num_classes()));
    feature_info_ = backbone->feature_info();
    min_input_size_ = backbone->min_input_size();
    probe_ = backbone->conv1->weight;
    set_stem_path("backbone.conv1");
    if (bn_frozen_) apply_batchnorm_freeze();
  }

  /// Logits N x num_classes (N x 1 in the paper), or the N x embed_dim embedding when num_classes == 0.
  torch::Tensor forward(torch::Tensor x) override {
    auto f = features(std::move(x));
    return fc2 ? core::call(fc2, f) : f;
  }

  /// The backbone's layer4 map (N x 512 x h x w).
  torch::Tensor forward_features(torch::Tensor x) override {
    check_input(x);
    return backbone->forward_features(std::move(x));
  }

  /// Pooling, the embedding and fc2 (`pre_logits`: the embedding).
  torch::Tensor forward_head(torch::Tensor x, bool pre_logits = false) override {
    auto f = embed(backbone->forward_head(std::move(x)));
    return pre_logits || !fc2 ? f : core::call(fc2, f);
  }

  /// The backbone's maps (relu, layer1..layer4), as resnet34's.
  std::vector<torch::Tensor> forward_intermediates(torch::Tensor x) override {
    check_input(x);
    return backbone->forward_intermediates(std::move(x));
  }

  std::string head_path() const override { return fc2 ? "fc2" : ""; }

  /// A new fc2 with `num_classes` outputs (0: forward returns the embedding).
  void reset_classifier(int64_t num_classes) override {
    options.num_classes(num_classes);
    const int64_t d = options.embed_dim();
    replace_head(fc2, "fc2", num_classes, [d](int64_t n) { return torch::nn::Linear(d, n); }, 0.0);
  }

  /// Global-average-pooled layer4 features, N x 512.
  torch::Tensor backbone_features(torch::Tensor x) {
    check_input(x);
    return core::call(backbone, x);
  }

  /// relu(bn1(fc1(pooled))): the 32-d slice embedding from pooled backbone features (N x 512).
  torch::Tensor embed(const torch::Tensor& pooled) {
    OSTEONET_CHECK(pooled.dim() == 2 && pooled.size(1) == 512, model_name_,
                   ".embed: expected N x 512 pooled features, got shape ", pooled.sizes());
    return torch::relu(core::call(bn1, core::call(fc1, pooled)));
  }

  /// The 32-d embedding of images (N x C x H x W): the aggregator's input.
  torch::Tensor features(torch::Tensor x) { return embed(backbone_features(std::move(x))); }

  /// Logits from embeddings (N x embed_dim -> N x num_classes).
  torch::Tensor head(const torch::Tensor& embedding) {
    OSTEONET_CHECK(fc2, model_name_, ".head: the model has no output layer, got num_classes=0");
    return core::call(fc2, embedding);
  }

  /// Freezes (or releases) every BatchNorm: eval mode kept through train(), no gradients.
  void set_batchnorm_frozen(bool frozen) {
    bn_frozen_ = frozen;
    for (auto& m : modules(/*include_self=*/false)) {
      if (m->as<torch::nn::BatchNorm2dImpl>() || m->as<torch::nn::BatchNorm1dImpl>()) {
        for (auto& p : m->parameters(false)) p.set_requires_grad(!frozen);
      }
    }
    if (frozen) apply_batchnorm_freeze();
    else train(is_training());
  }
  bool batchnorm_frozen() const { return bn_frozen_; }

  void train(bool on = true) override {
    torch::nn::Module::train(on);
    if (bn_frozen_) apply_batchnorm_freeze();
  }

  OvfResNet34Options options;
  backbones::ResNetBasic backbone{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn1{nullptr};

 private:
  void apply_batchnorm_freeze() {
    for (auto& m : modules(/*include_self=*/false))
      if (m->as<torch::nn::BatchNorm2dImpl>() || m->as<torch::nn::BatchNorm1dImpl>()) m->train(false);
  }
  bool bn_frozen_ = false;
};
TORCH_MODULE(OvfResNet34);

namespace detail_registry {
inline const bool registered_encoder = core::models().enroll(
    {"ovf_resnet34", "backbone",
     "Seed 002's slice encoder: ResNet-34 + FC 512->32 (BN, ReLU) + FC 32->1 (sequence/slice_encoder.hpp)", "",
     [](const OptionMap& o) -> std::shared_ptr<torch::nn::Module> {
       OvfResNet34Options d;
       auto attn_default = attention::attention_name(d.attention());
       return OvfResNet34(d.num_classes(o.get_int("num_classes", d.num_classes()))
                              .in_chans(o.get_int("in_chans", d.in_chans()))
                              .attention(attention::attention_options(o.get_string("attention", attn_default), o))
                              .embed_dim(o.get_int("embed_dim", d.embed_dim())))
           .ptr();
     }});
}  // namespace detail_registry

}  // namespace osteonet::sequence
