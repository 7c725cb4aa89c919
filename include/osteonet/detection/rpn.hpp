// Region proposal network (Ren et al., NeurIPS 2015), torchvision 0.14's RPNHead and
// RegionProposalNetwork: objectness + deltas per anchor, decoding, per-level top-k, clipping,
// small-box removal, score threshold, NMS per level, post-NMS top-k; losses in training.
#pragma once

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "osteonet/core/call.hpp"
#include "osteonet/detail/layers.hpp"
#include "osteonet/detection/anchors.hpp"
#include "osteonet/detection/box_ops.hpp"
#include "osteonet/detection/nms.hpp"
#include "osteonet/detection/sampling.hpp"
#include "osteonet/detection/transform.hpp"

namespace osteonet::detection {

/// 3x3 conv + ReLU (`conv.0.0`), then 1x1 objectness (`cls_logits`) and box deltas (`bbox_pred`).
class RPNHeadImpl : public torch::nn::Cloneable<RPNHeadImpl>, public core::Invocable {
 public:
  RPNHeadImpl(int64_t in_channels, int64_t num_anchors) : in_(in_channels), a_(num_anchors) { reset(); }
  void reset() override {
    auto conv_act = detail::Seq(detail::conv2d(in_, in_, 3, 1, 1, 1, 1, /*bias=*/true), torch::nn::ReLU(true));
    conv = detail::Seq();
    conv->push_back(conv_act);  // torchvision's Sequential(Conv2dNormActivation): conv.0.0
    register_module("conv", conv);
    cls_logits = register_module("cls_logits", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_, a_, 1)));
    bbox_pred = register_module("bbox_pred", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_, a_ * 4, 1)));
    torch::NoGradGuard g;
    for (auto& m : modules(false))
      if (auto* c = m->as<torch::nn::Conv2dImpl>()) {
        torch::nn::init::normal_(c->weight, 0.0, 0.01);
        torch::nn::init::zeros_(c->bias);
      }
  }
  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> forward(const std::vector<torch::Tensor>& x) {
    std::vector<torch::Tensor> logits, deltas;
    for (const auto& f : x) {
      auto t = core::call(conv, f);
      logits.push_back(core::call(cls_logits, t));
      deltas.push_back(core::call(bbox_pred, t));
    }
    return {logits, deltas};
  }
  detail::Seq conv{nullptr};
  torch::nn::Conv2d cls_logits{nullptr}, bbox_pred{nullptr};

 private:
  int64_t in_, a_;
};
TORCH_MODULE(RPNHead);

struct RPNOptions {
  TORCH_ARG(int64_t, pre_nms_top_n_train) = 2000;
  TORCH_ARG(int64_t, pre_nms_top_n_test) = 1000;
  TORCH_ARG(int64_t, post_nms_top_n_train) = 2000;
  TORCH_ARG(int64_t, post_nms_top_n_test) = 1000;
  TORCH_ARG(double, nms_thresh) = 0.7;
  TORCH_ARG(double, fg_iou_thresh) = 0.7;
  TORCH_ARG(double, bg_iou_thresh) = 0.3;
  TORCH_ARG(int64_t, batch_size_per_image) = 256;
  TORCH_ARG(double, positive_fraction) = 0.5;
  TORCH_ARG(double, score_thresh) = 0.0;
};

/// N x (A*C) x H x W per level -> (sum H*W*A) x C, in torchvision's (H, W, A) order.
inline torch::Tensor permute_and_flatten(const torch::Tensor& x, int64_t C) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  return x.view({N, -1, C, H, W}).permute({0, 3, 4, 1, 2}).reshape({N, -1, C});
}

using LossMap = std::map<std::string, torch::Tensor>;

/// Summed smooth-L1 (Huber) loss with transition `beta` (torch's formula; spelled out because the
/// C++ API moved `beta` between LibTorch 1.13 and 2.x).
inline torch::Tensor smooth_l1_sum(const torch::Tensor& input, const torch::Tensor& target, double beta) {
  auto n = (input - target).abs();
  return torch::where(n < beta, 0.5 * n * n / beta, n - 0.5 * beta).sum();
}

