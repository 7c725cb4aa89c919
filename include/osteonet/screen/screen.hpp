// Opportunistic CT screening, per vertebra: on a CT in HU and a vertebra label map (optionally a
// vertebral-body mask), every vertebra's body, trabecular ROI (eroded by a margin in mm), HU
// statistics, BMD through a linear calibration and its ACR class, body volume, anterior / middle /
// posterior heights along the vertebra's own axes, height-loss ratios against its neighbours and the
// Genant grade. Python: osteonet.screen; the method and its references: docs/screen.md.
#pragma once

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "osteonet/clinical/categories.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/screen/distance.hpp"
#include "osteonet/screen/geometry.hpp"
#include "osteonet/screen/thresholds.hpp"
#include "osteonet/screen/vertebra.hpp"

namespace osteonet::screen {

/// How the screen measures. Defaults are the documented method (docs/screen.md).
struct ScreenOptions {
  /// Trabecular ROI: body voxels farther than this from the body's outside (mm).
  double roi_margin_mm = 4.0;
  /// Anterior and posterior height columns sit this fraction of the body's depth inside its walls.
  double column_inset = 0.15;
  /// Half-width of the triangular column kernel along the anterior axis (mm; at most inset * depth).
  double column_half_width_mm = 2.0;
  /// Half-width of the triangular kernel across the midline (mm; at most a quarter of the width).
  double lateral_half_width_mm = 5.0;
  /// Fewer ROI voxels than this are reported with the flag "roi_small".
  int64_t min_roi_voxels = 50;
  /// Neighbours within this many positions along the spine give the reference height.
  int64_t neighbour_span = 2;
  /// The label map holds vertebral bodies (no posterior elements): no body derivation.
  bool labels_are_bodies = false;
  /// Value of the vertebral body in the optional body mask (TotalSegmentator's vertebrae_body: 1).
  int64_t body_value = 1;
  LinearCalibration calibration;

