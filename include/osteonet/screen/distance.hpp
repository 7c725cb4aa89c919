// Exact Euclidean distance transform in anisotropic voxels (Felzenszwalb & Huttenlocher, "Distance
// transforms of sampled functions", Theory of Computing 8, 2012), erosion by a margin in mm, and the
// small binary-image tools the vertebra measurements need (connected components, hole filling).
#pragma once

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::screen {

using Mask3 = xt::xtensor<uint8_t, 3>;
using Mask2 = xt::xtensor<uint8_t, 2>;

namespace detail {

/// 1-D squared distance transform of f sampled at positions q * step (lower envelope of parabolas).
inline void dt1d(const double* f, double* d, int64_t n, double step, std::vector<int64_t>& v, std::vector<double>& z) {
  const double inf = std::numeric_limits<double>::infinity();
  v.assign(static_cast<std::size_t>(n), 0);
  z.assign(static_cast<std::size_t>(n) + 1, 0.0);
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (f[q] == inf) continue;
    const double xq = q * step;
    double s = -inf;
    while (k >= 0) {
      const double xv = v[k] * step;
      s = ((f[q] + xq * xq) - (f[v[k]] + xv * xv)) / (2.0 * (xq - xv));
      if (s <= z[k]) {
        --k;
      } else {
        break;
      }
    }
    ++k;
    v[k] = q;
    z[k] = k == 0 ? -inf : s;
    z[k + 1] = inf;
  }
  if (k < 0) {  // no finite sample on this line
    for (int64_t q = 0; q < n; ++q) d[q] = inf;
    return;
  }
  int64_t j = 0;
  for (int64_t q = 0; q < n; ++q) {
    const double xq = q * step;
    while (z[j + 1] < xq) ++j;
    const double dx = xq - v[j] * step;
    d[q] = dx * dx + f[v[j]];
  }
}

}  // namespace detail

/// Squared distance (mm²) from the centre of every foreground voxel of `mask` to the centre of the
/// nearest background voxel, with voxel steps `spacing` (mm) along the three array axes. Voxels
/// outside the array count as background, so a crop with a one-voxel background rim is exact.
inline xt::xtensor<double, 3> squared_distance_to_background(const Mask3& mask, const std::array<double, 3>& spacing) {
  const auto& sh = mask.shape();
  for (std::size_t a = 0; a < 3; ++a)
    OSTEONET_CHECK(spacing[a] > 0, "squared_distance_to_background: spacing must be positive, got spacing[", a,
                   "]=", spacing[a]);
  const double inf = std::numeric_limits<double>::infinity();
  // Pad by one background voxel on every side: the outside of the array is background.
  const std::array<std::size_t, 3> ps{sh[0] + 2, sh[1] + 2, sh[2] + 2};
  xt::xtensor<double, 3> g = xt::zeros<double>(ps);
  xt::view(g, xt::range(1, sh[0] + 1), xt::range(1, sh[1] + 1), xt::range(1, sh[2] + 1)) =
      xt::where(xt::equal(mask, uint8_t(0)), 0.0, inf);
  std::vector<double> fbuf, dbuf;
  std::vector<int64_t> v;
  std::vector<double> z;
  const std::array<std::ptrdiff_t, 3> st{static_cast<std::ptrdiff_t>(ps[1] * ps[2]), static_cast<std::ptrdiff_t>(ps[2]), 1};
  double* base = g.data();
  for (int axis = 0; axis < 3; ++axis) {
    const int a1 = (axis + 1) % 3, a2 = (axis + 2) % 3;
    const int64_t n = static_cast<int64_t>(ps[axis]);
    fbuf.resize(static_cast<std::size_t>(n));
    dbuf.resize(static_cast<std::size_t>(n));
    for (std::size_t p = 0; p < ps[a1]; ++p) {
      for (std::size_t q = 0; q < ps[a2]; ++q) {
        double* line = base + static_cast<std::ptrdiff_t>(p) * st[a1] + static_cast<std::ptrdiff_t>(q) * st[a2];
        bool any_inf = false;
        for (int64_t t = 0; t < n; ++t) {
          fbuf[t] = line[t * st[axis]];
          any_inf = any_inf || fbuf[t] == inf;
        }
        if (!any_inf && axis == 0) continue;  // all background: stays 0
        detail::dt1d(fbuf.data(), dbuf.data(), n, spacing[axis], v, z);
        for (int64_t t = 0; t < n; ++t) line[t * st[axis]] = dbuf[t];
      }
    }
  }
  return xt::view(g, xt::range(1, sh[0] + 1), xt::range(1, sh[1] + 1), xt::range(1, sh[2] + 1));
}

