// Training-time assignment of anchors/proposals to ground truth: torchvision's Matcher and
// BalancedPositiveNegativeSampler (models/detection/_utils.py).
#pragma once

#include <torch/torch.h>

#include <utility>
#include <vector>

namespace osteonet::detection {

/// Matches every prediction (column of an M x N IoU matrix) to its best ground truth (row):
/// index >= 0, -1 below `low`, -2 between `low` and `high`. With allow_low_quality_matches,
/// predictions that are the best match of some ground truth keep it even below `high`.
class Matcher {
 public:
  static constexpr int64_t kBelowLowThreshold = -1;
  static constexpr int64_t kBetweenThresholds = -2;

  Matcher(double high, double low, bool allow_low_quality_matches = false)
      : high_(high), low_(low), allow_low_(allow_low_quality_matches) {}

  torch::Tensor operator()(const torch::Tensor& quality) const {
    auto [vals, matches] = quality.max(0);
    torch::Tensor all_matches;
    if (allow_low_) all_matches = matches.clone();
    auto below = vals < low_;
    auto between = (vals >= low_).logical_and(vals < high_);
    matches.masked_fill_(below, kBelowLowThreshold);
    matches.masked_fill_(between, kBetweenThresholds);
    if (allow_low_) {
      auto best = std::get<0>(quality.max(1));
      auto pairs = torch::where(quality == best.unsqueeze(1));
      auto upd = pairs[1];
      matches.index_put_({upd}, all_matches.index({upd}));
    }
    return matches;
  }

 private:
  double high_, low_;
  bool allow_low_;
};

/// Samples `batch_size_per_image` elements per image with at most `positive_fraction` positives
/// (label >= 1), the rest negatives (label 0); returns (positive mask, negative mask) per image.
class BalancedPositiveNegativeSampler {
 public:
  BalancedPositiveNegativeSampler(int64_t batch_size_per_image, double positive_fraction)
      : batch_(batch_size_per_image), fraction_(positive_fraction) {}

  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> operator()(
      const std::vector<torch::Tensor>& labels) const {
    std::vector<torch::Tensor> pos_masks, neg_masks;
    for (const auto& m : labels) {
      auto positive = torch::where(m >= 1)[0];
      auto negative = torch::where(m == 0)[0];
      int64_t num_pos = static_cast<int64_t>(static_cast<double>(batch_) * fraction_);
      num_pos = std::min(positive.numel(), num_pos);
      int64_t num_neg = std::min(negative.numel(), batch_ - num_pos);
      auto perm1 = torch::randperm(positive.numel(), positive.options()).narrow(0, 0, num_pos);
      auto perm2 = torch::randperm(negative.numel(), negative.options()).narrow(0, 0, num_neg);
      auto pos_mask = torch::zeros_like(m, torch::kBool);
      auto neg_mask = torch::zeros_like(m, torch::kBool);
      pos_mask.index_fill_(0, positive.index_select(0, perm1), true);
      neg_mask.index_fill_(0, negative.index_select(0, perm2), true);
      pos_masks.push_back(pos_mask);
      neg_masks.push_back(neg_mask);
    }
    return {pos_masks, neg_masks};
  }

 private:
  int64_t batch_;
  double fraction_;
};

}  // namespace osteonet::detection
