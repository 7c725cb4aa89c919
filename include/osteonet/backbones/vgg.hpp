// VGG-16/19 with and without BatchNorm (Simonyan & Zisserman, ICLR 2015), torchvision's layout, with
// DSNet's attention placement (seed 000, Table 2: "VGG16 + DS").
//
// DS placement in VGG (the paper does not draw it): as in DSNet's ResNet-50 (Fig. 3), one module
// after the stem stage — here VGG's first block (two 3×3 convolutions and the max-pool, stride 2,
// 64 channels), `attn_stem` — and one after the last convolution block's activation, before its
// max-pool (stride 16, 512 channels; the map a Faster R-CNN takes), `attn_last`. Both sit outside
// `features`, so torchvision's indices and weights stay valid.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::backbones {

/// Options for VGG.
///
/// Example:
/// ```
/// auto net = vgg16(VGGOptions().num_classes(3).attention(attention::attention_options("ds")));
/// ```
struct VGGOptions {
  /// Channels per 3×3 convolution, 0 for a max-pool (torchvision's cfgs "D" and "E").
  TORCH_ARG(std::vector<int64_t>, config) = std::vector<int64_t>{64, 64, 0, 128, 128, 0, 256, 256, 256, 0,
                                                                 512, 512, 512, 0, 512, 512, 512, 0};
  /// BatchNorm after each convolution (vgg16_bn, vgg19_bn).
  TORCH_ARG(bool, batch_norm) = false;
  /// Dropout of the classifier.
  TORCH_ARG(double, dropout) = 0.5;
  OSTEONET_BACKBONE_ARGS
};

/// Module names as torchvision: features.<i>, avgpool, classifier.<i>. Feature maps: the output of
/// each block before its max-pool ("features.<i>", strides 1, 2, 4, 8, 16).
class VGGImpl : public Backbone<VGGImpl> {
 public:
  explicit VGGImpl(VGGOptions options, std::string name = "vgg") : options(std::move(options)) {
    model_name_ = std::move(name);
    reset();
  }

  void reset() override {
    init_common(options);
    features = register_module("features", torch::nn::Sequential());
    pool_index_.clear();
    feature_info_.clear();
    int64_t c = in_chans_, stride = 1;
    for (int64_t v : options.config()) {
      if (v == 0) {
        feature_info_.push_back({"features." + std::to_string(features->size() - 1), c, stride});
        pool_index_.push_back(static_cast<int64_t>(features->size()));
        features->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
        stride *= 2;
      } else {
        features->push_back(detail::conv2d(c, v, 3, 1, 1, 1, 1, /*bias=*/true));
        if (options.batch_norm()) features->push_back(detail::batch_norm(v));
        features->push_back(torch::nn::ReLU(true));
        c = v;
      }
    }
    OSTEONET_CHECK(pool_index_.size() >= 2, model_name_, ": config needs at least 2 max-pools, got ",
                   pool_index_.size());
    probe_ = features[0]->as<torch::nn::Conv2d>()->weight;
    set_stem_path("features.0");
    register_stage_attention(options.attention(), feature_info_[0].channels, c);
    avgpool = register_module("avgpool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(7)));
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

  std::string head_path() const override { return classifier ? "classifier.6" : ""; }

  /// With stage attention, `features` does not run as one call (the attention sits between its
  /// children), so Python cannot hook or replace it as a whole.
  std::vector<std::string> opaque_children() const override {
    if (attn_stem_ || attn_last_) return {"features"};
    return {};
  }
  /// forward_intermediates (and the stage attention) walk `features` child by child.
  std::vector<std::string> walked_children() const override { return {"features"}; }

  VGGOptions options;
  torch::nn::Sequential features{nullptr}, classifier{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};

 private:
  torch::nn::Sequential make_classifier(int64_t num_classes) const {
    const int64_t c = feature_info_.back().channels;
    return torch::nn::Sequential(torch::nn::Linear(c * 7 * 7, 4096), torch::nn::ReLU(true),
                                 torch::nn::Dropout(options.dropout()), torch::nn::Linear(4096, 4096),
                                 torch::nn::ReLU(true), torch::nn::Dropout(options.dropout()),
                                 torch::nn::Linear(4096, num_classes));
  }

  // Runs `features` (as one call when nothing sits between its children), applying the stage
  // attention and collecting the pre-pool taps when asked.
  torch::Tensor run_features(torch::Tensor x, std::vector<torch::Tensor>* taps) {
    if (!taps && !attn_stem_ && !attn_last_) return core::call(features, x);
    const int64_t first_pool = pool_index_.front(), last_pool = pool_index_.back();
    size_t next_pool = 0;
    int64_t i = 0;
    for (auto& m : *features) {
      if (next_pool < pool_index_.size() && i == pool_index_[next_pool]) {
        if (i == last_pool) x = last_attention(x);
        if (taps) taps->push_back(x);
        ++next_pool;
        if (taps && next_pool == pool_index_.size()) return x;  // the stride-32 map is not a tap
      }
      x = core::call(m, x);
      if (i == first_pool) x = stem_attention(x);
      ++i;
    }
    return x;
  }

  std::vector<int64_t> pool_index_;
};
TORCH_MODULE(VGG);

namespace detail_vgg {
inline std::vector<int64_t> cfg_e() {
  return {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0};
}
}  // namespace detail_vgg

inline VGG vgg16(VGGOptions o = {}) { return VGG(o.batch_norm(false), "vgg16"); }
inline VGG vgg16_bn(VGGOptions o = {}) { return VGG(o.batch_norm(true), "vgg16_bn"); }
inline VGG vgg19(VGGOptions o = {}) { return VGG(o.config(detail_vgg::cfg_e()).batch_norm(false), "vgg19"); }
inline VGG vgg19_bn(VGGOptions o = {}) { return VGG(o.config(detail_vgg::cfg_e()).batch_norm(true), "vgg19_bn"); }

}  // namespace osteonet::backbones