/// The voxels of `mask` whose centre lies more than `margin_mm` from the centre of every background
/// voxel: erosion by a ball of radius `margin_mm` in the anisotropic voxel geometry. Distances within
/// 1e-4 mm of the margin count as on it (excluded), so that the float32 rounding of a NIfTI header's
/// voxel size (0.8 stored as 0.80000001) cannot change which voxels are in.
inline Mask3 erode_by_mm(const Mask3& mask, const std::array<double, 3>& spacing, double margin_mm) {
  OSTEONET_CHECK(margin_mm >= 0, "erode_by_mm: margin must be >= 0 mm, got margin_mm=", margin_mm);
  auto d2 = squared_distance_to_background(mask, spacing);
  const double m = margin_mm + 1e-4;
  return xt::cast<uint8_t>(d2 > m * m);
}

/// Labels (1..n) of the face-connected (6-neighbour) components of a 3-D mask; `sizes[c - 1]` voxels each.
inline xt::xtensor<int32_t, 3> connected_components(const Mask3& mask, std::vector<int64_t>& sizes) {
  const auto& sh = mask.shape();
  xt::xtensor<int32_t, 3> lab = xt::zeros<int32_t>(sh);
  sizes.clear();
  const int64_t n0 = sh[0], n1 = sh[1], n2 = sh[2];
  std::vector<int64_t> stack;
  const uint8_t* m = mask.data();
  int32_t* l = lab.data();
  for (int64_t start = 0; start < n0 * n1 * n2; ++start) {
    if (!m[start] || l[start]) continue;
    const int32_t id = static_cast<int32_t>(sizes.size()) + 1;
    int64_t size = 0;
    stack.assign(1, start);
    l[start] = id;
    while (!stack.empty()) {
      const int64_t p = stack.back();
      stack.pop_back();
      ++size;
      const int64_t i = p / (n1 * n2), j = (p / n2) % n1, k = p % n2;
      const int64_t nb[6] = {i > 0 ? p - n1 * n2 : -1, i + 1 < n0 ? p + n1 * n2 : -1, j > 0 ? p - n2 : -1,
                             j + 1 < n1 ? p + n2 : -1, k > 0 ? p - 1 : -1, k + 1 < n2 ? p + 1 : -1};
      for (int64_t q : nb) {
        if (q >= 0 && m[q] && !l[q]) {
          l[q] = id;
          stack.push_back(q);
        }
      }
    }
    sizes.push_back(size);
  }
  return lab;
}

/// The largest face-connected component of `mask` (empty stays empty).
inline Mask3 largest_component(const Mask3& mask) {
  std::vector<int64_t> sizes;
  auto lab = connected_components(mask, sizes);
  if (sizes.size() <= 1) return mask;
  const int32_t best = static_cast<int32_t>(std::max_element(sizes.begin(), sizes.end()) - sizes.begin()) + 1;
  return xt::cast<uint8_t>(xt::equal(lab, best));
}

/// Holes of a 2-D mask: background pixels not 4-connected to the image border, labelled 1..n.
inline xt::xtensor<int32_t, 2> label_holes(const Mask2& mask, int32_t& count) {
  const auto& sh = mask.shape();
  const int64_t h = sh[0], w = sh[1];
  xt::xtensor<int32_t, 2> lab = xt::zeros<int32_t>(sh);  // -1: outside (reached from the border)
  std::vector<int64_t> stack;
  auto flood = [&](int64_t start, int32_t id) {
    stack.assign(1, start);
    lab.data()[start] = id;
    while (!stack.empty()) {
      const int64_t p = stack.back();
      stack.pop_back();
      const int64_t y = p / w, x = p % w;
      const int64_t nb[4] = {y > 0 ? p - w : -1, y + 1 < h ? p + w : -1, x > 0 ? p - 1 : -1, x + 1 < w ? p + 1 : -1};
      for (int64_t q : nb) {
        if (q >= 0 && !mask.data()[q] && lab.data()[q] == 0) {
          lab.data()[q] = id;
          stack.push_back(q);
        }
      }
    }
  };
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      if ((y == 0 || x == 0 || y == h - 1 || x == w - 1) && !mask(y, x) && lab(y, x) == 0) flood(y * w + x, -1);
  count = 0;
  for (int64_t p = 0; p < h * w; ++p)
    if (!mask.data()[p] && lab.data()[p] == 0) flood(p, ++count);
  return xt::where(lab > 0, lab, 0);
}

