// DenseNet-121 (Huang et al., CVPR 2017), torchvision's layout; the classifier of seeds 003 (BMD
// regression) and 004 (hip T-score classes). DSNet-style attention placement: after pool0 (stride 4,
// 64 channels, `attn_stem`) and after the final norm + ReLU (1024 channels, `attn_last`).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::backbones {

/// BN-ReLU-1×1 (bn_size · growth) then BN-ReLU-3×3 (growth): norm1 relu1 conv1 norm2 relu2 conv2.
class DenseLayerImpl : public torch::nn::Cloneable<DenseLayerImpl>, public core::TensorInvocable<DenseLayerImpl> {
 public:
  DenseLayerImpl(int64_t in, int64_t growth, int64_t bn_size, double drop_rate)
      : in_(in), growth_(growth), bn_size_(bn_size), drop_rate_(drop_rate) {
    reset();
  }
  void reset() override {
    norm1 = register_module("norm1", detail::batch_norm(in_));
    relu1 = register_module("relu1", torch::nn::ReLU(true));
    conv1 = register_module("conv1", detail::conv2d(in_, bn_size_ * growth_, 1, 1, 0));
    norm2 = register_module("norm2", detail::batch_norm(bn_size_ * growth_));
    relu2 = register_module("relu2", torch::nn::ReLU(true));
    conv2 = register_module("conv2", detail::conv2d(bn_size_ * growth_, growth_, 3));
  }
  torch::Tensor forward(const torch::Tensor& concatenated) {
    using core::call;
    auto y = call(conv2, call(relu2, call(norm2, call(conv1, call(relu1, call(norm1, concatenated))))));
    if (drop_rate_ > 0) y = torch::dropout(y, drop_rate_, is_training());
    return y;
  }
  torch::nn::BatchNorm2d norm1{nullptr}, norm2{nullptr};
  torch::nn::ReLU relu1{nullptr}, relu2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};

 private:
  int64_t in_, growth_, bn_size_;
  double drop_rate_;
};
TORCH_MODULE(DenseLayer);

