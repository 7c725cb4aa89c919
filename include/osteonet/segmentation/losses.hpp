// Segmentation losses: soft Dice, cross-entropy (softmax) / BCE (one sigmoid channel), and their sum.
#pragma once

#include <torch/torch.h>

#include "osteonet/core/error.hpp"

namespace osteonet::segmentation {

namespace detail_loss {
// One-hot targets N x C x H x W (float) and probabilities from logits; checks shapes and ranges.
inline std::pair<torch::Tensor, torch::Tensor> probs_and_onehot(const torch::Tensor& logits, const torch::Tensor& target,
                                                                const char* where) {
  OSTEONET_CHECK(logits.dim() == 4, where, ": expected logits N x C x H x W, got shape ", logits.sizes());
  const int64_t c = logits.size(1);
  if (c == 1) {
    OSTEONET_CHECK(target.sizes() == logits.sizes() || (target.dim() == 3 && target.size(0) == logits.size(0) &&
                                                        target.size(1) == logits.size(2) && target.size(2) == logits.size(3)),
                   where, ": binary target must be N x 1 x H x W or N x H x W like the logits ", logits.sizes(), ", got ",
                   target.sizes());
    auto t = target.dim() == 3 ? target.unsqueeze(1) : target;
    t = t.to(logits.dtype());
    OSTEONET_CHECK(((t == 0) | (t == 1)).all().item<bool>(), where, ": binary target values must be 0 or 1");
    return {torch::sigmoid(logits), t};
  }
  OSTEONET_CHECK(target.dim() == 3 && target.size(0) == logits.size(0) && target.size(1) == logits.size(2) &&
                     target.size(2) == logits.size(3),
                 where, ": target must be N x H x W class indices matching logits ", logits.sizes(), ", got ", target.sizes());
  OSTEONET_CHECK_TYPE(!target.is_floating_point(), where, ": target must hold integer class indices, got dtype=", target.dtype());
  if (target.numel() > 0) {
    const auto lo = target.min().item<int64_t>(), hi = target.max().item<int64_t>();
    OSTEONET_CHECK(lo >= 0 && hi < c, where, ": target classes must be in [0, ", c - 1, "], got min=", lo, " max=", hi);
  }
  auto onehot = torch::one_hot(target.to(torch::kLong), c).permute({0, 3, 1, 2}).to(logits.dtype());
  return {torch::softmax(logits, 1), onehot};
}
}  // namespace detail_loss

/// 1 - mean over classes of (2 Σ p g + eps) / (Σ p + Σ g + eps), sums over the batch and pixels.
/// `include_background=false` drops class 0 (multi-class only).
inline torch::Tensor dice_loss(const torch::Tensor& logits, const torch::Tensor& target, bool include_background = true,
                               double eps = 1e-5) {
  auto [p, g] = detail_loss::probs_and_onehot(logits, target, "dice_loss");
  if (!include_background && p.size(1) > 1) {
    p = p.narrow(1, 1, p.size(1) - 1);
    g = g.narrow(1, 1, g.size(1) - 1);
  }
  const std::vector<int64_t> dims{0, 2, 3};
  auto inter = (p * g).sum(dims), denom = p.sum(dims) + g.sum(dims);
  return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean();
}

/// Cross-entropy (softmax over C >= 2 classes) or binary cross-entropy with logits (C == 1).
inline torch::Tensor cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& target) {
  if (logits.dim() == 4 && logits.size(1) == 1) {
    auto [p, t] = detail_loss::probs_and_onehot(logits, target, "cross_entropy_loss");
    (void)p;
    return torch::binary_cross_entropy_with_logits(logits, t);
  }
  detail_loss::probs_and_onehot(logits, target, "cross_entropy_loss");  // checks
  return torch::nn::functional::cross_entropy(logits, target.to(torch::kLong));
}

/// ce_weight · cross-entropy + dice_weight · Dice (the usual combined segmentation loss).
inline torch::Tensor combined_loss(const torch::Tensor& logits, const torch::Tensor& target, double ce_weight = 1.0,
                                   double dice_weight = 1.0) {
  return ce_weight * segmentation::cross_entropy_loss(logits, target) + dice_weight * segmentation::dice_loss(logits, target);
}

}  // namespace osteonet::segmentation