/// Binary closing of a 2-D mask with a 3 x 3 square (fills pinholes left by splatting points).
inline Mask2 close3x3(const Mask2& mask) {
  const auto& sh = mask.shape();
  const int64_t h = sh[0], w = sh[1];
  Mask2 dil = xt::zeros<uint8_t>(sh), out = xt::zeros<uint8_t>(sh);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      if (!mask(y, x)) continue;
      for (int64_t dy = -1; dy <= 1; ++dy)
        for (int64_t dx = -1; dx <= 1; ++dx)
          if (y + dy >= 0 && y + dy < h && x + dx >= 0 && x + dx < w) dil(y + dy, x + dx) = 1;
    }
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      bool all = true;
      for (int64_t dy = -1; dy <= 1 && all; ++dy)
        for (int64_t dx = -1; dx <= 1 && all; ++dx) {
          const int64_t yy = y + dy, xx = x + dx;
          // Outside the image counts as set, so closing does not eat the border.
          if (yy >= 0 && yy < h && xx >= 0 && xx < w && !dil(yy, xx)) all = false;
        }
      out(y, x) = all ? 1 : 0;
    }
  return out;
}

namespace detail {

inline std::vector<std::pair<int64_t, int64_t>> disk_offsets(int64_t radius) {
  std::vector<std::pair<int64_t, int64_t>> disk;
  for (int64_t dy = -radius; dy <= radius; ++dy)
    for (int64_t dx = -radius; dx <= radius; ++dx)
      if (dy * dy + dx * dx <= radius * radius) disk.emplace_back(dy, dx);
  return disk;
}

}  // namespace detail

/// Binary erosion of a 2-D mask with a disk of `radius` pixels (outside the image is background).
inline Mask2 erode_disk(const Mask2& mask, int64_t radius) {
  const auto& sh = mask.shape();
  const int64_t h = sh[0], w = sh[1];
  const auto disk = detail::disk_offsets(radius);
  Mask2 out = xt::zeros<uint8_t>(sh);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      if (!mask(y, x)) continue;
      bool all = true;
      for (const auto& d : disk) {
        const int64_t yy = y + d.first, xx = x + d.second;
        if (yy < 0 || yy >= h || xx < 0 || xx >= w || !mask(yy, xx)) {
          all = false;
          break;
        }
      }
      out(y, x) = all;
    }
  return out;
}

/// Binary dilation of a 2-D mask with a disk of `radius` pixels.
inline Mask2 dilate_disk(const Mask2& mask, int64_t radius) {
  const auto& sh = mask.shape();
  const int64_t h = sh[0], w = sh[1];
  const auto disk = detail::disk_offsets(radius);
  Mask2 out = xt::zeros<uint8_t>(sh);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      if (!mask(y, x)) continue;
      for (const auto& d : disk) {
        const int64_t yy = y + d.first, xx = x + d.second;
        if (yy >= 0 && yy < h && xx >= 0 && xx < w) out(yy, xx) = 1;
      }
    }
  return out;
}

/// What survives of `mask` when the parts narrower than a disk of `radius` pixels are removed: the
/// opening (erosion then dilation) grown back by 0.42 radius inside the mask, which restores the
/// corners an opening rounds off (a right-angled corner lies within (sqrt 2 - 1) radius of it) and
/// keeps only short stubs of the thin parts.
inline Mask2 remove_thin_parts(const Mask2& mask, int64_t radius) {
  Mask2 opened = dilate_disk(erode_disk(mask, radius), radius);
  const int64_t regrow = static_cast<int64_t>(std::ceil(0.42 * static_cast<double>(radius)));
  return xt::cast<uint8_t>(xt::equal(dilate_disk(opened, regrow), uint8_t(1)) && xt::equal(mask, uint8_t(1)));
}

}  // namespace osteonet::screen
