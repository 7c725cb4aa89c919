// `dxa_cnn21`: the 21-layer plain CNN of seed 001 (Naeem et al., "Transferable CNN-based data mining
// approaches for medical imaging: application to spine DXA scans for osteoporosis detection").
//
// The paper reports "a 21-layer CNN" but does not list its layers. osteonet's design, counted as
// layer-array frameworks (e.g. MATLAB's Deep Learning Toolbox) count, input and output layers included:
//   1 image input
//   2-4   conv 3×3 (32) · BN · ReLU        5  max-pool 2×2
//   6-8   conv 3×3 (64) · BN · ReLU        9  max-pool 2×2
//   10-12 conv 3×3 (128) · BN · ReLU       13 max-pool 2×2
//   14-16 conv 3×3 (256) · BN · ReLU
//   17 global average pool   18 dropout (0.5)   19 fully connected   20 softmax   21 classification
// Layers 1, 20 and 21 are the input normalisation, the softmax and the loss, which live outside the
// module in PyTorch (the softmax is in the loss). Plain (no residuals), small and
// resolution-agnostic (0.39 M parameters with a 2-class head), in the spirit of a network trained from
// scratch on 174 DXA images.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::backbones {

/// Options for DxaCnn.
///
/// Example:
/// ```
/// auto net = dxa_cnn21(DxaCnnOptions().num_classes(2).in_chans(1));
/// ```
struct DxaCnnOptions {
  /// Channels of the four convolution blocks.
  TORCH_ARG(std::vector<int64_t>, widths) = std::vector<int64_t>{32, 64, 128, 256};
  TORCH_ARG(double, dropout) = 0.5;
  OSTEONET_BACKBONE_ARGS
};

/// `features` = [conv, bn, relu, pool] × 3 + [conv, bn, relu]; `classifier` = [dropout, linear].
/// Feature maps: each block's ReLU output ("features.<i>", strides 1, 2, 4, 8).
class DxaCnnImpl : public Backbone<DxaCnnImpl> {
 public:
  explicit DxaCnnImpl(DxaCnnOptions options, std::string name = "dxa_cnn21") : options(std::move(options)) {
    model_name_ = std::move(name);
    min_input_size_ = 8;
    reset();
  }

  void reset() override {
    init_common(options);
    const auto& w = options.widths();
    OSTEONET_CHECK(!w.empty(), model_name_, ": widths must not be empty");
    features = register_module("features", torch::nn::Sequential());
    feature_info_.clear();
    tap_index_.clear();
    int64_t c = in_chans_, stride = 1;
    for (size_t i = 0; i < w.size(); ++i) {
      if (i > 0) {
        features->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
        stride *= 2;
      }
      features->push_back(detail::conv2d(c, w[i], 3));
      features->push_back(detail::batch_norm(w[i]));
      features->push_back(torch::nn::ReLU(true));
      c = w[i];
      tap_index_.push_back(static_cast<int64_t>(features->size()) - 1);
      feature_info_.push_back({"features." + std::to_string(tap_index_.back()), c, stride});
    }
    probe_ = features[0]->as<torch::nn::Conv2d>()->weight;
    set_stem_path("features.0");
    register_stage_attention(options.attention(), w.front(), c);
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
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return pre_logits || !classifier ? x : core::call(classifier, x);
  }

  std::vector<torch::Tensor> forward_intermediates(torch::Tensor x) override {
    check_input(x);
    std::vector<torch::Tensor> taps;
    run_features(x, &taps);
    return taps;
  }

  void reset_classifier(int64_t num_classes) override {  // N(0, 0.01), as at construction
    replace_head(classifier, "classifier", num_classes, [this](int64_t n) { return make_classifier(n); }, 0.01);
  }

  std::string head_path() const override { return classifier ? "classifier.1" : ""; }

  /// With stage attention, `features` does not run as one call (see VGGImpl::opaque_children).
  std::vector<std::string> opaque_children() const override {
    if (attn_stem_ || attn_last_) return {"features"};
    return {};
  }
  std::vector<std::string> walked_children() const override { return {"features"}; }

  DxaCnnOptions options;
  torch::nn::Sequential features{nullptr}, classifier{nullptr};

 private:
  torch::nn::Sequential make_classifier(int64_t num_classes) const {
    return torch::nn::Sequential(torch::nn::Dropout(options.dropout()),
                                 torch::nn::Linear(feature_info_.back().channels, num_classes));
  }

  torch::Tensor run_features(torch::Tensor x, std::vector<torch::Tensor>* taps) {
    if (!taps && !attn_stem_ && !attn_last_) return core::call(features, x);
    size_t next_tap = 0;
    int64_t i = 0;
    for (auto& m : *features) {
      x = core::call(m, x);
      if (next_tap < tap_index_.size() && i == tap_index_[next_tap]) {
        if (next_tap == 0) x = stem_attention(x);
        if (next_tap + 1 == tap_index_.size()) x = last_attention(x);
        if (taps) taps->push_back(x);
        ++next_tap;
      }
      ++i;
    }
    return x;
  }

  std::vector<int64_t> tap_index_;
};
TORCH_MODULE(DxaCnn);

inline DxaCnn dxa_cnn21(DxaCnnOptions o = {}) { return DxaCnn(std::move(o)); }

}  // namespace osteonet::backbones