/// denselayer1..N, each fed the concatenation of the block input and all earlier outputs.
class DenseBlockImpl : public torch::nn::Cloneable<DenseBlockImpl>, public core::TensorInvocable<DenseBlockImpl> {
 public:
  DenseBlockImpl(int64_t num_layers, int64_t in, int64_t growth, int64_t bn_size, double drop_rate)
      : n_(num_layers), in_(in), growth_(growth), bn_size_(bn_size), drop_rate_(drop_rate) {
    reset();
  }
  void reset() override {
    layers.clear();
    for (int64_t i = 0; i < n_; ++i)
      layers.push_back(register_module("denselayer" + std::to_string(i + 1),
                                       DenseLayer(in_ + i * growth_, growth_, bn_size_, drop_rate_)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    std::vector<torch::Tensor> feats{x};
    feats.reserve(layers.size() + 1);
    for (auto& l : layers) feats.push_back(core::call(l, torch::cat(feats, 1)));
    return torch::cat(feats, 1);
  }
  std::vector<DenseLayer> layers;

 private:
  int64_t n_, in_, growth_, bn_size_;
  double drop_rate_;
};
TORCH_MODULE(DenseBlock);

/// Options for DenseNet.
///
/// Example:
/// ```
/// auto net = densenet121(DenseNetOptions().num_classes(1).in_chans(1));  // BMD regression head
/// ```
struct DenseNetOptions {
  TORCH_ARG(int64_t, growth_rate) = 32;
  TORCH_ARG(std::vector<int64_t>, block_config) = std::vector<int64_t>{6, 12, 24, 16};
  TORCH_ARG(int64_t, num_init_features) = 64;
  TORCH_ARG(int64_t, bn_size) = 4;
  TORCH_ARG(double, drop_rate) = 0.0;
  OSTEONET_BACKBONE_ARGS
};

/// Module names as torchvision: features.{conv0,norm0,relu0,pool0,denseblockK,transitionK,norm5},
/// classifier. Feature maps: relu0 (stride 2), denseblock1..3 (4, 8, 16), final ReLU(norm5) (32).
class DenseNetImpl : public Backbone<DenseNetImpl> {
 public:
  explicit DenseNetImpl(DenseNetOptions options, std::string name = "densenet") : options(std::move(options)) {
    model_name_ = std::move(name);
    reset();
  }

  void reset() override {
    init_common(options);
    const int64_t init = options.num_init_features();
    features = register_module("features", torch::nn::Sequential());
    features->push_back("conv0", detail::conv2d(in_chans_, init, 7, 2, 3));
    features->push_back("norm0", detail::batch_norm(init));
    features->push_back("relu0", torch::nn::ReLU(true));
    features->push_back("pool0", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
    feature_info_ = {{"relu0", init, 2}};
    tap_index_ = {2};
    int64_t c = init, stride = 4;
    const auto& blocks = options.block_config();
    for (size_t i = 0; i < blocks.size(); ++i) {
      features->push_back("denseblock" + std::to_string(i + 1),
                          DenseBlock(blocks[i], c, options.growth_rate(), options.bn_size(), options.drop_rate()));
      c += blocks[i] * options.growth_rate();
      if (i + 1 < blocks.size()) {
        tap_index_.push_back(static_cast<int64_t>(features->size()) - 1);
        feature_info_.push_back({"denseblock" + std::to_string(i + 1), c, stride});
        features->push_back("transition" + std::to_string(i + 1), transition(c, c / 2));
        c /= 2;
        stride *= 2;
      }
    }
    features->push_back("norm5", detail::batch_norm(c));
    feature_info_.push_back({"norm5", c, stride});
    probe_ = features[0]->as<torch::nn::Conv2d>()->weight;
    set_stem_path("features.conv0");
    register_stage_attention(options.attention(), init, c);
    classifier = torch::nn::Linear(nullptr);
    if (num_classes_ > 0) classifier = register_module("classifier", torch::nn::Linear(c, num_classes_));
    // torchvision: Kaiming-normal (fan_in) convolutions, unit/zero norms, zero linear bias.
    torch::NoGradGuard no_grad;
    for (auto& m : modules(false)) {
      if (auto* conv = m->as<torch::nn::Conv2dImpl>()) torch::nn::init::kaiming_normal_(conv->weight);
      if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
        if (bn->weight.defined()) {
          torch::nn::init::ones_(bn->weight);
          torch::nn::init::zeros_(bn->bias);
        }
      }
    }
    if (classifier) torch::nn::init::zeros_(classifier->bias);
    finish_init();
  }

  /// ReLU(norm5) (+ attn_last): the map torchvision's forward pools.
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
    taps.push_back(run_features(x, &taps));
    return taps;
  }

  void reset_classifier(int64_t num_classes) override {  // PyTorch's init, zero bias: torchvision's construction
    const int64_t c = feature_info_.back().channels;
    replace_head(classifier, "classifier", num_classes, [c](int64_t n) { return torch::nn::Linear(c, n); }, 0.0,
                 /*zero_bias=*/true);
  }

  std::string head_path() const override { return classifier ? "classifier" : ""; }

  /// With stage attention, `features` does not run as one call (see VGGImpl::opaque_children).
  std::vector<std::string> opaque_children() const override {
    if (attn_stem_ || attn_last_) return {"features"};
    return {};
  }
  std::vector<std::string> walked_children() const override { return {"features"}; }

  DenseNetOptions options;
  torch::nn::Sequential features{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  static detail::Seq transition(int64_t in, int64_t out) {
    detail::Seq t;
    t->push_back("norm", detail::batch_norm(in));
    t->push_back("relu", torch::nn::ReLU(true));
    t->push_back("conv", detail::conv2d(in, out, 1, 1, 0));
    t->push_back("pool", torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2).stride(2)));
    return t;
  }

  // Runs `features` then the final ReLU, with the stage attention; collects the intermediate taps.
  torch::Tensor run_features(torch::Tensor x, std::vector<torch::Tensor>* taps) {
    bool python = false;
    if (!taps && !attn_stem_ && !attn_last_) {
      x = core::call(features, x, &python);
      return last_attention(python ? torch::relu(x) : x.relu_());
    }
    size_t next_tap = 0;
    int64_t i = 0;
    for (auto& m : *features) {
      x = core::call(m, x, &python);
      if (i == 3) x = stem_attention(x);  // after pool0
      if (taps && next_tap < tap_index_.size() && i == tap_index_[next_tap]) {
        taps->push_back(x);
        ++next_tap;
      }
      ++i;
    }
    // In place, as torchvision (x is norm5's output, not a tap), unless a hook may hold it.
    return last_attention(python ? torch::relu(x) : x.relu_());
  }

  std::vector<int64_t> tap_index_;
};
TORCH_MODULE(DenseNet);

inline DenseNet densenet121(DenseNetOptions o = {}) { return DenseNet(o.block_config({6, 12, 24, 16}), "densenet121"); }

}  // namespace osteonet::backbones
