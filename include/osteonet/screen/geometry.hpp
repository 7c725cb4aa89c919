// Voxel geometry of a CT volume (the 4 x 4 voxel-index -> RAS mm affine of NIfTI/nibabel and of
// osteonet.io.read_dicom_series) and one-pass statistics of every label of a label map.
#pragma once

#include <xtensor/xfixed.hpp>
#include <xtensor/xtensor.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::screen {

using Vec3 = xt::xtensor_fixed<double, xt::xshape<3>>;
using Mat3 = xt::xtensor_fixed<double, xt::xshape<3, 3>>;
using Shape3 = std::array<std::size_t, 3>;

inline double dot(const Vec3& a, const Vec3& b) { return a(0) * b(0) + a(1) * b(1) + a(2) * b(2); }
inline double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }
inline Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a(1) * b(2) - a(2) * b(1), a(2) * b(0) - a(0) * b(2), a(0) * b(1) - a(1) * b(0)};
}
inline Vec3 normalized(const Vec3& a) {
  const double n = norm(a);
  return n > 0 ? Vec3(a / n) : a;
}

/// Where the voxels of an array lie: array shape and the affine taking (i, j, k) array indices to
/// RAS+ millimetres (patient Right, Anterior, Superior), as NIfTI and osteonet.io describe volumes.
/// Voxels may be anisotropic and the axes oblique; nothing here assumes axis-aligned spacing.
class VoxelGeometry {
 public:
  VoxelGeometry() = default;

  /// `affine`: 16 numbers, row-major 4 x 4 with last row 0 0 0 1.
  VoxelGeometry(const Shape3& shape, const std::array<double, 16>& affine) : shape_(shape) {
    for (std::size_t r = 0; r < 3; ++r) {
      for (std::size_t c = 0; c < 3; ++c) linear_(r, c) = affine[r * 4 + c];
      offset_(r) = affine[r * 4 + 3];
    }
    for (double v : affine)
      OSTEONET_CHECK(std::isfinite(v), "VoxelGeometry: the affine must be finite, got a NaN or inf entry");
    OSTEONET_CHECK(std::abs(affine[12]) < 1e-9 && std::abs(affine[13]) < 1e-9 && std::abs(affine[14]) < 1e-9 &&
                       std::abs(affine[15] - 1.0) < 1e-9,
                   "VoxelGeometry: the affine's last row must be 0 0 0 1, got ", affine[12], " ", affine[13], " ",
                   affine[14], " ", affine[15]);
    for (std::size_t a = 0; a < 3; ++a) {
      OSTEONET_CHECK(shape[a] > 0, "VoxelGeometry: every axis needs at least one voxel, got shape[", a, "]=", shape[a]);
      spacing_(a) = norm(axis(a));
      OSTEONET_CHECK(spacing_(a) > 1e-6, "VoxelGeometry: voxel spacing must be positive, got spacing[", a,
                     "]=", spacing_(a));
    }
    const double det = dot(axis(0), cross(axis(1), axis(2)));
    voxel_volume_ = std::abs(det);
    OSTEONET_CHECK(voxel_volume_ > 1e-9 * spacing_(0) * spacing_(1) * spacing_(2),
                   "VoxelGeometry: the affine's voxel axes are degenerate (collinear), got |det|=", voxel_volume_);
  }

  const Shape3& shape() const { return shape_; }
  /// World step (mm) of one voxel along array axis a (a column of the affine).
  Vec3 axis(std::size_t a) const { return {linear_(0, a), linear_(1, a), linear_(2, a)}; }
  const Vec3& spacing() const { return spacing_; }
  double max_spacing() const { return std::max({spacing_(0), spacing_(1), spacing_(2)}); }
  double voxel_volume_mm3() const { return voxel_volume_; }
  const Mat3& linear() const { return linear_; }
  const Vec3& offset() const { return offset_; }

  /// RAS mm of the centre of voxel (i, j, k).
  Vec3 world(double i, double j, double k) const {
    return {offset_(0) + linear_(0, 0) * i + linear_(0, 1) * j + linear_(0, 2) * k,
            offset_(1) + linear_(1, 0) * i + linear_(1, 1) * j + linear_(1, 2) * k,
            offset_(2) + linear_(2, 0) * i + linear_(2, 1) * j + linear_(2, 2) * k};
  }