class RegionProposalNetworkImpl : public torch::nn::Cloneable<RegionProposalNetworkImpl>, public core::Invocable {
 public:
  RegionProposalNetworkImpl(AnchorGenerator anchor_generator, RPNHead head, RPNOptions options)
      : options(std::move(options)), anchor_generator(std::move(anchor_generator)), head(std::move(head)) {
    reset();
  }
  void reset() override {
    register_module("anchor_generator", anchor_generator);
    register_module("head", head);
  }

  /// Proposals per image (K_i x 4) and, in training, loss_objectness and loss_rpn_box_reg.
  std::pair<std::vector<torch::Tensor>, LossMap> forward(const ImageList& images, const std::vector<torch::Tensor>& features,
                                                         const std::vector<Target>* targets = nullptr) {
    auto [obj_levels, delta_levels] = [&] {
      RECORD_USER_SCOPE("osteonet::rpn.head");
      return head->forward(features);
    }();
    auto anchors = [&] {
      RECORD_USER_SCOPE("osteonet::rpn.anchors");
      return anchor_generator->forward({images.tensors.size(-2), images.tensors.size(-1)}, features);
    }();
    const auto num_images = static_cast<int64_t>(images.image_sizes.size());
    std::vector<int64_t> per_level;
    std::vector<torch::Tensor> obj_flat, delta_flat;
    for (size_t l = 0; l < obj_levels.size(); ++l) {
      const auto& o = obj_levels[l];
      per_level.push_back(o.size(1) * o.size(2) * o.size(3));
      obj_flat.push_back(permute_and_flatten(o, 1));
      delta_flat.push_back(permute_and_flatten(delta_levels[l], 4));
    }
    auto objectness = torch::cat(obj_flat, 1).flatten(0, -2);
    auto deltas = torch::cat(delta_flat, 1).reshape({-1, 4});
    std::vector<torch::Tensor> anchors_per_image(static_cast<size_t>(num_images), anchors);
    auto proposals = box_coder_.decode(deltas.detach(), anchors_per_image).view({num_images, -1, 4});
    auto boxes = filter_proposals(proposals, objectness, images.image_sizes, per_level);
    LossMap losses;
    if (is_training()) {
      OSTEONET_CHECK(targets != nullptr, "RegionProposalNetwork: targets are required in training mode");
      auto [labels, matched] = assign_targets_to_anchors(anchors, *targets);
      auto reg_targets = box_coder_.encode(matched, anchors_per_image);
      auto [lo, lb] = compute_loss(objectness, deltas, labels, reg_targets);
      losses["loss_objectness"] = lo;
      losses["loss_rpn_box_reg"] = lb;
    }
    return {boxes, losses};
  }

