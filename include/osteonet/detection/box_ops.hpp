// Box utilities and the box coder of Faster R-CNN (Ren et al., NeurIPS 2015), as torchvision 0.14's
// ops/boxes.py and models/detection/_utils.py (same formulas and operation order, for parity).
#pragma once

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <vector>

namespace osteonet::detection {

/// (x2 - x1) * (y2 - y1) of an N x 4 box tensor.
inline torch::Tensor box_area(const torch::Tensor& b) {
  using torch::indexing::Slice;
  return (b.select(1, 2) - b.select(1, 0)) * (b.select(1, 3) - b.select(1, 1));
}

/// Pairwise IoU (N x M) of N x 4 and M x 4 boxes (x1, y1, x2, y2).
inline torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b) {
  using torch::indexing::None;
  using torch::indexing::Slice;
  auto area1 = box_area(a), area2 = box_area(b);
  auto lt = torch::max(a.index({Slice(), None, Slice(None, 2)}), b.index({Slice(), Slice(None, 2)}));
  auto rb = torch::min(a.index({Slice(), None, Slice(2, None)}), b.index({Slice(), Slice(2, None)}));
  auto wh = (rb - lt).clamp_min(0);
  auto inter = wh.select(-1, 0) * wh.select(-1, 1);
  auto uni = area1.unsqueeze(1) + area2 - inter;
  return inter / uni;
}

/// Clamps x to [0, width] and y to [0, height]; `size` = (height, width).
inline torch::Tensor clip_boxes_to_image(const torch::Tensor& boxes, std::array<int64_t, 2> size) {
  using torch::indexing::Ellipsis;
  using torch::indexing::None;
  using torch::indexing::Slice;
  auto bx = boxes.index({Ellipsis, Slice(0, None, 2)}).clamp(0, size[1]);
  auto by = boxes.index({Ellipsis, Slice(1, None, 2)}).clamp(0, size[0]);
  return torch::stack({bx, by}, boxes.dim()).reshape(boxes.sizes());
}

/// Indices of boxes whose width and height are both >= min_size.
inline torch::Tensor remove_small_boxes(const torch::Tensor& boxes, double min_size) {
  auto ws = boxes.select(1, 2) - boxes.select(1, 0);
  auto hs = boxes.select(1, 3) - boxes.select(1, 1);
  return torch::where((ws >= min_size).logical_and(hs >= min_size))[0];
}

/// Encodes boxes as (dx, dy, dw, dh) regression targets relative to reference boxes and decodes
/// them back (torchvision's BoxCoder; weights (1,1,1,1) in the RPN, (10,10,5,5) in the box head).
class BoxCoder {
 public:
  explicit BoxCoder(std::array<double, 4> weights = {1.0, 1.0, 1.0, 1.0},
                    double bbox_xform_clip = std::log(1000.0 / 16))
      : weights_(weights), clip_(bbox_xform_clip) {}

  const std::array<double, 4>& weights() const { return weights_; }

  /// Targets of `reference` (matched ground truth) w.r.t. `proposals`, both K x 4 -> K x 4.
  torch::Tensor encode_single(const torch::Tensor& reference, const torch::Tensor& proposals) const {
    auto w = torch::tensor({weights_[0], weights_[1], weights_[2], weights_[3]},
                           torch::TensorOptions().dtype(reference.dtype()).device(reference.device()));
    auto px1 = proposals.select(1, 0).unsqueeze(1), py1 = proposals.select(1, 1).unsqueeze(1);
    auto px2 = proposals.select(1, 2).unsqueeze(1), py2 = proposals.select(1, 3).unsqueeze(1);
    auto rx1 = reference.select(1, 0).unsqueeze(1), ry1 = reference.select(1, 1).unsqueeze(1);
    auto rx2 = reference.select(1, 2).unsqueeze(1), ry2 = reference.select(1, 3).unsqueeze(1);
    auto ex_w = px2 - px1, ex_h = py2 - py1;
    auto ex_cx = px1 + 0.5 * ex_w, ex_cy = py1 + 0.5 * ex_h;
    auto gt_w = rx2 - rx1, gt_h = ry2 - ry1;
    auto gt_cx = rx1 + 0.5 * gt_w, gt_cy = ry1 + 0.5 * gt_h;
    auto dx = w[0] * (gt_cx - ex_cx) / ex_w;
    auto dy = w[1] * (gt_cy - ex_cy) / ex_h;
    auto dw = w[2] * torch::log(gt_w / ex_w);
    auto dh = w[3] * torch::log(gt_h / ex_h);
    return torch::cat({dx, dy, dw, dh}, 1);
  }

  /// Per-image encode: lists of K_i x 4 -> list of K_i x 4.
  std::vector<torch::Tensor> encode(const std::vector<torch::Tensor>& reference,
                                    const std::vector<torch::Tensor>& proposals) const {
    std::vector<int64_t> counts;
    for (const auto& b : reference) counts.push_back(b.size(0));
    auto t = encode_single(torch::cat(reference), torch::cat(proposals));
    return t.split_with_sizes(counts, 0);
  }

  /// Applies K x (4*C) deltas to K x 4 boxes -> K x (4*C) boxes.
  torch::Tensor decode_single(const torch::Tensor& rel_codes, torch::Tensor boxes) const {
    using torch::indexing::None;
    using torch::indexing::Slice;
    boxes = boxes.to(rel_codes.dtype());
    auto widths = boxes.select(1, 2) - boxes.select(1, 0);
    auto heights = boxes.select(1, 3) - boxes.select(1, 1);
    auto ctr_x = boxes.select(1, 0) + 0.5 * widths;
    auto ctr_y = boxes.select(1, 1) + 0.5 * heights;
    auto dx = rel_codes.index({Slice(), Slice(0, None, 4)}) / weights_[0];
    auto dy = rel_codes.index({Slice(), Slice(1, None, 4)}) / weights_[1];
    auto dw = (rel_codes.index({Slice(), Slice(2, None, 4)}) / weights_[2]).clamp_max(clip_);
    auto dh = (rel_codes.index({Slice(), Slice(3, None, 4)}) / weights_[3]).clamp_max(clip_);
    auto pcx = dx * widths.unsqueeze(1) + ctr_x.unsqueeze(1);
    auto pcy = dy * heights.unsqueeze(1) + ctr_y.unsqueeze(1);
    auto pw = torch::exp(dw) * widths.unsqueeze(1);
    auto ph = torch::exp(dh) * heights.unsqueeze(1);
    auto hh = 0.5 * ph, hw = 0.5 * pw;
    return torch::stack({pcx - hw, pcy - hh, pcx + hw, pcy + hh}, 2).flatten(1);
  }

  /// Decodes deltas for boxes given per image; returns sum(K_i) x C x 4.
  torch::Tensor decode(const torch::Tensor& rel_codes, const std::vector<torch::Tensor>& boxes) const {
    auto concat = torch::cat(boxes, 0);
    const int64_t total = concat.size(0);
    auto codes = total > 0 ? rel_codes.reshape({total, -1}) : rel_codes;
    auto pred = decode_single(codes, concat);
    return total > 0 ? pred.reshape({total, -1, 4}) : pred;
  }

 private:
  std::array<double, 4> weights_;
  double clip_;
};

}  // namespace osteonet::detection
