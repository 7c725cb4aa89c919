// The Fast R-CNN box branch (Girshick, ICCV 2015) of Faster R-CNN, torchvision 0.14's TwoMLPHead,
// FastRCNNPredictor and RoIHeads: proposal sampling and losses in training, per-class decoding,
// score threshold, NMS and top-k in evaluation.
#pragma once

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <utility>
#include <vector>

#include "osteonet/core/call.hpp"
#include "osteonet/detection/box_ops.hpp"
#include "osteonet/detection/nms.hpp"
#include "osteonet/detection/roi_align.hpp"
#include "osteonet/detection/rpn.hpp"
#include "osteonet/detection/sampling.hpp"
#include "osteonet/detection/transform.hpp"

namespace osteonet::detection {

/// flatten -> fc6 -> ReLU -> fc7 -> ReLU.
class TwoMLPHeadImpl : public torch::nn::Cloneable<TwoMLPHeadImpl>, public core::TensorInvocable<TwoMLPHeadImpl> {
 public:
  TwoMLPHeadImpl(int64_t in_channels, int64_t representation_size) : in_(in_channels), rep_(representation_size) {
    reset();
  }
  void reset() override {
    fc6 = register_module("fc6", torch::nn::Linear(in_, rep_));
    fc7 = register_module("fc7", torch::nn::Linear(rep_, rep_));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::relu(core::call(fc7, torch::relu(core::call(fc6, x.flatten(1)))));
  }
  torch::nn::Linear fc6{nullptr}, fc7{nullptr};

 private:
  int64_t in_, rep_;
};
TORCH_MODULE(TwoMLPHead);

/// Class logits (`cls_score`) and per-class box deltas (`bbox_pred`).
class FastRCNNPredictorImpl : public torch::nn::Cloneable<FastRCNNPredictorImpl>, public core::Invocable {
 public:
  FastRCNNPredictorImpl(int64_t in_channels, int64_t num_classes) : in_(in_channels), classes_(num_classes) { reset(); }
  void reset() override {
    cls_score = register_module("cls_score", torch::nn::Linear(in_, classes_));
    bbox_pred = register_module("bbox_pred", torch::nn::Linear(in_, classes_ * 4));
  }
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    auto f = x.flatten(1);
    return {core::call(cls_score, f), core::call(bbox_pred, f)};
  }
  /// {x} -> {class logits, box deltas} (torchvision's predictor returns the same pair).
  std::vector<torch::Tensor> invoke(const std::vector<torch::Tensor>& args) override {
    OSTEONET_CHECK(args.size() == 1, "FastRCNNPredictor: forward takes one tensor, got ", args.size());
    auto [scores, deltas] = forward(args[0]);
    return {scores, deltas};
  }
  torch::nn::Linear cls_score{nullptr}, bbox_pred{nullptr};

 private:
  int64_t in_, classes_;
};
TORCH_MODULE(FastRCNNPredictor);

struct RoIHeadsOptions {
  TORCH_ARG(double, fg_iou_thresh) = 0.5;
  TORCH_ARG(double, bg_iou_thresh) = 0.5;
  TORCH_ARG(int64_t, batch_size_per_image) = 512;
  TORCH_ARG(double, positive_fraction) = 0.25;
  TORCH_ARG(double, score_thresh) = 0.05;
  TORCH_ARG(double, nms_thresh) = 0.5;
  TORCH_ARG(int64_t, detections_per_img) = 100;
  TORCH_ARG(std::vector<double>, bbox_reg_weights) = {10.0, 10.0, 5.0, 5.0};
  /// RoIAlign output size and samples per bin (MultiScaleRoIAlign(..., 7, 2)).
  TORCH_ARG(int64_t, pool_size) = 7;
  TORCH_ARG(int64_t, sampling_ratio) = 2;
  /// How many leading feature maps the RoI pooler reads (torchvision's featmap_names "0".."3").
  TORCH_ARG(int64_t, pooled_levels) = 4;
};

/// fastrcnn_loss: cross-entropy over sampled proposals, smooth-L1 (beta 1/9) of the true class's
/// deltas on positives, divided by the number of sampled proposals.
inline std::pair<torch::Tensor, torch::Tensor> fastrcnn_loss(const torch::Tensor& class_logits,
                                                             const torch::Tensor& box_regression,
                                                             const std::vector<torch::Tensor>& labels,
                                                             const std::vector<torch::Tensor>& regression_targets) {
  auto lab = torch::cat(labels, 0);
  auto reg = torch::cat(regression_targets, 0);
  auto cls_loss = torch::nn::functional::cross_entropy(class_logits, lab);
  auto pos = torch::where(lab > 0)[0];
  auto labels_pos = lab.index_select(0, pos);
  const int64_t n = class_logits.size(0);
  auto br = box_regression.reshape({n, box_regression.size(-1) / 4, 4});
  auto box_loss = smooth_l1_sum(br.index({pos, labels_pos}), reg.index_select(0, pos), 1.0 / 9) /
                  static_cast<double>(lab.numel());
  return {cls_loss, box_loss};
}