  void check() const {
    OSTEONET_CHECK(std::isfinite(roi_margin_mm) && roi_margin_mm >= 0,
                   "ScreenOptions: roi_margin_mm must be >= 0, got roi_margin_mm=", roi_margin_mm);
    OSTEONET_CHECK(column_inset > 0 && column_inset < 0.5, "ScreenOptions: column_inset must be in (0, 0.5), got column_inset=",
                   column_inset);
    OSTEONET_CHECK(column_half_width_mm > 0, "ScreenOptions: column_half_width_mm must be > 0, got column_half_width_mm=",
                   column_half_width_mm);
    OSTEONET_CHECK(lateral_half_width_mm > 0,
                   "ScreenOptions: lateral_half_width_mm must be > 0, got lateral_half_width_mm=", lateral_half_width_mm);
    OSTEONET_CHECK(min_roi_voxels >= 1, "ScreenOptions: min_roi_voxels must be >= 1, got min_roi_voxels=", min_roi_voxels);
    OSTEONET_CHECK(neighbour_span >= 1, "ScreenOptions: neighbour_span must be >= 1, got neighbour_span=", neighbour_span);
    calibration.check();
  }
};

/// Everything measured on one vertebra. NaN (Python: None) marks what was not measured; `flags` says why.
struct VertebraResult {
  int64_t label = 0;
  int64_t position = 0;  // index in the spine order given to measure_vertebrae
  bool complete = false;  // the body does not reach the edge of the field of view
  bool vertebra_touches_border = false;
  int64_t vertebra_voxels = 0, body_voxels = 0;
  double body_volume_ml = kNaN;
  std::string body_source;  // "labels", "body_mask", "canal", "profile" or "none"
  VertebraFrame frame;
  Heights heights;
  double reference_height_mm = kNaN;
  std::string reference_source;  // "neighbours" or "own"
  std::array<double, 3> height_ratios{kNaN, kNaN, kNaN};  // anterior, middle, posterior / reference
  double wedge_ratio = kNaN, biconcave_ratio = kNaN, crush_ratio = kNaN;
  double height_loss = kNaN;
  int genant_grade = -1;
  HuStats roi;
  double bmd_mg_cm3 = kNaN;
  int acr_class = -1;  // osteonet::clinical::BoneClass
  std::vector<std::string> flags;
  std::array<int64_t, 3> crop_lo{0, 0, 0};
  Mask3 body_mask, roi_mask;  // over the crop starting at crop_lo
};

namespace detail {

inline double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

inline bool voxel_axes_orthogonal(const VoxelGeometry& g) {
  for (std::size_t a = 0; a < 3; ++a)
    for (std::size_t b = a + 1; b < 3; ++b)
      if (std::abs(dot(g.axis(a), g.axis(b))) > 1e-3 * g.spacing()(a) * g.spacing()(b)) return false;
  return true;
}

/// True when the crop mask has a voxel on a face of the crop that is also a face of the array.
inline bool reaches_array_border(const Mask3& m, const std::array<int64_t, 3>& lo, const Shape3& shape) {
  const auto& sh = m.shape();
  for (std::size_t i = 0; i < sh[0]; ++i)
    for (std::size_t j = 0; j < sh[1]; ++j)
      for (std::size_t k = 0; k < sh[2]; ++k) {
        if (!m(i, j, k)) continue;
        const int64_t gi = lo[0] + i, gj = lo[1] + j, gk = lo[2] + k;
        if (gi == 0 || gj == 0 || gk == 0 || gi == static_cast<int64_t>(shape[0]) - 1 ||
            gj == static_cast<int64_t>(shape[1]) - 1 || gk == static_cast<int64_t>(shape[2]) - 1)
          return true;
      }
  return false;
}

/// Unit tangent at p0 of the parabola through p0, p1, p2, parameterised by chord length (so unequal
/// spacing of the vertebrae does not tilt it), pointing from p0 towards p1.
inline Vec3 end_tangent(const Vec3& p0, const Vec3& p1, const Vec3& p2) {
  const double t1 = norm(Vec3(p1 - p0)), t2 = t1 + norm(Vec3(p2 - p1));
  const Vec3 d = -(t1 + t2) / (t1 * t2) * p0 + t2 / (t1 * (t2 - t1)) * p1 - t1 / (t2 * (t2 - t1)) * p2;
  return normalized(d);
}

/// Unit tangent, pointing from q1 towards q2, of the parabola through q1, q2, q3 (chord-length
/// parameters 0, t2, t3) at parameter -d: d before q1, on the far side from q2.
inline Vec3 extrapolated_tangent(const Vec3& q1, const Vec3& q2, const Vec3& q3, double d) {
  const double t1 = 0.0, t2 = norm(Vec3(q2 - q1)), t3 = t2 + norm(Vec3(q3 - q2)), x = -d;
  const double l1 = ((x - t2) + (x - t3)) / ((t1 - t2) * (t1 - t3));
  const double l2 = ((x - t1) + (x - t3)) / ((t2 - t1) * (t2 - t3));
  const double l3 = ((x - t1) + (x - t2)) / ((t3 - t1) * (t3 - t2));
  return normalized(Vec3(l1 * q1 + l2 * q2 + l3 * q3));
}

template <typename T>
void check_contiguous(const T& a, const char* what) {
  OSTEONET_CHECK(a.dimension() == 3, "measure_vertebrae: ", what, " must be 3-D, got ", a.dimension(), " dimensions");
}

}  // namespace detail

/// Measures the vertebrae `order` (label values from head to feet; absent ones are skipped) on `hu`
/// (HU, row-major contiguous) and `labels` (same shape), with an optional body mask `body` (nullptr
/// for none) and the geometry `g`. Raw-pointer entry point; see the xtensor overload below.
template <typename H, typename L, typename B>
std::vector<VertebraResult> measure_vertebrae(const H* hu, const L* labels, const B* body, const VoxelGeometry& g,
                                              const std::vector<int64_t>& order, const ScreenOptions& opt,
                                              std::map<int64_t, LabelStats>* label_stats_out = nullptr) {
  opt.check();
  OSTEONET_CHECK(!order.empty(), "measure_vertebrae: the spine order must name at least one label, got an empty order");
  const Shape3& shape = g.shape();
  const auto stats = label_stats(labels, shape);
  if (label_stats_out) *label_stats_out = stats;
  const std::array<double, 3> spacing{g.spacing()(0), g.spacing()(1), g.spacing()(2)};
  const bool orthogonal = detail::voxel_axes_orthogonal(g);
  const std::ptrdiff_t s0 = static_cast<std::ptrdiff_t>(shape[1] * shape[2]), s1 = static_cast<std::ptrdiff_t>(shape[2]);

  // Pass 1: every vertebra present, in spine order: its crop, mask, centroid and body.
  struct Item {
    VertebraResult res;
    Mask3 vert, body;
    VoxelCloud vcloud, bcloud;
    Vec3 label_centroid, body_centroid;
    std::array<std::size_t, 3> cs{};
  };
  std::vector<Item> items;
  for (std::size_t p = 0; p < order.size(); ++p) {
    auto it = stats.find(order[p]);
    if (it == stats.end()) continue;
    const LabelStats& st = it->second;
    Item item;
    VertebraResult& res = item.res;
    res.label = order[p];
    res.position = static_cast<int64_t>(p);
    res.vertebra_voxels = st.count;
    res.vertebra_touches_border = st.touches_border;
    if (!orthogonal) res.flags.push_back("sheared_voxels");
    // Crop: the label's box plus one voxel where the array allows.
    std::array<int64_t, 3> lo, hi;
    for (int a = 0; a < 3; ++a)
      lo[a] = std::max<int64_t>(0, st.lo[a] - 1), hi[a] = std::min<int64_t>(static_cast<int64_t>(shape[a]) - 1, st.hi[a] + 1);
    item.cs = {static_cast<std::size_t>(hi[0] - lo[0] + 1), static_cast<std::size_t>(hi[1] - lo[1] + 1),
               static_cast<std::size_t>(hi[2] - lo[2] + 1)};
    res.crop_lo = lo;
    item.vert = xt::zeros<uint8_t>(item.cs);
    if (body) item.body = xt::zeros<uint8_t>(item.cs);
    for (std::size_t i = 0; i < item.cs[0]; ++i)
      for (std::size_t j = 0; j < item.cs[1]; ++j) {
        const std::ptrdiff_t off = (lo[0] + i) * s0 + (lo[1] + j) * s1 + lo[2];
        for (std::size_t k = 0; k < item.cs[2]; ++k) {
          const bool in = detail::as_label(labels[off + k]) == res.label;
          item.vert(i, j, k) = in;
          if (body) item.body(i, j, k) = in && static_cast<int64_t>(body[off + k]) == opt.body_value;
        }
      }
    item.vcloud = voxel_cloud(item.vert, lo, g);
    item.label_centroid = cloud_centroid(item.vcloud);
    items.push_back(std::move(item));
  }

  // The spine's local direction at vertebra t from the centroids of its neighbours in the list.
  auto spine_tangent = [&](std::size_t t, const std::vector<Vec3>& pts, const std::vector<bool>& usable, Vec3& dir,
                           std::string& source) {
    std::vector<double> steps;
    for (std::size_t u = 1; u < pts.size(); ++u)
      if (usable[u] && usable[u - 1]) steps.push_back(norm(Vec3(pts[u] - pts[u - 1])));
    const double max_step = steps.empty() ? 0.0 : 2.5 * detail::median_of(steps);
    // Usable points a and b, less than k typical steps apart (a longer jump is a gap in the spine).
    auto near = [&](std::size_t a, std::size_t b, double k) {
      return a < pts.size() && b < pts.size() && usable[a] && usable[b] && norm(Vec3(pts[a] - pts[b])) <= k * max_step;
    };
    const std::size_t none = pts.size();
    const std::size_t up1 = t >= 1 ? t - 1 : none, up2 = t >= 2 ? t - 2 : none, dn1 = t + 1, dn2 = t + 2;
    if (near(up1, dn1, 2.0)) {
      // Central chord: on a circular arc with equal spacing, parallel to the tangent at the middle.
      dir = normalized(Vec3(pts[up1] - pts[dn1])), source = "neighbours";
    } else if (t >= 3 && near(up1, t, 1.0) && near(up2, up1, 1.0) && near(t - 3, up2, 1.0)) {
      // End of a run with three neighbours: the parabola through the neighbours (not this vertebra,
      // whose centroid a deformity shifts), extrapolated to this vertebra's distance along the spine.
      dir = -detail::extrapolated_tangent(pts[up1], pts[up2], pts[t - 3], norm(Vec3(pts[t] - pts[up1]))),
      source = "neighbours";
    } else if (near(t, dn1, 1.0) && near(dn1, dn2, 1.0) && near(dn2, t + 3, 1.0)) {
      dir = detail::extrapolated_tangent(pts[dn1], pts[dn2], pts[t + 3], norm(Vec3(pts[t] - pts[dn1]))),
      source = "neighbours";
    } else if (near(up1, t, 1.0) && near(up2, up1, 1.0)) {
      // End of a run: the slope at this vertebra of the parabola through it and its two neighbours.
      dir = detail::end_tangent(pts[t], pts[up1], pts[up2]), source = "neighbours";
    } else if (near(t, dn1, 1.0) && near(dn1, dn2, 1.0)) {
      dir = -detail::end_tangent(pts[t], pts[dn1], pts[dn2]), source = "neighbours";
    } else if (near(up1, t, 1.0)) {
      dir = normalized(Vec3(pts[up1] - pts[t])), source = "neighbour";
    } else if (near(t, dn1, 1.0)) {
      dir = normalized(Vec3(pts[t] - pts[dn1])), source = "neighbour";
    } else {
      return false;
    }
    if (dir(2) < 0) dir = -dir;  // towards the head (RAS +S)
    return true;
  };

  // Bodies. A whole-vertebra mask is cut at the canal in a frame from the spine's direction: first
  // from the label centroids of the vertebrae not cut by the field of view (else the patient's axis)
  // and the patient's anterior axis; then once more in the frame of the first body (the spine's
  // direction from the bodies' centroids, the anterior axis from the body's cross-section).
  auto body_centroids = [&](std::vector<Vec3>& pts, std::vector<bool>& usable) {
    pts.clear(), usable.clear();
    for (auto& it : items) pts.push_back(it.body_centroid), usable.push_back(it.res.complete);
  };
  auto set_body = [&](Item& it) {
    VertebraResult& res = it.res;
    it.bcloud = voxel_cloud(it.body, res.crop_lo, g);
    res.body_voxels = static_cast<int64_t>(it.bcloud.size());
    res.complete = res.body_voxels > 0 && !detail::reaches_array_border(it.body, res.crop_lo, shape);
    if (res.body_voxels > 0) it.body_centroid = cloud_centroid(it.bcloud);
  };
  const bool derive = !body && !opt.labels_are_bodies;
  std::vector<Vec3> derived_with(items.size(), Vec3{0.0, 0.0, 1.0});
  {
    std::vector<Vec3> pts;
    std::vector<bool> usable;
    for (auto& it : items) pts.push_back(it.label_centroid), usable.push_back(!it.res.vertebra_touches_border);
    for (std::size_t t = 0; t < items.size(); ++t) {
      Item& it = items[t];
      if (body) {
        it.res.body_source = "body_mask";
      } else if (opt.labels_are_bodies) {
        it.body = it.vert, it.res.body_source = "labels";
      } else {
        VertebraFrame f;
        spine_tangent(t, pts, usable, f.superior, f.superior_source);
        f.centroid = it.label_centroid;
        patient_anterior(f);
        derived_with[t] = f.superior;
        it.body = derive_body(it.vert, it.vcloud, it.res.crop_lo, g, f, it.res.body_source);
      }
      set_body(it);
    }
  }
  if (derive) {
    std::vector<Vec3> pts;
    std::vector<bool> usable;
    body_centroids(pts, usable);
    for (std::size_t t = 0; t < items.size(); ++t) {
      Item& it = items[t];
      if (it.res.body_voxels < 10) continue;
      VertebraFrame f;
      if (!spine_tangent(t, pts, usable, f.superior, f.superior_source)) f.superior = derived_with[t];
      f.centroid = it.body_centroid;
      refine_anterior(it.bcloud, f);
      f.centroid = it.label_centroid;
      it.body = derive_body(it.vert, it.vcloud, it.res.crop_lo, g, f, it.res.body_source);
      set_body(it);
    }
  }
  for (auto& it : items) {
    VertebraResult& res = it.res;
    if (res.body_voxels == 0) {
      res.flags.push_back("no_body");
      continue;
    }
    if (!res.complete) res.flags.push_back("incomplete");
    if (derive) {
      const double fraction = static_cast<double>(res.body_voxels) / static_cast<double>(res.vertebra_voxels);
      if (fraction < 0.2 || fraction > 0.97) res.flags.push_back("body_derivation_doubtful");
      if (res.body_source == "profile") res.flags.push_back("canal_not_found");
    }
  }

  // Pass 2: each body's frame from the complete bodies' centroids, then heights and the ROI.
  std::vector<Vec3> pts;
  std::vector<bool> usable;
  body_centroids(pts, usable);
  std::vector<VertebraResult> results;
  results.reserve(items.size());
  for (std::size_t t = 0; t < items.size(); ++t) {
    Item& it = items[t];
    VertebraResult& res = it.res;
    if (res.body_voxels == 0) {
      results.push_back(std::move(res));
      continue;
    }
    VertebraFrame frame;
    frame.centroid = it.body_centroid;
    if (!spine_tangent(t, pts, usable, frame.superior, frame.superior_source) && it.bcloud.size() >= 10) {
      // A lone body: its shortest axis, when it is clearly the shortest and within 45 degrees of the
      // patient's superior axis (bodies are wider and deeper than high).
      Vec3 ev;
      Mat3 evec;
      symmetric_eigen3(cloud_covariance(it.bcloud, frame.centroid), ev, evec);
      Vec3 minor{evec(0, 0), evec(1, 0), evec(2, 0)};
      if (minor(2) < 0) minor = -minor;
      if (ev(0) < 0.8 * ev(1) && minor(2) > std::cos(45.0 * M_PI / 180.0))
        frame.superior = normalized(minor), frame.superior_source = "body_shape";
    }
    refine_anterior(it.bcloud, frame);
    res.frame = frame;
    if (res.complete) {
      res.body_volume_ml = res.body_voxels * g.voxel_volume_mm3() / 1000.0;
      res.heights = column_heights(it.bcloud, g, frame, opt.column_inset, opt.column_half_width_mm, opt.lateral_half_width_mm);
      if (std::isnan(res.heights.heights_mm[0])) res.flags.push_back("heights_not_measurable");
    }

    // Trabecular ROI and its HU.
    Mask3 roi = erode_by_mm(it.body, spacing, opt.roi_margin_mm);
    const auto& lo = res.crop_lo;
    std::vector<double> values;
    values.reserve(static_cast<std::size_t>(xt::sum(xt::cast<int64_t>(roi))()));
    for (std::size_t i = 0; i < it.cs[0]; ++i)
      for (std::size_t j = 0; j < it.cs[1]; ++j) {
        const std::ptrdiff_t off = (lo[0] + i) * s0 + (lo[1] + j) * s1 + lo[2];
        for (std::size_t k = 0; k < it.cs[2]; ++k)
          if (roi(i, j, k)) values.push_back(static_cast<double>(hu[off + k]));
      }
    res.roi = hu_stats(std::move(values));
    if (res.roi.count == 0) {
      res.flags.push_back("roi_empty");
    } else {
      if (res.roi.count < opt.min_roi_voxels) res.flags.push_back("roi_small");
      OSTEONET_CHECK(std::isfinite(res.roi.mean), "measure_vertebrae: the CT has NaN or inf values inside vertebra label=",
                     res.label);
      res.bmd_mg_cm3 = opt.calibration(res.roi.mean);
      if (res.bmd_mg_cm3 < 0) res.flags.push_back("bmd_below_zero");
      res.acr_class = static_cast<int>(clinical::acr_class(std::max(0.0, res.bmd_mg_cm3)));
    }
    res.body_mask = std::move(it.body);
    res.roi_mask = std::move(roi);
    results.push_back(std::move(res));
  }

  // Reference heights from the neighbours, ratios and Genant grades.
  for (auto& r : results) {
    if (!r.complete || std::isnan(r.heights.heights_mm[0])) continue;
    const auto& h = r.heights.heights_mm;
    const double own = std::max({h[0], h[1], h[2]});
    std::vector<double> neigh;
    for (const auto& o : results)
      if (&o != &r && o.complete && !std::isnan(o.heights.heights_mm[0]) &&
          std::abs(o.position - r.position) <= opt.neighbour_span) {
        const auto& oh = o.heights.heights_mm;
        neigh.push_back(std::max({oh[0], oh[1], oh[2]}));
      }
    double ref = own;
    r.reference_source = "own";
    if (!neigh.empty()) {
      const double m = detail::median_of(neigh);
      r.crush_ratio = h[2] / m;
      if (m > own) ref = m, r.reference_source = "neighbours";
    } else {
      r.flags.push_back("no_neighbour_reference");
    }
    r.reference_height_mm = ref;
    for (int c = 0; c < 3; ++c) r.height_ratios[c] = h[c] / ref;
    r.wedge_ratio = h[0] / h[2];
    r.biconcave_ratio = h[1] / h[2];
    r.height_loss = std::max(0.0, 1.0 - std::min({r.height_ratios[0], r.height_ratios[1], r.height_ratios[2]}));
    r.genant_grade = genant_grade(r.height_loss);
  }
  return results;
}

/// xtensor entry point: `hu` and `labels` (and `body`, if given) are row-major 3-D xtensor
/// containers or adaptors of the same shape; `affine` is the 4 x 4 voxel -> RAS mm matrix, row-major.
template <class HU, class LAB, class BODY = xt::xtensor<uint8_t, 3>>
std::vector<VertebraResult> measure_vertebrae(const HU& hu, const LAB& labels, const std::array<double, 16>& affine,
                                              const std::vector<int64_t>& order, const ScreenOptions& opt = {},
                                              const BODY* body = nullptr) {
  detail::check_contiguous(hu, "hu");
  detail::check_contiguous(labels, "labels");
  const Shape3 shape{hu.shape()[0], hu.shape()[1], hu.shape()[2]};
  OSTEONET_CHECK(std::equal(shape.begin(), shape.end(), labels.shape().begin()),
                 "measure_vertebrae: labels must have the CT's shape, got labels ", labels.shape()[0], "x",
                 labels.shape()[1], "x", labels.shape()[2], " and CT ", shape[0], "x", shape[1], "x", shape[2]);
  if (body) {
    detail::check_contiguous(*body, "body");
    OSTEONET_CHECK(std::equal(shape.begin(), shape.end(), body->shape().begin()),
                   "measure_vertebrae: the body mask must have the CT's shape, got ", body->shape()[0], "x",
                   body->shape()[1], "x", body->shape()[2]);
  }
  OSTEONET_CHECK(hu.layout() == xt::layout_type::row_major && labels.layout() == xt::layout_type::row_major,
                 "measure_vertebrae: arrays must be row-major");
  const VoxelGeometry g(shape, affine);
  return measure_vertebrae(hu.data(), labels.data(), body ? body->data() : static_cast<const typename BODY::value_type*>(nullptr),
                           g, order, opt);
}

}  // namespace osteonet::screen
