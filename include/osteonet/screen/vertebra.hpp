// One vertebra on a label map: its own axes (superior, anterior, right) in the anisotropic voxel
// geometry, the vertebral body (given, or derived from a whole-vertebra mask at the spinal canal),
// anterior / middle / posterior heights along the vertebra's superior axis, and the trabecular ROI.
// The method and its choices are documented in docs/screen.md.
#pragma once

#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "osteonet/screen/distance.hpp"
#include "osteonet/screen/geometry.hpp"

namespace osteonet::screen {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// A vertebra's axes in RAS mm: `superior` along the spine (towards the head), `anterior` towards the
/// front of the body, `right` = anterior x superior (the patient's right); `centroid` of its body.
struct VertebraFrame {
  Vec3 centroid = xt::zeros<double>({3});
  Vec3 superior = {0.0, 0.0, 1.0};
  Vec3 anterior = {0.0, 1.0, 0.0};
  Vec3 right = {1.0, 0.0, 0.0};
  std::string superior_source = "patient";  // "neighbours", "neighbour", "body_shape" or "patient"
  std::string anterior_source = "patient";  // "body_shape" or "patient"
};

/// Voxels of a mask given as global (i, j, k) indices with their RAS mm centres (N x 3 each).
struct VoxelCloud {
  xt::xtensor<int64_t, 2> index;
  xt::xtensor<double, 2> world;
  std::size_t size() const { return index.shape()[0]; }
};

/// The voxels of `mask` (a crop whose first voxel is global index `lo`) as a VoxelCloud.
inline VoxelCloud voxel_cloud(const Mask3& mask, const std::array<int64_t, 3>& lo, const VoxelGeometry& g) {
  const auto& sh = mask.shape();
  const std::size_t n = static_cast<std::size_t>(xt::sum(xt::cast<int64_t>(mask))());
  VoxelCloud c;
  c.index = xt::xtensor<int64_t, 2>::from_shape({n, 3});
  c.world = xt::xtensor<double, 2>::from_shape({n, 3});
  std::size_t t = 0;
  const uint8_t* m = mask.data();
  for (std::size_t i = 0; i < sh[0]; ++i)
    for (std::size_t j = 0; j < sh[1]; ++j)
      for (std::size_t k = 0; k < sh[2]; ++k, ++m) {
        if (!*m) continue;
        const int64_t gi = lo[0] + static_cast<int64_t>(i), gj = lo[1] + static_cast<int64_t>(j),
                      gk = lo[2] + static_cast<int64_t>(k);
        c.index(t, 0) = gi, c.index(t, 1) = gj, c.index(t, 2) = gk;
        const Vec3 w = g.world(static_cast<double>(gi), static_cast<double>(gj), static_cast<double>(gk));
        c.world(t, 0) = w(0), c.world(t, 1) = w(1), c.world(t, 2) = w(2);
        ++t;
      }
  return c;
}

inline Vec3 cloud_centroid(const VoxelCloud& c) {
  Vec3 m = xt::mean(c.world, {0});
  return m;
}

/// Coordinates of the cloud's voxels along unit direction `u` from `origin` (mm).
inline xt::xtensor<double, 1> project(const VoxelCloud& c, const Vec3& origin, const Vec3& u) {
  auto x = xt::view(c.world, xt::all(), 0), y = xt::view(c.world, xt::all(), 1), z = xt::view(c.world, xt::all(), 2);
  return (x - origin(0)) * u(0) + (y - origin(1)) * u(1) + (z - origin(2)) * u(2);
}

/// Covariance (3 x 3, mm²) of the cloud's voxel centres.
inline Mat3 cloud_covariance(const VoxelCloud& c, const Vec3& mean) {
  Mat3 cov = xt::zeros<double>({3, 3});
  if (c.size() == 0) return cov;
  for (std::size_t a = 0; a < 3; ++a)
    for (std::size_t b = a; b < 3; ++b) {
      auto da = xt::view(c.world, xt::all(), a) - mean(a);
      auto db = xt::view(c.world, xt::all(), b) - mean(b);
      cov(a, b) = cov(b, a) = xt::mean(da * db)();
    }
  return cov;
}

/// Eigen decomposition of a symmetric 3 x 3 matrix (Jacobi rotations): eigenvalues ascending,
/// eigenvectors as the columns of `vectors`.
inline void symmetric_eigen3(const Mat3& m, Vec3& values, Mat3& vectors) {
  Mat3 a = m;
  vectors = xt::eye<double>(3);
  for (int sweep = 0; sweep < 60; ++sweep) {
    const double off = a(0, 1) * a(0, 1) + a(0, 2) * a(0, 2) + a(1, 2) * a(1, 2);
    if (off < 1e-22 * (1.0 + a(0, 0) * a(0, 0) + a(1, 1) * a(1, 1) + a(2, 2) * a(2, 2))) break;
    for (int p = 0; p < 2; ++p)
      for (int q = p + 1; q < 3; ++q) {
        if (std::abs(a(p, q)) < 1e-300) continue;
        const double theta = (a(q, q) - a(p, p)) / (2.0 * a(p, q));
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < 3; ++k) {  // A <- J^T A J
          const double akp = a(k, p), akq = a(k, q);
          a(k, p) = c * akp - s * akq;
          a(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < 3; ++k) {
          const double apk = a(p, k), aqk = a(q, k);
          a(p, k) = c * apk - s * aqk;
          a(q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < 3; ++k) {
          const double vkp = vectors(k, p), vkq = vectors(k, q);
          vectors(k, p) = c * vkp - s * vkq;
          vectors(k, q) = s * vkp + c * vkq;
        }
      }
  }
  std::array<int, 3> order{0, 1, 2};
  std::sort(order.begin(), order.end(), [&](int x, int y) { return a(x, x) < a(y, y); });
  Mat3 v = vectors;
  for (int c = 0; c < 3; ++c) {
    values(c) = a(order[c], order[c]);
    for (int r = 0; r < 3; ++r) vectors(r, c) = v(r, order[c]);
  }
}

/// The unit vector of `v` orthogonal to unit `n` (v - (v.n) n, normalised).
inline Vec3 orthogonal_part(const Vec3& v, const Vec3& n) { return normalized(Vec3(v - dot(v, n) * n)); }

/// Turns the patient-based anterior axis towards the body's own antero-posterior axis: the minor
/// axis of the body's cross-section in the plane orthogonal to `superior` (vertebral bodies are wider
/// than deep), used when that axis is well defined (eigenvalue ratio < 0.8) and within 35 degrees of
/// the patient's anterior; otherwise the projected patient anterior stays.
inline void patient_anterior(VertebraFrame& f) {
  f.anterior = orthogonal_part(Vec3{0.0, 1.0, 0.0}, f.superior);
  f.right = normalized(cross(f.anterior, f.superior));
  f.anterior_source = "patient";
}

inline void refine_anterior(const VoxelCloud& body, VertebraFrame& f) {
  patient_anterior(f);
  const Vec3 a0 = f.anterior, r0 = f.right;
  if (body.size() < 10) return;
  const auto a = project(body, f.centroid, a0), r = project(body, f.centroid, r0);
  const double caa = xt::mean(a * a)(), crr = xt::mean(r * r)(), car = xt::mean(a * r)();
  const double mean = 0.5 * (caa + crr), dev = std::sqrt(0.25 * (caa - crr) * (caa - crr) + car * car);
  const double lmin = mean - dev, lmax = mean + dev;
  if (!(lmax > 0) || lmin / lmax >= 0.8) return;
  const double phi = 0.5 * std::atan2(2.0 * car, caa - crr);  // major axis angle from a0 towards r0
  Vec3 minor = std::cos(phi + M_PI / 2) * a0 + std::sin(phi + M_PI / 2) * r0;
  if (dot(minor, a0) < 0) minor = -minor;
  if (dot(minor, a0) < std::cos(35.0 * M_PI / 180.0)) return;
  f.anterior = normalized(minor);
  f.right = normalized(cross(f.anterior, f.superior));
  f.anterior_source = "body_shape";
}

/// Body of a whole-vertebra mask: the voxels anterior to the spinal canal. The vertebra is projected
/// along `superior` onto its (anterior, right) plane; the canal is the largest hole of that
/// projection within 10 mm of the midline, and the body is what lies in front of the canal's
/// anterior edge on the midline ("canal"). Without a closed ring (an open arch, a vertebra cut by the
/// field of view), the first gap behind the body along the midline is the canal ("midline"); without
/// one, the body ends where the cross-sectional area, walking back from its widest slab, falls below
/// 30 % of it ("profile"). `source` says which rule ran. What lies in front of the cut is then kept
/// where its cross-section is broader than a 4 mm disk (remove_thin_parts: processes and pedicle stubs
/// are thinner), and the largest connected piece is the body. Returns a mask over the same crop.
inline Mask3 derive_body(const Mask3& vertebra, const VoxelCloud& cloud, const std::array<int64_t, 3>& lo,
                         const VoxelGeometry& g, const VertebraFrame& f, std::string& source) {
  const std::size_t n = cloud.size();
  Mask3 body = xt::zeros<uint8_t>(vertebra.shape());
  if (n == 0) {
    source = "none";
    return body;
  }
  const auto a = project(cloud, f.centroid, f.anterior), r = project(cloud, f.centroid, f.right);
  const double px = std::min({g.spacing()(0), g.spacing()(1), g.spacing()(2)});
  const double amin = xt::amin(a)() - 2 * px, rmin = xt::amin(r)() - 2 * px;
  const std::size_t h = static_cast<std::size_t>((xt::amax(a)() + 2 * px - amin) / px) + 2;
  const std::size_t w = static_cast<std::size_t>((xt::amax(r)() + 2 * px - rmin) / px) + 2;
  Mask2 occ = xt::zeros<uint8_t>({h, w});
  for (std::size_t t = 0; t < n; ++t)
    occ(static_cast<std::size_t>(std::lround((a(t) - amin) / px)), static_cast<std::size_t>(std::lround((r(t) - rmin) / px))) = 1;
  occ = close3x3(occ);
  int32_t holes = 0;
  const auto hl = label_holes(occ, holes);
  // The canal: the largest hole whose centre is within 10 mm of the midline.
  std::vector<int64_t> size(holes + 1, 0);
  std::vector<double> rsum(holes + 1, 0.0);
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x)
      if (hl(y, x) > 0) ++size[hl(y, x)], rsum[hl(y, x)] += rmin + x * px;
  int32_t canal = 0;
  for (int32_t c = 1; c <= holes; ++c)
    if (std::abs(rsum[c] / size[c]) <= 10.0 && (canal == 0 || size[c] > size[canal])) canal = c;
  double a_cut = kNaN;
  if (canal > 0 && size[canal] * px * px >= 20.0) {  // a canal of at least 20 mm² (about 5 mm across)
    const double mid = std::max(2.0, px);
    double front = -std::numeric_limits<double>::infinity();
    for (std::size_t y = 0; y < h; ++y)
      for (std::size_t x = 0; x < w; ++x)
        if (hl(y, x) == canal && std::abs(rmin + x * px) <= mid) front = std::max(front, amin + y * px);
    if (std::isfinite(front)) a_cut = front + 0.5 * px, source = "canal";
  }
  if (std::isnan(a_cut)) {
    // An open arch (or one cut by the field of view): the canal still interrupts the midline. Walking
    // back from the body's front along the midline columns, the first empty pixel is the canal.
    const double mid = std::max(2.0, px);
    std::vector<double> gaps;
    for (std::size_t x = 0; x < w; ++x) {
      if (std::abs(rmin + x * px) > mid) continue;
      std::size_t y = h;
      while (y-- > 0 && !occ(y, x)) {
      }
      if (y >= h) continue;  // empty column
      while (y > 0 && occ(y, x)) --y;
      if (y > 0) {
        // A gap only if bone follows behind it (the posterior arch), else this is the body's back.
        bool behind = false;
        for (std::size_t z = y; z-- > 0;) behind = behind || occ(z, x);
        if (behind) gaps.push_back(amin + (y + 0.5) * px);
      }
    }
    if (!gaps.empty()) {
      std::sort(gaps.begin(), gaps.end());
      a_cut = gaps[gaps.size() / 2], source = "midline";
    }
  }
  if (std::isnan(a_cut)) {
    // Area profile along the anterior axis, slabs px thick, walked from the front.
    std::vector<int64_t> slab(h, 0);
    for (std::size_t t = 0; t < n; ++t) ++slab[static_cast<std::size_t>(std::lround((a(t) - amin) / px))];
    std::size_t peak = h - 1;
    for (std::size_t y = h; y-- > 0;)
      if (slab[y] > slab[peak]) peak = y;
    std::size_t y = peak;
    while (y > 0 && slab[y] >= 0.3 * slab[peak]) --y;
    a_cut = amin + (y + 0.5) * px;
    source = "profile";
  }
  // The body's footprint in front of the cut without its parts narrower than a 4 mm disk: lateral
  // processes and pedicle stubs that reach in front of the cut fall away.
  Mask2 front = xt::zeros<uint8_t>({h, w});
  for (std::size_t t = 0; t < n; ++t)
    if (a(t) > a_cut)
      front(static_cast<std::size_t>(std::lround((a(t) - amin) / px)), static_cast<std::size_t>(std::lround((r(t) - rmin) / px))) = 1;
  front = remove_thin_parts(close3x3(front), std::max<int64_t>(1, std::lround(4.0 / px)));
  for (std::size_t t = 0; t < n; ++t)
    if (a(t) > a_cut &&
        front(static_cast<std::size_t>(std::lround((a(t) - amin) / px)), static_cast<std::size_t>(std::lround((r(t) - rmin) / px))))
      body(static_cast<std::size_t>(cloud.index(t, 0) - lo[0]), static_cast<std::size_t>(cloud.index(t, 1) - lo[1]),
           static_cast<std::size_t>(cloud.index(t, 2) - lo[2])) = 1;
  return largest_component(body);
}

namespace detail {

/// The integral from -inf to x of the triangle max(0, 1 - |t| / half), element-wise.
inline xt::xtensor<double, 1> triangle_cdf(const xt::xtensor<double, 1>& x, double half) {
  return xt::where(x <= -half, 0.0,
                   xt::where(x <= 0.0, (x + half) * (x + half) / (2.0 * half),
                             xt::where(x < half, half - (half - x) * (half - x) / (2.0 * half), half)));
}

/// The triangle of half-width `half` averaged over [x - box, x + box], element-wise.
inline xt::xtensor<double, 1> box_filtered_triangle(const xt::xtensor<double, 1>& x, double half, double box) {
  const xt::xtensor<double, 1> hi = x + box, lo = x - box;
  return (triangle_cdf(hi, half) - triangle_cdf(lo, half)) / (2.0 * box);
}

}  // namespace detail

/// Heights of the body at its anterior, middle and posterior columns (mm), measured along the
/// frame's superior axis: the body volume inside a column kernel divided by the kernel's area.
struct Heights {
  std::array<double, 3> heights_mm{kNaN, kNaN, kNaN};  // anterior, middle, posterior
  std::array<double, 3> column_mm{kNaN, kNaN, kNaN};   // column centres along `anterior` from the centroid
  double depth_mm = kNaN, width_mm = kNaN;
  double column_half_width_mm = kNaN, lateral_half_width_mm = kNaN;
};

/// Column heights. The body's depth runs along `anterior` between the outermost voxel centres within
/// the lateral band (with many voxels along a curved wall, these come close to the wall itself);
/// columns sit at `inset` of the depth from the anterior and posterior walls and at its middle. Each
/// height is sum(w) * voxel volume / (Ta * Tr) over the body's voxels, with w the product of
/// triangular kernels of half-widths Ta (along anterior, at the column) and Tr (along right, at the
/// midline), each averaged over the voxel's projected extent: the mean extent of the body along
/// `superior` under the kernel. Counting every voxel under a smooth kernel makes the estimate
/// sub-voxel where the endplates cross voxel rows.
inline Heights column_heights(const VoxelCloud& body, const VoxelGeometry& g, const VertebraFrame& f, double inset,
                              double column_half_width, double lateral_half_width) {
  Heights out;
  if (body.size() < 10) return out;
  const auto a = project(body, f.centroid, f.anterior), r = project(body, f.centroid, f.right);
  out.width_mm = xt::amax(r)() - xt::amin(r)();
  const double tr = std::min(lateral_half_width, 0.25 * out.width_mm);
  double amin = std::numeric_limits<double>::infinity(), amax = -amin;
  for (std::size_t t = 0; t < body.size(); ++t)
    if (std::abs(r(t)) <= tr) amin = std::min(amin, a(t)), amax = std::max(amax, a(t));
  if (!(amax > amin)) return out;
  out.depth_mm = amax - amin;
  const double ta = std::min(column_half_width, inset * out.depth_mm);
  out.column_half_width_mm = ta, out.lateral_half_width_mm = tr;
  // Each voxel weighs the kernel averaged over its own extent along the axis (a triangle convolved with
  // the voxel's projected width): on a lattice aligned with the axis these weights sum exactly to the
  // kernel's integral whatever the kernel's width and phase; oblique lattices average out anyway.
  const xt::xtensor<double, 1> wr = detail::box_filtered_triangle(r, tr, g.half_extent_along(f.right));
  const double ha = g.half_extent_along(f.anterior);
  const std::array<double, 3> u{1.0 - inset, 0.5, inset};
  for (int c = 0; c < 3; ++c) {
    const double ac = amin + u[c] * out.depth_mm;
    const xt::xtensor<double, 1> da = a - ac;
    const double s = xt::sum(detail::box_filtered_triangle(da, ta, ha) * wr)();
    out.column_mm[c] = ac;
    out.heights_mm[c] = s * g.voxel_volume_mm3() / (ta * tr);
  }
  return out;
}

/// Mean, median, sample SD and count of `values`.
struct HuStats {
  int64_t count = 0;
  double mean = kNaN, median = kNaN, sd = kNaN;
};

inline HuStats hu_stats(std::vector<double> values) {
  HuStats s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  auto v = xt::adapt(values, {values.size()});
  s.mean = xt::mean(v)();
  s.sd = values.size() > 1 ? std::sqrt(xt::sum(xt::square(v - s.mean))() / (values.size() - 1)) : 0.0;
  s.median = xt::median(v);
  return s;
}

}  // namespace osteonet::screen
