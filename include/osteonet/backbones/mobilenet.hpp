// MobileNetV2 (Sandler et al., CVPR 2018) and MobileNetV3-Large (Howard et al., ICCV 2019),
// torchvision's layouts, with DSNet's attention placement (seed 000, Table 2: "MobileNet + DS").
//
// DS placement in MobileNet (not drawn in the paper): as in DSNet's ResNet-50 (Fig. 3), after the
// stem stage — features.0 and the first inverted residual, features.1 (stride 2, 16 channels),
// `attn_stem` — and after the last feature layer (1280 channels for V2, 960 for V3), `attn_last`.
#pragma once

#include <torch/torch.h>

#include <array>
#include <string>
#include <vector>

#include "osteonet/attention/squeeze_excite.hpp"
#include "osteonet/backbones/backbone.hpp"
#include "osteonet/detail/activations.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::backbones {

/// MobileNetV2's inverted residual: `conv` = [expand 1×1] + depthwise 3×3 + linear 1×1 + BN.
class InvertedResidualV2Impl : public torch::nn::Cloneable<InvertedResidualV2Impl>,
                               public core::TensorInvocable<InvertedResidualV2Impl> {
 public:
  InvertedResidualV2Impl(int64_t inp, int64_t oup, int64_t stride, int64_t expand_ratio)
      : inp_(inp), oup_(oup), stride_(stride), expand_(expand_ratio) {
    reset();
  }
  void reset() override {
    const int64_t hidden = inp_ * expand_;
    use_res_ = stride_ == 1 && inp_ == oup_;
    conv = detail::Seq();
    if (expand_ != 1) conv->push_back(detail::conv_norm_act(inp_, hidden, 1, 1, 1, "relu6"));
    conv->push_back(detail::conv_norm_act(hidden, hidden, 3, stride_, hidden, "relu6"));
    conv->push_back(detail::conv2d(hidden, oup_, 1, 1, 0));
    conv->push_back(detail::batch_norm(oup_));
    register_module("conv", conv);
  }
  torch::Tensor forward(const torch::Tensor& x) { return use_res_ ? x + core::call(conv, x) : core::call(conv, x); }

  detail::Seq conv{nullptr};

 private:
  int64_t inp_, oup_, stride_, expand_;
  bool use_res_ = false;
};
TORCH_MODULE(InvertedResidualV2);

/// MobileNetV3's inverted residual: `block` = [expand] + depthwise + [SE] + project.
struct MobileNetV3BlockConfig {
  int64_t in, kernel, expanded, out;
  bool use_se;
  bool hardswish;
  int64_t stride;
};

class InvertedResidualV3Impl : public torch::nn::Cloneable<InvertedResidualV3Impl>,
                               public core::TensorInvocable<InvertedResidualV3Impl> {
 public:
  explicit InvertedResidualV3Impl(MobileNetV3BlockConfig cfg) : cfg_(cfg) { reset(); }
  void reset() override {
    const std::string act = cfg_.hardswish ? "hardswish" : "relu";
    constexpr double eps = 1e-3, momentum = 0.01;
    use_res_ = cfg_.stride == 1 && cfg_.in == cfg_.out;
    block = detail::Seq();
    if (cfg_.expanded != cfg_.in)
      block->push_back(detail::conv_norm_act(cfg_.in, cfg_.expanded, 1, 1, 1, act, eps, momentum));
    block->push_back(
        detail::conv_norm_act(cfg_.expanded, cfg_.expanded, cfg_.kernel, cfg_.stride, cfg_.expanded, act, eps, momentum));
    if (cfg_.use_se) {
      block->push_back(attention::SqueezeExcite(attention::SqueezeExciteOptions(cfg_.expanded)
                                                    .hidden_channels(detail::make_divisible(cfg_.expanded / 4, 8))
                                                    .gate("hardsigmoid")));
    }
    block->push_back(detail::conv_norm_act(cfg_.expanded, cfg_.out, 1, 1, 1, "", eps, momentum));
    register_module("block", block);
  }
  torch::Tensor forward(const torch::Tensor& x) { return use_res_ ? x + core::call(block, x) : core::call(block, x); }

  detail::Seq block{nullptr};

 private:
  MobileNetV3BlockConfig cfg_;
  bool use_res_ = false;
};
TORCH_MODULE(InvertedResidualV3);