  /// Half the extent of one voxel (a parallelepiped) projected onto the unit direction `u`.
  double half_extent_along(const Vec3& u) const {
    return 0.5 * (std::abs(dot(axis(0), u)) + std::abs(dot(axis(1), u)) + std::abs(dot(axis(2), u)));
  }

 private:
  Shape3 shape_{1, 1, 1};
  Mat3 linear_ = xt::eye<double>(3);
  Vec3 offset_ = xt::zeros<double>({3});
  Vec3 spacing_ = xt::ones<double>({3});
  double voxel_volume_ = 1.0;
};

/// Index box [lo, hi] (inclusive) of a label, its voxel count, the mean index (centroid in voxel
/// coordinates) and whether it reaches the first or last voxel of any axis (cut by the field of view).
struct LabelStats {
  int64_t label = 0;
  int64_t count = 0;
  std::array<int64_t, 3> lo{std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::max(),
                            std::numeric_limits<int64_t>::max()};
  std::array<int64_t, 3> hi{-1, -1, -1};
  std::array<double, 3> index_sum{0, 0, 0};
  bool touches_border = false;

  std::array<double, 3> mean_index() const {
    return {index_sum[0] / count, index_sum[1] / count, index_sum[2] / count};
  }
};

namespace detail {

template <typename T>
int64_t as_label(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<int64_t>(std::llround(v));
  } else {
    return static_cast<int64_t>(v);
  }
}

}  // namespace detail

/// Counts, index boxes and centroids of every non-zero value of a label map in one pass over the
/// voxels (row-major, contiguous `data` of `shape`). Values must be integers >= 0.
template <typename T>
std::map<int64_t, LabelStats> label_stats(const T* data, const Shape3& shape) {
  static_assert(std::is_integral_v<T>, "label_stats: labels must be an integer type");
  // Dense tables for the usual small label values; a map for anything larger.
  constexpr int64_t kDense = 1 << 16;
  std::vector<LabelStats> dense;
  std::map<int64_t, LabelStats> sparse;
  auto slot = [&](int64_t v) -> LabelStats& {
    if (v < kDense) {
      if (static_cast<int64_t>(dense.size()) <= v) dense.resize(static_cast<std::size_t>(v) + 1);
      return dense[static_cast<std::size_t>(v)];
    }
    return sparse[v];
  };
  const int64_t n0 = static_cast<int64_t>(shape[0]), n1 = static_cast<int64_t>(shape[1]),
                n2 = static_cast<int64_t>(shape[2]);
  const T* p = data;
  for (int64_t i = 0; i < n0; ++i) {
    const bool bi = i == 0 || i == n0 - 1;
    for (int64_t j = 0; j < n1; ++j) {
      const bool bij = bi || j == 0 || j == n1 - 1;
      // Runs of equal values (labels come in runs along the fastest axis) update the table once.
      int64_t k = 0;
      while (k < n2) {
        const T v = p[k];
        int64_t e = k + 1;
        while (e < n2 && p[e] == v) ++e;
        if (v != 0) {
          OSTEONET_CHECK(v > 0, "label_stats: label values must be >= 0, got label=", detail::as_label(v));
          LabelStats& s = slot(detail::as_label(v));
          const int64_t len = e - k;
          s.count += len;
          s.lo[0] = std::min(s.lo[0], i), s.hi[0] = std::max(s.hi[0], i);
          s.lo[1] = std::min(s.lo[1], j), s.hi[1] = std::max(s.hi[1], j);
          s.lo[2] = std::min(s.lo[2], k), s.hi[2] = std::max(s.hi[2], e - 1);
          s.index_sum[0] += static_cast<double>(i) * len;
          s.index_sum[1] += static_cast<double>(j) * len;
          s.index_sum[2] += (static_cast<double>(k) + static_cast<double>(e - 1)) * 0.5 * len;
          if (bij || k == 0 || e == n2) s.touches_border = true;
        }
        k = e;
      }
      p += n2;
    }
  }
  std::map<int64_t, LabelStats> out = std::move(sparse);
  for (std::size_t v = 1; v < dense.size(); ++v) {
    if (dense[v].count == 0) continue;
    dense[v].label = static_cast<int64_t>(v);
    out[static_cast<int64_t>(v)] = dense[v];
  }
  for (auto& kv : out) kv.second.label = kv.first;
  return out;
}

}  // namespace osteonet::screen
