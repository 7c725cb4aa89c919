// Non-maximum suppression, torchvision.ops.nms / batched_nms semantics (suppress IoU > threshold,
// keep in decreasing score order): on the CPU torchvision's greedy O(n^2) loop over the sorted boxes
// with raw pointers; elsewhere blocked IoU matrices on tensor ops.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::detection {

namespace detail_nms {

/// torchvision's CPU NMS on boxes already in decreasing score order: the kept positions.
template <typename T>
std::vector<int64_t> greedy_sorted(const torch::Tensor& sorted_boxes, double iou_threshold) {
  auto b = sorted_boxes.contiguous();
  const int64_t n = b.size(0);
  auto areas_t = ((b.select(1, 2) - b.select(1, 0)) * (b.select(1, 3) - b.select(1, 1))).contiguous();
  const T* p = b.data_ptr<T>();
  const T* areas = areas_t.data_ptr<T>();
  std::vector<uint8_t> suppressed(static_cast<size_t>(n), 0);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(i);
    const T ix1 = p[4 * i], iy1 = p[4 * i + 1], ix2 = p[4 * i + 2], iy2 = p[4 * i + 3], iarea = areas[i];
    for (int64_t j = i + 1; j < n; ++j) {
      if (suppressed[j]) continue;
      const T xx1 = std::max(ix1, p[4 * j]), yy1 = std::max(iy1, p[4 * j + 1]);
      const T xx2 = std::min(ix2, p[4 * j + 2]), yy2 = std::min(iy2, p[4 * j + 3]);
      const T w = std::max(static_cast<T>(0), xx2 - xx1), h = std::max(static_cast<T>(0), yy2 - yy1);
      const T inter = w * h;
      const T ovr = inter / (iarea + areas[j] - inter);
      if (ovr > iou_threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

}  // namespace detail_nms

/// Greedy NMS on tensor ops (any device; used off the CPU). Boxes are visited in decreasing score order in blocks of `block` boxes: a block is
/// first suppressed by every box kept so far (one IoU matrix, vectorised), then the greedy pass
/// inside the block runs on a small block x block IoU matrix. Returns kept indices (int64),
/// sorted by decreasing score. IoU uses torchvision's formula and operation order.
inline torch::Tensor nms_blocked(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_threshold,
                                 int64_t block = 256) {
  OSTEONET_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "nms: boxes must be N x 4, got shape ", boxes.sizes());
  OSTEONET_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), "nms: scores must be N, got shape ",
                 scores.sizes(), " for ", boxes.size(0), " boxes");
  torch::NoGradGuard no_grad;
  const int64_t n = boxes.size(0);
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(boxes.device());
  if (n == 0) return torch::empty({0}, long_opts);
  auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto b = boxes.index_select(0, order).contiguous();
  auto x1 = b.select(1, 0), y1 = b.select(1, 1), x2 = b.select(1, 2), y2 = b.select(1, 3);
  auto areas = (x2 - x1) * (y2 - y1);
  // IoU of rows `i` (indices) against columns `j`, torchvision's arithmetic.
  auto iou = [&](const torch::Tensor& i, const torch::Tensor& j) {
    auto xx1 = torch::max(x1.index_select(0, i).unsqueeze(1), x1.index_select(0, j).unsqueeze(0));
    auto yy1 = torch::max(y1.index_select(0, i).unsqueeze(1), y1.index_select(0, j).unsqueeze(0));
    auto xx2 = torch::min(x2.index_select(0, i).unsqueeze(1), x2.index_select(0, j).unsqueeze(0));
    auto yy2 = torch::min(y2.index_select(0, i).unsqueeze(1), y2.index_select(0, j).unsqueeze(0));
    auto inter = (xx2 - xx1).clamp_min(0) * (yy2 - yy1).clamp_min(0);
    return inter / (areas.index_select(0, i).unsqueeze(1) + areas.index_select(0, j).unsqueeze(0) - inter);
  };
  std::vector<int64_t> kept;
  torch::Tensor kept_t = torch::empty({0}, long_opts);
  for (int64_t start = 0; start < n; start += block) {
    const int64_t end = std::min(n, start + block), m = end - start;
    auto idx = torch::arange(start, end, long_opts);
    std::vector<uint8_t> removed(static_cast<size_t>(m), 0);
    if (kept_t.numel() > 0) {
      auto sup = (iou(kept_t, idx) > iou_threshold).any(0).to(torch::kCPU).to(torch::kUInt8).contiguous();
      const auto* s = sup.data_ptr<uint8_t>();
      for (int64_t k = 0; k < m; ++k) removed[k] = s[k];
    }
    auto inner = (iou(idx, idx) > iou_threshold).to(torch::kCPU).to(torch::kUInt8).contiguous();
    const auto* in = inner.data_ptr<uint8_t>();
    std::vector<int64_t> new_kept;
    for (int64_t k = 0; k < m; ++k) {
      if (removed[k]) continue;
      new_kept.push_back(start + k);
      const uint8_t* row = in + k * m;
      for (int64_t l = k + 1; l < m; ++l) removed[l] |= row[l];
    }
    if (!new_kept.empty()) {
      kept.insert(kept.end(), new_kept.begin(), new_kept.end());
      kept_t = torch::cat({kept_t, torch::tensor(new_kept, torch::kLong).to(boxes.device())});
    }
  }
  return order.index_select(0, kept_t);
}

