// The detector's backbone: an osteonet backbone body (torchvision's `backbone.body`) and, optionally,
// an FPN (`backbone.fpn`). The body is read through the backbone contract (feature_info /
// forward_intermediates); MobileNets expose their `features` children directly under `body`, as
// torchvision's _mobilenet_extractor does, so torchvision's detection state dicts load by name.
#pragma once

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/backbones/mobilenet.hpp"
#include "osteonet/detection/fpn.hpp"

namespace osteonet::detection {

/// A MobileNet's `features` children registered as "0".."n-1" (plus its DSNet attention, if any);
/// forward returns the outputs of the requested children.
class MobileNetBodyImpl : public torch::nn::Cloneable<MobileNetBodyImpl>, public core::Invocable {
 public:
  MobileNetBodyImpl(std::shared_ptr<backbones::MobileNetImpl> net, std::vector<int64_t> return_indices)
      : net_(std::move(net)), return_(std::move(return_indices)) {
    reset();
  }
  void reset() override {
    int64_t i = 0;
    for (auto& m : *net_->features) register_module(std::to_string(i++), m.ptr());
    for (const auto& kv : net_->named_children())
      if (kv.key() == "attn_stem" || kv.key() == "attn_last") register_module(kv.key(), kv.value());
    const auto& first = net_->feature_info().front().name;  // "features.<i>": where attn_stem acts
    stem_index_ = std::stoll(first.substr(first.find('.') + 1));
  }
  /// torchvision's _mobilenet_extractor stage starts: block 0, every strided block, the last block.
  std::vector<int64_t> stage_starts() const {
    const auto& fi = net_->feature_info();
    auto idx = [](const std::string& n) { return std::stoll(n.substr(n.find('.') + 1)); };
    std::vector<int64_t> s{0};
    for (size_t k = 0; k + 1 < fi.size(); ++k)
      if (fi[k + 1].stride > fi[k].stride) s.push_back(idx(fi[k].name) + 1);
    s.push_back(num_blocks() - 1);
    return s;
  }
  int64_t num_blocks() const { return static_cast<int64_t>(net_->features->size()); }

  std::vector<torch::Tensor> forward(torch::Tensor x) {
    std::vector<torch::Tensor> out;
    const auto last = static_cast<int64_t>(net_->features->size()) - 1;
    int64_t i = 0;
    size_t next = 0;
    for (auto& m : *net_->features) {
      x = core::call(m, x);
      if (i == stem_index_) x = net_->stem_attention(x);
      if (i == last) x = net_->last_attention(x);
      if (next < return_.size() && i == return_[next]) {
        out.push_back(x);
        ++next;
      }
      ++i;
    }
    return out;
  }

 private:
  std::shared_ptr<backbones::MobileNetImpl> net_;
  std::vector<int64_t> return_;
  int64_t stem_index_ = 1;
};
TORCH_MODULE(MobileNetBody);

/// `body` (+ `fpn`): image batch -> feature maps, all with out_channels() channels when an FPN is used.
class DetectorBackboneImpl : public torch::nn::Cloneable<DetectorBackboneImpl>, public core::Invocable {
 public:
  /// Body from an osteonet backbone: the maps of forward_intermediates() at `indices`.
  DetectorBackboneImpl(std::shared_ptr<backbones::BackboneImpl> net, std::vector<int64_t> indices, bool fpn,
                       int64_t fpn_channels = 256)
      : fpn_(fpn), fpn_channels_(fpn_channels) {
    auto body = std::dynamic_pointer_cast<torch::nn::Module>(net);
    // The head's pooling never runs in a detector; torchvision's body (IntermediateLayerGetter) drops
    // it too, so the module tree holds only what runs.
    if (body->named_children().contains("avgpool")) body->unregister_module("avgpool");
    register_module("body", body);
    for (auto i : indices) channels_.push_back(net->feature_info().at(static_cast<size_t>(i)).channels);
    body_ = [net, indices](const torch::Tensor& x) {
      auto all = net->forward_intermediates(x);
      std::vector<torch::Tensor> out;
      for (auto i : indices) out.push_back(all[static_cast<size_t>(i)]);
      return out;
    };
    reset();
  }
  /// Body from a MobileNet's `features` children at `indices` (channels found by a probe forward).
  DetectorBackboneImpl(std::shared_ptr<backbones::MobileNetImpl> net, std::vector<int64_t> indices, bool fpn,
                       int64_t fpn_channels = 256)
      : fpn_(fpn), fpn_channels_(fpn_channels) {
    auto body = MobileNetBody(net, indices);
    register_module("body", body);
    {
      torch::NoGradGuard g;
      const bool was_training = net->is_training();
      net->eval();
      for (const auto& f : body->forward(torch::zeros({1, net->in_chans(), 64, 64}))) channels_.push_back(f.size(1));
      net->train(was_training);
    }
    body_ = [body](const torch::Tensor& x) mutable { return body->forward(x); };
    reset();
  }
  void reset() override {
    if (fpn_) fpn = register_module("fpn", FeaturePyramidNetwork(channels_, fpn_channels_, true));
  }

  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    auto maps = [&] {
      RECORD_USER_SCOPE("osteonet::detector.body");
      return body_(x);
    }();
    if (!fpn) return maps;
    RECORD_USER_SCOPE("osteonet::detector.fpn");
    return fpn->forward(maps);
  }
  /// The body runs through its feature maps and the FPN takes a list: not one-tensor calls.
  std::vector<std::string> opaque_children() const override { return {"body", "fpn"}; }

  /// Channels of every output map (the FPN's width, or the single body map's channels).
  int64_t out_channels() const { return fpn_ ? fpn_channels_ : channels_.back(); }
  /// Output maps per image: the FPN levels plus "pool", or the body maps.
  int64_t num_outputs() const { return fpn_ ? static_cast<int64_t>(channels_.size()) + 1 : static_cast<int64_t>(channels_.size()); }
  /// Maps produced by the body itself (torchvision's RoI pooler reads these, not "pool").
  int64_t num_body_maps() const { return static_cast<int64_t>(channels_.size()); }

  FeaturePyramidNetwork fpn{nullptr};

 private:
  bool fpn_;
  int64_t fpn_channels_;
  std::vector<int64_t> channels_;
  std::function<std::vector<torch::Tensor>(const torch::Tensor&)> body_;
};
TORCH_MODULE(DetectorBackbone);

}  // namespace osteonet::detection