class RoIHeadsImpl : public torch::nn::Cloneable<RoIHeadsImpl>, public core::Invocable {
 public:
  RoIHeadsImpl(torch::nn::AnyModule box_head, FastRCNNPredictor box_predictor, RoIHeadsOptions options)
      : options(std::move(options)), box_head(std::move(box_head)), box_predictor(std::move(box_predictor)) {
    reset();
  }
  void reset() override {
    const auto& w = options.bbox_reg_weights();
    OSTEONET_CHECK(w.size() == 4, "RoIHeads: bbox_reg_weights needs 4 values, got ", w.size());
    box_coder_ = BoxCoder({w[0], w[1], w[2], w[3]});
    register_module("box_head", box_head.ptr());
    register_module("box_predictor", box_predictor);
  }

  std::pair<std::vector<Detection>, LossMap> forward(const std::vector<torch::Tensor>& features,
                                                     std::vector<torch::Tensor> proposals,
                                                     const std::vector<std::array<int64_t, 2>>& image_sizes,
                                                     const std::vector<Target>* targets = nullptr) {
    std::vector<torch::Tensor> labels, reg_targets;
    if (is_training()) {
      OSTEONET_CHECK(targets != nullptr, "RoIHeads: targets are required in training mode");
      select_training_samples(proposals, *targets, labels, reg_targets);
    }
    auto [class_logits, box_regression] = box_outputs(features, proposals, image_sizes);
    std::vector<Detection> result;
    LossMap losses;
    if (is_training()) {
      auto [lc, lb] = fastrcnn_loss(class_logits, box_regression, labels, reg_targets);
      losses["loss_classifier"] = lc;
      losses["loss_box_reg"] = lb;
    } else {
      result = postprocess_detections(class_logits, box_regression, proposals, image_sizes);
    }
    return {result, losses};
  }

  /// Class logits and per-class box deltas of the proposals: multi-scale RoIAlign on the leading
  /// feature maps, box head, predictor.
  std::pair<torch::Tensor, torch::Tensor> box_outputs(const std::vector<torch::Tensor>& features,
                                                      const std::vector<torch::Tensor>& proposals,
                                                      const std::vector<std::array<int64_t, 2>>& image_sizes) {
    const auto levels = std::min<size_t>(features.size(), static_cast<size_t>(options.pooled_levels()));
    std::vector<torch::Tensor> pooled_maps(features.begin(), features.begin() + static_cast<int64_t>(levels));
    auto box_features = [&] {
      RECORD_USER_SCOPE("osteonet::roi_heads.box_roi_pool");
      return multiscale_roi_align(pooled_maps, proposals, image_sizes, options.pool_size(), options.sampling_ratio());
    }();
    RECORD_USER_SCOPE("osteonet::roi_heads.box_head");
    box_features = core::call(box_head, box_features);  // the pooled RoIs are freed here
    // The predictor may be a Python module (e.g. torchvision's FastRCNNPredictor for new classes):
    // the class count comes from its output.
    auto out = core::call_many(box_predictor, {box_features}, [&] {
      auto [scores, deltas] = box_predictor->forward(box_features);
      return std::vector<torch::Tensor>{scores, deltas};
    });
    OSTEONET_CHECK(out.size() == 2, "roi_heads.box_predictor: expected (class logits, box deltas), got ", out.size(),
                   " tensors");
    OSTEONET_CHECK(out[0].dim() == 2 && out[1].dim() == 2 && out[1].size(1) == 4 * out[0].size(1) &&
                       out[0].size(0) == box_features.size(0) && out[1].size(0) == box_features.size(0),
                   "roi_heads.box_predictor: expected class logits K x C and box deltas K x 4C for K=",
                   box_features.size(0), " proposals, got ", out[0].sizes(), " and ", out[1].sizes());
    return {out[0], out[1]};
  }