  std::vector<torch::Tensor> filter_proposals(const torch::Tensor& proposals, torch::Tensor objectness,
                                              const std::vector<std::array<int64_t, 2>>& image_sizes,
                                              const std::vector<int64_t>& per_level) {
    RECORD_USER_SCOPE("osteonet::rpn.filter_proposals");
    torch::NoGradGuard no_grad;
    const int64_t n = proposals.size(0);
    objectness = objectness.detach().reshape({n, -1});
    auto lopts = torch::TensorOptions().dtype(torch::kLong).device(proposals.device());
    std::vector<torch::Tensor> lv, top;
    int64_t offset = 0;
    const int64_t pre = is_training() ? options.pre_nms_top_n_train() : options.pre_nms_top_n_test();
    for (size_t l = 0; l < per_level.size(); ++l) {
      lv.push_back(torch::full({per_level[l]}, static_cast<int64_t>(l), lopts));
      auto ob = objectness.narrow(1, offset, per_level[l]);
      auto idx = std::get<1>(ob.topk(std::min(pre, per_level[l]), 1));
      top.push_back(idx + offset);
      offset += per_level[l];
    }
    auto levels = torch::cat(lv).reshape({1, -1}).expand_as(objectness);
    auto top_idx = torch::cat(top, 1);
    auto batch_idx = torch::arange(n, lopts).unsqueeze(1);
    auto obj = objectness.index({batch_idx, top_idx});
    auto lev = levels.index({batch_idx, top_idx});
    auto props = proposals.index({batch_idx, top_idx});
    auto prob = torch::sigmoid(obj);
    const int64_t post = is_training() ? options.post_nms_top_n_train() : options.post_nms_top_n_test();
    std::vector<torch::Tensor> out;
    for (int64_t i = 0; i < n; ++i) {
      auto b = clip_boxes_to_image(props[i], image_sizes[static_cast<size_t>(i)]);
      auto s = prob[i];
      auto lvl = lev[i];
      auto keep = remove_small_boxes(b, min_size_);
      b = b.index_select(0, keep), s = s.index_select(0, keep), lvl = lvl.index_select(0, keep);
      keep = torch::where(s >= options.score_thresh())[0];
      b = b.index_select(0, keep), s = s.index_select(0, keep), lvl = lvl.index_select(0, keep);
      keep = batched_nms(b, s, lvl, options.nms_thresh());
      keep = keep.narrow(0, 0, std::min<int64_t>(post, keep.size(0)));
      out.push_back(b.index_select(0, keep));
    }
    return out;
  }

  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> assign_targets_to_anchors(
      const torch::Tensor& anchors, const std::vector<Target>& targets) const {
    std::vector<torch::Tensor> labels, matched;
    Matcher matcher(options.fg_iou_thresh(), options.bg_iou_thresh(), true);
    for (const auto& t : targets) {
      if (t.boxes.numel() == 0) {
        matched.push_back(torch::zeros_like(anchors));
        labels.push_back(torch::zeros({anchors.size(0)}, anchors.options()));
        continue;
      }
      auto m = matcher(box_iou(t.boxes, anchors));
      matched.push_back(t.boxes.index_select(0, m.clamp_min(0)));
      auto lab = (m >= 0).to(torch::kFloat);
      lab.masked_fill_(m == Matcher::kBelowLowThreshold, 0.0);
      lab.masked_fill_(m == Matcher::kBetweenThresholds, -1.0);
      labels.push_back(lab);
    }
    return {labels, matched};
  }

  std::pair<torch::Tensor, torch::Tensor> compute_loss(const torch::Tensor& objectness, const torch::Tensor& deltas,
                                                       const std::vector<torch::Tensor>& labels,
                                                       const std::vector<torch::Tensor>& reg_targets) const {
    BalancedPositiveNegativeSampler sampler(options.batch_size_per_image(), options.positive_fraction());
    auto [pos, neg] = sampler(labels);
    auto pos_inds = torch::where(torch::cat(pos))[0];
    auto neg_inds = torch::where(torch::cat(neg))[0];
    auto inds = torch::cat({pos_inds, neg_inds});
    auto obj = objectness.flatten();
    auto lab = torch::cat(labels);
    auto reg = torch::cat(reg_targets);
    namespace F = torch::nn::functional;
    auto box_loss = smooth_l1_sum(deltas.index_select(0, pos_inds), reg.index_select(0, pos_inds), 1.0 / 9) /
                    static_cast<double>(inds.numel());
    auto obj_loss = F::binary_cross_entropy_with_logits(obj.index_select(0, inds), lab.index_select(0, inds));
    return {obj_loss, box_loss};
  }

  RPNOptions options;
  /// The anchor generator takes the image size and the head a list of maps: not one-tensor calls.
  std::vector<std::string> opaque_children() const override { return {"anchor_generator", "head"}; }

  AnchorGenerator anchor_generator;
  RPNHead head;

 private:
  BoxCoder box_coder_{{1.0, 1.0, 1.0, 1.0}};
  double min_size_ = 1e-3;
};
TORCH_MODULE(RegionProposalNetwork);

}  // namespace osteonet::detection