/// Options for MobileNetV2 and MobileNetV3-Large.
///
/// Example:
/// ```
/// auto net = mobilenet_v2(MobileNetOptions().num_classes(3).attention(attention::attention_options("ds")));
/// ```
struct MobileNetOptions {
  /// Width multiplier (V2 only; torchvision's width_mult).
  TORCH_ARG(double, width_mult) = 1.0;
  /// Dropout before the last linear layer.
  TORCH_ARG(double, dropout) = 0.2;
  OSTEONET_BACKBONE_ARGS
};

/// Shared body: `features` (Sequential), `classifier`; feature taps at the given feature indices.
class MobileNetImpl : public Backbone<MobileNetImpl> {
 public:
  enum class Version { kV2, kV3Large };

  MobileNetImpl(MobileNetOptions options, Version version, std::string name)
      : options(std::move(options)), version_(version) {
    model_name_ = std::move(name);
    reset();
  }

  void reset() override {
    init_common(options);
    features = register_module("features", torch::nn::Sequential());
    int64_t last = 0;
    if (version_ == Version::kV2) {
      last = build_v2();
    } else {
      last = build_v3_large();
    }
    probe_ = features[0]->as<detail::Seq>()->ptr(0)->as<torch::nn::Conv2d>()->weight;
    set_stem_path("features.0.0");
    last_channels_ = last;
    register_stage_attention(options.attention(), feature_info_.front().channels, feature_info_.back().channels);
    avgpool = register_module("avgpool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
    classifier = torch::nn::Sequential(nullptr);
    if (num_classes_ > 0) classifier = register_module("classifier", make_classifier(num_classes_));
    detail::init_kaiming_fan_out(*this, /*linear_std=*/0.01);
    finish_init();
  }

  torch::Tensor forward_features(torch::Tensor x) override {
    check_input(x);
    return run_features(x, nullptr);
  }

  torch::Tensor forward_head(torch::Tensor x, bool pre_logits = false) override {
    x = core::call(avgpool, x).flatten(1);
    return pre_logits || !classifier ? x : core::call(classifier, x);
  }

  std::vector<torch::Tensor> forward_intermediates(torch::Tensor x) override {
    check_input(x);
    std::vector<torch::Tensor> taps;
    run_features(x, &taps);
    return taps;
  }

  void reset_classifier(int64_t num_classes) override {  // torchvision's N(0, 0.01) linears, as at construction
    replace_head(classifier, "classifier", num_classes, [this](int64_t n) { return make_classifier(n); }, 0.01);
  }

  std::string head_path() const override {
    if (!classifier) return "";
    return version_ == Version::kV2 ? "classifier.1" : "classifier.3";
  }

  /// With stage attention, `features` does not run as one call (see VGGImpl::opaque_children).
  std::vector<std::string> opaque_children() const override {
    if (attn_stem_ || attn_last_) return {"features"};
    return {};
  }
  std::vector<std::string> walked_children() const override { return {"features"}; }

  MobileNetOptions options;
  torch::nn::Sequential features{nullptr}, classifier{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};

 private:
  torch::nn::Sequential make_classifier(int64_t num_classes) const {
    if (version_ == Version::kV2)
      return torch::nn::Sequential(torch::nn::Dropout(options.dropout()), torch::nn::Linear(last_channels_, num_classes));
    return torch::nn::Sequential(torch::nn::Linear(last_channels_, 1280), detail::Hardswish(),
                                 torch::nn::Dropout(options.dropout()), torch::nn::Linear(1280, num_classes));
  }

  torch::Tensor run_features(torch::Tensor x, std::vector<torch::Tensor>* taps) {
    if (!taps && !attn_stem_ && !attn_last_) return core::call(features, x);
    const int64_t last = static_cast<int64_t>(features->size()) - 1;
    size_t next_tap = 0;
    int64_t i = 0;
    for (auto& m : *features) {
      x = core::call(m, x);
      if (i == tap_index_.front()) x = stem_attention(x);
      if (i == last) x = last_attention(x);
      if (next_tap < tap_index_.size() && i == tap_index_[next_tap]) {
        if (taps) taps->push_back(x);
        ++next_tap;
      }
      ++i;
    }
    return x;
  }

  void add_tap(int64_t channels, int64_t stride) {
    const auto idx = static_cast<int64_t>(features->size()) - 1;
    tap_index_.push_back(idx);
    feature_info_.push_back({"features." + std::to_string(idx), channels, stride});
  }

  int64_t build_v2() {
    tap_index_.clear();
    feature_info_.clear();
    const double w = options.width_mult();
    OSTEONET_CHECK(w > 0, model_name_, ": width_mult must be positive, got width_mult=", w);
    int64_t input = detail::make_divisible(32 * w, 8);
    const int64_t last = detail::make_divisible(1280 * std::max(1.0, w), 8);
    features->push_back(detail::conv_norm_act(in_chans_, input, 3, 2, 1, "relu6"));
    // t, c, n, s
    const std::array<std::array<int64_t, 4>, 7> settings{{{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2},
                                                          {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2},
                                                          {6, 320, 1, 1}}};
    int64_t stride = 2;
    for (size_t g = 0; g < settings.size(); ++g) {
      const auto& [t, c, n, s] = settings[g];
      const int64_t out = detail::make_divisible(c * w, 8);
      // A tap closes every stage after which the stride doubles (and the first stage).
      for (int64_t b = 0; b < n; ++b) {
        features->push_back(InvertedResidualV2(input, out, b == 0 ? s : 1, t));
        input = out;
      }
      stride *= s;
      const bool next_strided = g + 1 < settings.size() && settings[g + 1][3] == 2;
      if (g == 0 || next_strided) add_tap(out, stride);
    }
    features->push_back(detail::conv_norm_act(input, last, 1, 1, 1, "relu6"));
    add_tap(last, stride);
    return last;
  }

  int64_t build_v3_large() {
    tap_index_.clear();
    feature_info_.clear();
    constexpr double eps = 1e-3, momentum = 0.01;
    features->push_back(detail::conv_norm_act(in_chans_, 16, 3, 2, 1, "hardswish", eps, momentum));
    const std::vector<MobileNetV3BlockConfig> cfg{
        {16, 3, 16, 16, false, false, 1},    {16, 3, 64, 24, false, false, 2},   {24, 3, 72, 24, false, false, 1},
        {24, 5, 72, 40, true, false, 2},     {40, 5, 120, 40, true, false, 1},   {40, 5, 120, 40, true, false, 1},
        {40, 3, 240, 80, false, true, 2},    {80, 3, 200, 80, false, true, 1},   {80, 3, 184, 80, false, true, 1},
        {80, 3, 184, 80, false, true, 1},    {80, 3, 480, 112, true, true, 1},   {112, 3, 672, 112, true, true, 1},
        {112, 5, 672, 160, true, true, 2},   {160, 5, 960, 160, true, true, 1},  {160, 5, 960, 160, true, true, 1}};
    int64_t stride = 2;
    for (size_t b = 0; b < cfg.size(); ++b) {
      features->push_back(InvertedResidualV3(cfg[b]));
      stride *= cfg[b].stride;
      const bool next_strided = b + 1 < cfg.size() && cfg[b + 1].stride == 2;
      if (b == 0 || next_strided) add_tap(cfg[b].out, stride);
    }
    features->push_back(detail::conv_norm_act(160, 960, 1, 1, 1, "hardswish", eps, momentum));
    add_tap(960, stride);
    return 960;
  }

  Version version_;
  std::vector<int64_t> tap_index_;
  int64_t last_channels_ = 0;
};
TORCH_MODULE(MobileNet);

inline MobileNet mobilenet_v2(MobileNetOptions o = {}) {
  return MobileNet(std::move(o), MobileNetImpl::Version::kV2, "mobilenet_v2");
}
inline MobileNet mobilenet_v3_large(MobileNetOptions o = {}) {
  return MobileNet(std::move(o), MobileNetImpl::Version::kV3Large, "mobilenet_v3_large");
}

}  // namespace osteonet::backbones