  void select_training_samples(std::vector<torch::Tensor>& proposals, const std::vector<Target>& targets,
                               std::vector<torch::Tensor>& labels, std::vector<torch::Tensor>& reg_targets) const {
    Matcher matcher(options.fg_iou_thresh(), options.bg_iou_thresh(), false);
    std::vector<torch::Tensor> matched_idxs, matched_gt;
    for (size_t i = 0; i < proposals.size(); ++i) {
      auto gt = targets[i].boxes.to(proposals[i].dtype());
      proposals[i] = torch::cat({proposals[i], gt}, 0);
      const int64_t n = proposals[i].size(0);
      auto lopts = torch::TensorOptions().dtype(torch::kLong).device(gt.device());
      if (gt.numel() == 0) {
        matched_idxs.push_back(torch::zeros({n}, lopts));
        labels.push_back(torch::zeros({n}, lopts));
        continue;
      }
      auto m = matcher(box_iou(gt, proposals[i]));
      auto clamped = m.clamp_min(0);
      auto lab = targets[i].labels.index_select(0, clamped).to(torch::kLong);
      lab.masked_fill_(m == Matcher::kBelowLowThreshold, 0);
      lab.masked_fill_(m == Matcher::kBetweenThresholds, -1);
      matched_idxs.push_back(clamped);
      labels.push_back(lab);
    }
    BalancedPositiveNegativeSampler sampler(options.batch_size_per_image(), options.positive_fraction());
    auto [pos, neg] = sampler(labels);
    for (size_t i = 0; i < proposals.size(); ++i) {
      auto inds = torch::where(pos[i].logical_or(neg[i]))[0];
      proposals[i] = proposals[i].index_select(0, inds);
      labels[i] = labels[i].index_select(0, inds);
      matched_idxs[i] = matched_idxs[i].index_select(0, inds);
      auto gt = targets[i].boxes.to(proposals[i].dtype());
      if (gt.numel() == 0) gt = torch::zeros({1, 4}, proposals[i].options());
      matched_gt.push_back(gt.index_select(0, matched_idxs[i]));
    }
    reg_targets = box_coder_.encode(matched_gt, proposals);
  }

  std::vector<Detection> postprocess_detections(const torch::Tensor& class_logits, const torch::Tensor& box_regression,
                                                const std::vector<torch::Tensor>& proposals,
                                                const std::vector<std::array<int64_t, 2>>& image_sizes) const {
    RECORD_USER_SCOPE("osteonet::roi_heads.postprocess_detections");
    const int64_t num_classes = class_logits.size(-1);
    std::vector<int64_t> counts;
    for (const auto& p : proposals) counts.push_back(p.size(0));
    auto pred_boxes = box_coder_.decode(box_regression, proposals);
    auto pred_scores = torch::softmax(class_logits, -1);
    auto boxes_list = pred_boxes.split_with_sizes(counts, 0);
    auto scores_list = pred_scores.split_with_sizes(counts, 0);
    using torch::indexing::None;
    using torch::indexing::Slice;
    std::vector<Detection> out;
    for (size_t i = 0; i < proposals.size(); ++i) {
      auto boxes = clip_boxes_to_image(boxes_list[i], image_sizes[i]);
      auto scores = scores_list[i];
      auto labels = torch::arange(num_classes, torch::TensorOptions().dtype(torch::kLong).device(boxes.device()))
                        .view({1, -1})
                        .expand_as(scores);
      boxes = boxes.index({Slice(), Slice(1, None)}).reshape({-1, 4});
      scores = scores.index({Slice(), Slice(1, None)}).reshape(-1);
      labels = labels.index({Slice(), Slice(1, None)}).reshape(-1);
      auto inds = torch::where(scores > options.score_thresh())[0];
      boxes = boxes.index_select(0, inds), scores = scores.index_select(0, inds), labels = labels.index_select(0, inds);
      auto keep = remove_small_boxes(boxes, 1e-2);
      boxes = boxes.index_select(0, keep), scores = scores.index_select(0, keep), labels = labels.index_select(0, keep);
      keep = batched_nms(boxes, scores, labels, options.nms_thresh());
      keep = keep.narrow(0, 0, std::min<int64_t>(options.detections_per_img(), keep.size(0)));
      out.push_back({boxes.index_select(0, keep), labels.index_select(0, keep), scores.index_select(0, keep)});
    }
    return out;
  }

  RoIHeadsOptions options;
  torch::nn::AnyModule box_head;
  FastRCNNPredictor box_predictor;

 private:
  BoxCoder box_coder_{{10.0, 10.0, 5.0, 5.0}};
};
TORCH_MODULE(RoIHeads);

}  // namespace osteonet::detection