/// Greedy NMS (torchvision.ops.nms): kept indices (int64) by decreasing score (stable sort). On the
/// CPU (float/double) torchvision's loop over the sorted boxes; elsewhere nms_blocked(.., block).
inline torch::Tensor nms(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_threshold,
                         int64_t block = 256) {
  const bool kernel = boxes.device().is_cpu() &&
                      (boxes.scalar_type() == torch::kFloat || boxes.scalar_type() == torch::kDouble);
  if (!kernel) return nms_blocked(boxes, scores, iou_threshold, block);
  OSTEONET_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "nms: boxes must be N x 4, got shape ", boxes.sizes());
  OSTEONET_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), "nms: scores must be N, got shape ",
                 scores.sizes(), " for ", boxes.size(0), " boxes");
  torch::NoGradGuard no_grad;
  if (boxes.size(0) == 0) return torch::empty({0}, torch::kLong);
  auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto b = boxes.index_select(0, order);
  std::vector<int64_t> kept;
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "nms", [&] { kept = detail_nms::greedy_sorted<scalar_t>(b, iou_threshold); });
  return order.index_select(0, torch::tensor(kept, torch::kLong));
}

/// NMS done independently per category `idxs` (torchvision.ops.batched_nms): per-category NMS for
/// large inputs (> 4000 coordinates on CPU, 20000 on CUDA), else the coordinate-offset trick.
inline torch::Tensor batched_nms(const torch::Tensor& boxes, const torch::Tensor& scores, const torch::Tensor& idxs,
                                 double iou_threshold) {
  torch::NoGradGuard no_grad;
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(boxes.device());
  if (boxes.numel() == 0) return torch::empty({0}, long_opts);
  const int64_t limit = boxes.is_cuda() ? 20000 : 4000;
  if (boxes.numel() > limit) {
    auto keep_mask = torch::zeros_like(scores, torch::kBool);
    auto classes = std::get<0>(torch::_unique(idxs));
    auto cls_cpu = classes.to(torch::kCPU).to(torch::kLong).contiguous();
    for (int64_t c = 0; c < cls_cpu.numel(); ++c) {
      auto curr = torch::where(idxs == cls_cpu.data_ptr<int64_t>()[c])[0];
      auto keep = nms(boxes.index_select(0, curr), scores.index_select(0, curr), iou_threshold);
      keep_mask.index_fill_(0, curr.index_select(0, keep), true);
    }
    auto keep_indices = keep_mask.nonzero().view(-1);
    auto order = std::get<1>(scores.index_select(0, keep_indices).sort(/*stable=*/false, 0, /*descending=*/true));
    return keep_indices.index_select(0, order);
  }
  auto max_coordinate = boxes.max();
  auto offsets = idxs.to(boxes.dtype()) * (max_coordinate + 1);
  return nms(boxes + offsets.unsqueeze(1), scores, iou_threshold);
}

}  // namespace osteonet::detection
