// Non-maximum suppression on LibTorch tensor ops (CPU and CUDA): torchvision.ops.nms / batched_nms
// semantics (suppress IoU > threshold, keep in decreasing score order).
#pragma once

#include <torch/torch.h>

#include "osteonet/core/error.hpp"

namespace osteonet::detection {

/// Greedy NMS. Boxes are visited in decreasing score order in blocks of `block` boxes: a block is
/// first suppressed by every box kept so far (one IoU matrix, vectorised), then the greedy pass
/// inside the block runs on a small block x block IoU matrix. Returns kept indices (int64),
/// sorted by decreasing score. IoU uses torchvision's formula and operation order.
inline torch::Tensor nms(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_threshold,
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
