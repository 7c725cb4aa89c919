// Segmentation overlap and distance: per-image, per-class Dice and IoU (Jaccard) from label maps, their
// aggregation, and the percentile Hausdorff distance between mask surfaces (MONAI's definition, HD95 by default).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/metrics/intervals.hpp"

namespace osteonet::metrics {

namespace detail {

inline torch::Tensor label_map(const torch::Tensor& t, const std::string& where, const std::string& name) {
  OSTEONET_CHECK(t.defined(), where, ": ", name, " is undefined");
  OSTEONET_CHECK_TYPE(!t.is_floating_point() && !t.is_complex(), where, ": ", name,
                      " must be an integer or bool label map, got dtype=", t.dtype());
  OSTEONET_CHECK(t.dim() >= 2, where, ": ", name, " must be (N, *spatial) with at least one spatial dim, got ", name,
                 ".dim()=", t.dim());
  OSTEONET_CHECK(t.numel() > 0, where, ": ", name, " must not be empty, got ", name, ".numel()=0");
  const auto st = t.scalar_type();
  if (st == torch::kBool || st == torch::kUInt8 || st == torch::kInt64) return t.contiguous();
  return t.to(torch::kInt64).contiguous();
}

template <typename T>
void count_pairs(const T* t, const T* p, int64_t n, int64_t K, int64_t* hist) {
  // Four interleaved histograms avoid stalls on repeated increments of one bin.
  std::vector<int64_t> h(4 * K * K, 0);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++h[static_cast<int64_t>(t[i]) * K + static_cast<int64_t>(p[i])];
    ++h[K * K + static_cast<int64_t>(t[i + 1]) * K + static_cast<int64_t>(p[i + 1])];
    ++h[2 * K * K + static_cast<int64_t>(t[i + 2]) * K + static_cast<int64_t>(p[i + 2])];
    ++h[3 * K * K + static_cast<int64_t>(t[i + 3]) * K + static_cast<int64_t>(p[i + 3])];
  }
  for (; i < n; ++i) ++h[static_cast<int64_t>(t[i]) * K + static_cast<int64_t>(p[i])];
  for (int64_t j = 0; j < K * K; ++j) hist[j] += h[j] + h[K * K + j] + h[2 * K * K + j] + h[3 * K * K + j];
}

/// Sums of p, t and p & t over 0/1 bytes; 32-bit block sums keep the loop vectorisable.
inline void binary_sums(const uint8_t* p, const uint8_t* t, int64_t n, int64_t& sp, int64_t& st, int64_t& both) {
  constexpr int64_t block = 1 << 16;
  for (int64_t s = 0; s < n; s += block) {
    const int64_t e = std::min(n, s + block);
    uint32_t a = 0, b = 0, c = 0;
    for (int64_t j = s; j < e; ++j) {
      a += p[j];
      b += t[j];
      c += p[j] & t[j];
    }
    sp += a;
    st += b;
    both += c;
  }
}

}  // namespace detail

/// Per-image, per-class counts (N, K, 3) int64: true positives, false positives, false negatives of each class
/// (one-vs-rest) for label maps y_pred, y_true of shape (N, *spatial). K = num_classes, or max label + 1 (at
/// least 2) when num_classes <= 0.
inline torch::Tensor overlap_counts(const torch::Tensor& y_pred, const torch::Tensor& y_true, int64_t num_classes = -1) {
  auto p = detail::label_map(y_pred, "overlap_counts", "y_pred");
  auto t = detail::label_map(y_true, "overlap_counts", "y_true");
  OSTEONET_CHECK(p.sizes() == t.sizes(), "overlap_counts: y_pred and y_true must have the same shape, got ", p.sizes(),
                 " and ", t.sizes());
  if (p.scalar_type() != t.scalar_type()) {
    p = p.to(torch::kInt64);
    t = t.to(torch::kInt64);
  }
  const bool is_bool = p.scalar_type() == torch::kBool;
  int64_t mn = 0, mx = 1;
  if (!is_bool) {
    auto mm_p = torch::aminmax(p), mm_t = torch::aminmax(t);
    mn = std::min(std::get<0>(mm_p).item<int64_t>(), std::get<0>(mm_t).item<int64_t>());
    mx = std::max(std::get<1>(mm_p).item<int64_t>(), std::get<1>(mm_t).item<int64_t>());
  }
  OSTEONET_CHECK(mn >= 0, "overlap_counts: labels must be in [0, num_classes), got label ", mn);
  const int64_t K = num_classes > 0 ? num_classes : std::max<int64_t>(2, mx + 1);
  OSTEONET_CHECK(mx < K, "overlap_counts: labels must be in [0, num_classes), got label ", mx, " with num_classes=", K);
  const int64_t N = p.size(0), M = p.numel() / N;
  auto out = torch::zeros({N, K, 3}, torch::kInt64);
  auto oa = out.accessor<int64_t, 3>();
  for (int64_t i = 0; i < N; ++i) {
    if (K == 2 && (is_bool || p.scalar_type() == torch::kUInt8)) {  // binary masks: one pass of byte sums
      int64_t sp = 0, st = 0, both = 0;
      detail::binary_sums(reinterpret_cast<const uint8_t*>(p.data_ptr()) + i * M,
                          reinterpret_cast<const uint8_t*>(t.data_ptr()) + i * M, M, sp, st, both);
      const int64_t neither = M - sp - st + both;
      oa[i][1][0] = both; oa[i][1][1] = sp - both; oa[i][1][2] = st - both;
      oa[i][0][0] = neither; oa[i][0][1] = st - both; oa[i][0][2] = sp - both;
      continue;
    }
    std::vector<int64_t> hist(K * K, 0);  // hist[true * K + pred]
    if (is_bool || p.scalar_type() == torch::kUInt8)
      detail::count_pairs(reinterpret_cast<const uint8_t*>(t.data_ptr()) + i * M,
                          reinterpret_cast<const uint8_t*>(p.data_ptr()) + i * M, M, K, hist.data());
    else
      detail::count_pairs(t.data_ptr<int64_t>() + i * M, p.data_ptr<int64_t>() + i * M, M, K, hist.data());
    for (int64_t k = 0; k < K; ++k) {
      int64_t row = 0, col = 0;
      for (int64_t j = 0; j < K; ++j) { row += hist[k * K + j]; col += hist[j * K + k]; }
      oa[i][k][0] = hist[k * K + k];
      oa[i][k][1] = col - hist[k * K + k];
      oa[i][k][2] = row - hist[k * K + k];
    }
  }
  return out;
}

/// Dice 2TP / (2TP + FP + FN) or IoU TP / (TP + FP + FN) from counts (…, 3); `empty_score` where the class is absent
/// from both masks (TP + FP + FN = 0): NaN (default, skipped by the means) or e.g. 1.
inline torch::Tensor overlap_from_counts(const torch::Tensor& counts, const std::string& metric,
                                         double empty_score = std::numeric_limits<double>::quiet_NaN()) {
  OSTEONET_CHECK(counts.dim() >= 1 && counts.size(-1) == 3, "overlap_from_counts: counts must end in a dim of 3, got shape=",
                 counts.sizes());
  const auto c = counts.to(torch::kFloat64);
  const auto tp = c.select(-1, 0), fp = c.select(-1, 1), fn = c.select(-1, 2);
  torch::Tensor num, den;
  if (metric == "dice") {
    num = 2 * tp;
    den = 2 * tp + fp + fn;
  } else if (metric == "iou" || metric == "jaccard") {
    num = tp;
    den = tp + fp + fn;
  } else {
    throw_unknown_name("overlap_from_counts", "metric", metric, {"dice", "iou"});
  }
  return torch::where(den > 0, num / den.clamp_min(1), torch::full_like(den, empty_score));
}

namespace detail {

/// Squared Euclidean distance transform along one axis (Felzenszwalb & Huttenlocher 2012), sample spacing h.
inline void edt_1d(double* f, int64_t n, int64_t stride, double h, std::vector<double>& g, std::vector<int64_t>& v,
                   std::vector<double>& z) {
  const double inf = std::numeric_limits<double>::infinity();
  for (int64_t q = 0; q < n; ++q) g[q] = f[q * stride];
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (g[q] == inf) continue;
    while (k >= 0) {
      const double s = ((g[q] + (h * q) * (h * q)) - (g[v[k]] + (h * v[k]) * (h * v[k]))) / (2 * h * (q - v[k]));
      if (s <= z[k]) { --k; continue; }
      ++k;
      v[k] = q;
      z[k] = s;
      break;
    }
    if (k < 0) { k = 0; v[0] = q; z[0] = -inf; }
    z[k + 1] = inf;
  }
  if (k < 0) return;  // no finite sample on this line
  int64_t j = 0;
  for (int64_t q = 0; q < n; ++q) {
    while (z[j + 1] < h * q) ++j;
    const double d = h * (q - v[j]);
    f[q * stride] = d * d + g[v[j]];
  }
}

/// Foreground voxels with a background (or out-of-image) face neighbour: mask minus its erosion by the cross.
inline std::vector<uint8_t> surface(const uint8_t* m, const std::vector<int64_t>& shape) {
  const int64_t D = static_cast<int64_t>(shape.size());
  std::vector<int64_t> stride(D, 1);
  for (int64_t d = D - 2; d >= 0; --d) stride[d] = stride[d + 1] * shape[d + 1];
  const int64_t n = stride[0] * shape[0];
  std::vector<uint8_t> s(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (!m[i]) continue;
    bool edge = false;
    for (int64_t d = 0; d < D && !edge; ++d) {
      const int64_t c = (i / stride[d]) % shape[d];
      edge = c == 0 || c == shape[d] - 1 || !m[i - stride[d]] || !m[i + stride[d]];
    }
    s[i] = edge;
  }
  return s;
}

/// Squared distance from every voxel to the nearest set voxel of `target` with per-axis spacing.
inline std::vector<double> squared_edt(const std::vector<uint8_t>& target, const std::vector<int64_t>& shape,
                                       const std::vector<double>& spacing) {
  const int64_t D = static_cast<int64_t>(shape.size());
  std::vector<int64_t> stride(D, 1);
  for (int64_t d = D - 2; d >= 0; --d) stride[d] = stride[d + 1] * shape[d + 1];
  const int64_t n = stride[0] * shape[0];
  std::vector<double> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = target[i] ? 0.0 : std::numeric_limits<double>::infinity();
  for (int64_t d = 0; d < D; ++d) {
    const int64_t len = shape[d];
    std::vector<double> g(len), z(len + 1);
    std::vector<int64_t> v(len);
    for (int64_t i = 0; i < n; ++i) {
      if ((i / stride[d]) % len != 0) continue;  // start of a line along axis d
      edt_1d(f.data() + i, len, stride[d], spacing[d], g, v, z);
    }
  }
  return f;
}

}  // namespace detail

/// Percentile Hausdorff distance between the surfaces of two binary masks (one image, any number of dims):
/// the larger of the two directed q-th percentiles (NumPy's linear interpolation) of surface-to-surface
/// distances, surfaces being the voxels removed by a 1-connectivity erosion (MONAI's compute_hausdorff_distance).
/// Both masks empty: NaN; exactly one empty: +inf.
inline double hausdorff_distance(const torch::Tensor& pred, const torch::Tensor& target, double percentile = 95.0,
                                 std::vector<double> spacing = {}) {
  OSTEONET_CHECK(pred.sizes() == target.sizes(), "hausdorff_distance: masks must have the same shape, got ",
                 pred.sizes(), " and ", target.sizes());
  OSTEONET_CHECK(pred.dim() >= 1 && pred.numel() > 0, "hausdorff_distance: masks must not be empty, got shape=",
                 pred.sizes());
  OSTEONET_CHECK(percentile >= 0 && percentile <= 100, "hausdorff_distance: percentile must be in [0, 100], got percentile=",
                 percentile);
  std::vector<int64_t> shape(pred.sizes().begin(), pred.sizes().end());
  if (spacing.empty()) spacing.assign(shape.size(), 1.0);
  OSTEONET_CHECK(spacing.size() == shape.size(), "hausdorff_distance: spacing needs one value per dim, got ",
                 spacing.size(), " values for ", shape.size(), " dims");
  for (double s : spacing) OSTEONET_CHECK(s > 0, "hausdorff_distance: spacing must be positive, got spacing=", s);
  const auto a = (pred != 0).to(torch::kUInt8).contiguous(), b = (target != 0).to(torch::kUInt8).contiguous();
  const bool ea = a.sum().item<int64_t>() == 0, eb = b.sum().item<int64_t>() == 0;
  if (ea && eb) return std::numeric_limits<double>::quiet_NaN();
  if (ea || eb) return std::numeric_limits<double>::infinity();
  const auto sa = detail::surface(a.data_ptr<uint8_t>(), shape), sb = detail::surface(b.data_ptr<uint8_t>(), shape);
  auto directed = [&](const std::vector<uint8_t>& from, const std::vector<uint8_t>& to) {
    const auto d2 = detail::squared_edt(to, shape, spacing);
    std::vector<double> d;
    for (std::size_t i = 0; i < from.size(); ++i)
      if (from[i]) d.push_back(std::sqrt(d2[i]));
    std::sort(d.begin(), d.end());
    return percentile_sorted(d, percentile / 100.0);
  };
  return std::max(directed(sa, sb), directed(sb, sa));
}

}  // namespace osteonet::metrics
