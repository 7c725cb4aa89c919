// Detection metrics: box IoU, COCO mAP/mAR (a faithful port of pycocotools' COCOeval evaluateImg/accumulate/
// summarize for boxes), Pascal VOC AP (all-point and VOC2007 11-point), and the IoU ≥ 0.5 counts and formulas
// of DSNet (Faster R-CNN + dual-selective attention on lumbar CT; seed paper 000).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::metrics {

/// Pairwise IoU of boxes (x1, y1, x2, y2): (N, 4) × (M, 4) -> (N, M), intersection over union of areas w·h.
inline torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b) {
  OSTEONET_CHECK(a.dim() == 2 && a.size(1) == 4 && b.dim() == 2 && b.size(1) == 4,
                 "box_iou: boxes must be (N, 4) and (M, 4), got shapes ", a.sizes(), " and ", b.sizes());
  const auto x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  const auto area_a = (x.select(1, 2) - x.select(1, 0)) * (x.select(1, 3) - x.select(1, 1));
  const auto area_b = (y.select(1, 2) - y.select(1, 0)) * (y.select(1, 3) - y.select(1, 1));
  const auto lt = torch::max(x.unsqueeze(1).narrow(2, 0, 2), y.unsqueeze(0).narrow(2, 0, 2));
  const auto rb = torch::min(x.unsqueeze(1).narrow(2, 2, 2), y.unsqueeze(0).narrow(2, 2, 2));
  const auto wh = (rb - lt).clamp_min(0);
  const auto inter = wh.select(2, 0) * wh.select(2, 1);
  const auto uni = area_a.unsqueeze(1) + area_b.unsqueeze(0) - inter;
  return torch::where(uni > 0, inter / uni.clamp_min(std::numeric_limits<double>::min()), torch::zeros_like(inter));
}

/// One image's detections (boxes (D, 4) xyxy, scores (D), labels (D)) or ground truth (scores undefined).
struct BoxSet {
  torch::Tensor boxes, scores, labels;
};

/// The summary of an evaluation; -1 marks a value that is undefined (no ground truth in its range).
struct DetectionResult {
  double map = -1, map_50 = -1, map_75 = -1, map_small = -1, map_medium = -1, map_large = -1;
  double mar_1 = -1, mar_10 = -1, mar_100 = -1, mar_small = -1, mar_medium = -1, mar_large = -1;
  std::vector<int64_t> classes;
  std::vector<double> map_per_class, mar_100_per_class;
  torch::Tensor precision;  ///< COCO: (T, R, K, A, M) as COCOeval.eval["precision"]; VOC: undefined
  torch::Tensor recall;     ///< COCO: (T, K, A, M) as COCOeval.eval["recall"]; VOC: (T, K) final recall
  std::vector<double> iou_thresholds;
};

namespace detail {

struct Boxes {  // one image, float64 plain arrays
  std::vector<double> x1, y1, x2, y2, score, area;
  std::vector<int64_t> label;
  std::size_t size() const { return label.size(); }
};

inline Boxes to_boxes(const BoxSet& s, bool with_scores, const std::string& where, std::size_t img) {
  Boxes b;
  OSTEONET_CHECK(s.boxes.defined() && s.labels.defined(), where, ": image ", img, " lacks boxes or labels");
  OSTEONET_CHECK(s.boxes.dim() == 2 && s.boxes.size(1) == 4, where, ": boxes must be (N, 4), got shape ",
                 s.boxes.sizes(), " in image ", img);
  const int64_t n = s.boxes.size(0);
  OSTEONET_CHECK(s.labels.dim() == 1 && s.labels.size(0) == n, where, ": labels must be (N,) matching boxes, got ",
                 s.labels.sizes(), " for ", n, " boxes in image ", img);
  auto bx = s.boxes.to(torch::kFloat64).contiguous();
  auto lb = s.labels.to(torch::kInt64).contiguous();
  OSTEONET_CHECK(torch::isfinite(bx).all().item<bool>(), where, ": boxes must be finite, got NaN or inf in image ", img);
  const auto* p = bx.data_ptr<double>();
  const auto* l = lb.data_ptr<int64_t>();
  const double* sc = nullptr;
  torch::Tensor st;
  if (with_scores) {
    OSTEONET_CHECK(s.scores.defined() && s.scores.dim() == 1 && s.scores.size(0) == n, where,
                   ": scores must be (N,) matching boxes in image ", img);
    st = s.scores.to(torch::kFloat64).contiguous();
    OSTEONET_CHECK(torch::isfinite(st).all().item<bool>(), where, ": scores must be finite, got NaN or inf in image ", img);
    sc = st.data_ptr<double>();
  }
  for (int64_t i = 0; i < n; ++i) {
    OSTEONET_CHECK(p[4 * i + 2] >= p[4 * i] && p[4 * i + 3] >= p[4 * i + 1], where,
                   ": boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, got box ", i, " of image ", img);
    OSTEONET_CHECK(l[i] >= 0, where, ": labels must be non-negative, got ", l[i], " in image ", img);
    b.x1.push_back(p[4 * i]);
    b.y1.push_back(p[4 * i + 1]);
    b.x2.push_back(p[4 * i + 2]);
    b.y2.push_back(p[4 * i + 3]);
    b.area.push_back((p[4 * i + 2] - p[4 * i]) * (p[4 * i + 3] - p[4 * i + 1]));
    b.label.push_back(l[i]);
    b.score.push_back(sc ? sc[i] : 0.0);
  }
  return b;
}

inline double iou_of(const Boxes& d, std::size_t i, const Boxes& g, std::size_t j) {
  const double w = std::min(d.x2[i], g.x2[j]) - std::max(d.x1[i], g.x1[j]);
  const double h = std::min(d.y2[i], g.y2[j]) - std::max(d.y1[i], g.y1[j]);
  if (w <= 0 || h <= 0) return 0.0;
  const double inter = w * h, uni = d.area[i] + g.area[j] - inter;
  return uni > 0 ? inter / uni : 0.0;
}

/// NumPy's linspace(lo, hi, num): i·step + lo with the last value exactly hi (pycocotools' thresholds).
inline std::vector<double> linspace(double lo, double hi, int64_t num) {
  std::vector<double> v(num);
  const double step = (hi - lo) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) v[i] = static_cast<double>(i) * step + lo;
  v[num - 1] = hi;
  return v;
}

/// Indices of boxes of `label`, in descending score order (stable), at most max_n of them.
inline std::vector<std::size_t> of_class(const Boxes& b, int64_t label, bool by_score, std::size_t max_n) {
  std::vector<std::size_t> idx;
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b.label[i] == label) idx.push_back(i);
  if (by_score) std::stable_sort(idx.begin(), idx.end(), [&](std::size_t p, std::size_t q) { return b.score[p] > b.score[q]; });
  if (idx.size() > max_n) idx.resize(max_n);
  return idx;
}

inline void check_inputs(const std::vector<BoxSet>& preds, const std::vector<BoxSet>& targets, const std::string& where) {
  OSTEONET_CHECK(preds.size() == targets.size(), where, ": predictions and targets must list the same images, got ",
                 preds.size(), " predictions and ", targets.size(), " targets");
  OSTEONET_CHECK(!targets.empty(), where, ": needs at least one image, got 0 images");
}

/// Predictions and targets of every image, converted and checked (detections carry scores).
inline std::pair<std::vector<Boxes>, std::vector<Boxes>> to_box_lists(const std::vector<BoxSet>& preds,
                                                                     const std::vector<BoxSet>& targets) {
  std::vector<Boxes> dts, gts;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    dts.push_back(to_boxes(preds[i], true, "detection_map", i));
    gts.push_back(to_boxes(targets[i], false, "detection_map", i));
  }
  return {std::move(dts), std::move(gts)};
}

inline std::vector<int64_t> class_list(const std::vector<Boxes>& d, const std::vector<Boxes>& g) {
  std::vector<int64_t> c;
  for (const auto* v : {&d, &g})
    for (const auto& b : *v) c.insert(c.end(), b.label.begin(), b.label.end());
  std::sort(c.begin(), c.end());
  c.erase(std::unique(c.begin(), c.end()), c.end());
  return c;
}

}  // namespace detail

namespace detail {
/// Every IoU threshold in [0, 1] (NaN refused too).
inline void check_iou_thresholds(const std::vector<double>& thresholds) {
  for (double t : thresholds)
    OSTEONET_CHECK(t >= 0 && t <= 1, "detection_map: IoU thresholds must be in [0, 1], got iou_threshold=", t);
}
}  // namespace detail

/// COCO evaluation of boxes, the algorithm of pycocotools' COCOeval (iouType "bbox"): per image and class,
/// detections sorted by score (stable) and cut to max_dets.back(), greedy matching at each IoU threshold to the
/// best still-unmatched ground truth with IoU ≥ threshold (non-ignored ground truth first), ground truth outside
/// an area range ignored, unmatched detections outside it ignored; 101-point interpolated precision with the
/// precision envelope; recall at max_dets. Area = box w·h; ranges all, small [0, 32²], medium [32², 96²],
/// large [96², 1e10]. Crowd annotations (iscrowd) are not supported. Classes: the labels present in either input.
inline DetectionResult coco_evaluate(const std::vector<BoxSet>& preds, const std::vector<BoxSet>& targets,
                                     std::vector<double> iou_thresholds = {},
                                     std::vector<int64_t> max_dets = {1, 10, 100}) {
  detail::check_inputs(preds, targets, "detection_map");
  OSTEONET_CHECK(max_dets.size() == 3 && max_dets[0] > 0 && max_dets[0] <= max_dets[1] && max_dets[1] <= max_dets[2],
                 "detection_map: max_dets must be three increasing positive counts, got ", max_dets.size(), " values");
  if (iou_thresholds.empty()) iou_thresholds = detail::linspace(0.5, 0.95, 10);
  detail::check_iou_thresholds(iou_thresholds);
  const auto rec_thrs = detail::linspace(0.0, 1.0, 101);
  const std::vector<std::pair<double, double>> areas = {{0, 1e10}, {0, 32.0 * 32}, {32.0 * 32, 96.0 * 96}, {96.0 * 96, 1e10}};
  const std::size_t I = targets.size(), T = iou_thresholds.size(), R = rec_thrs.size(), A = areas.size(), M = 3;
  const auto [dts, gts] = detail::to_box_lists(preds, targets);
  const auto classes = detail::class_list(dts, gts);
  const std::size_t K = classes.size();
  const auto maxdet = static_cast<std::size_t>(max_dets.back());

  // evaluateImg for every (class, area, image): scores, matched / ignored flags per threshold, non-ignored GT count.
  struct EvalImg {
    bool present = false;
    std::vector<double> scores;
    std::vector<uint8_t> matched, ignored;  // T × D
    int64_t n_gt = 0;                       // ground truth not ignored
  };
  std::vector<EvalImg> evals(K * A * I);
  for (std::size_t k = 0; k < K; ++k) {
    for (std::size_t i = 0; i < I; ++i) {
      const auto& dt = dts[i];
      const auto& gt = gts[i];
      const auto di = detail::of_class(dt, classes[k], true, maxdet);
      const auto gi0 = detail::of_class(gt, classes[k], false, gt.size());
      if (di.empty() && gi0.empty()) continue;
      for (std::size_t a = 0; a < A; ++a) {
        auto& e = evals[(k * A + a) * I + i];
        e.present = true;
        const std::size_t D = di.size(), G = gi0.size();
        std::vector<uint8_t> g_ig(G);
        for (std::size_t j = 0; j < G; ++j) {
          const double ar = gt.area[gi0[j]];
          g_ig[j] = ar < areas[a].first || ar > areas[a].second;
        }
        std::vector<std::size_t> order(G);  // non-ignored ground truth first (stable)
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::size_t p, std::size_t q) { return g_ig[p] < g_ig[q]; });
        std::vector<std::size_t> gi(G);
        std::vector<uint8_t> gig(G);
        for (std::size_t j = 0; j < G; ++j) {
          gi[j] = gi0[order[j]];
          gig[j] = g_ig[order[j]];
          e.n_gt += gig[j] == 0;
        }
        std::vector<double> ious(D * G);
        for (std::size_t d = 0; d < D; ++d)
          for (std::size_t j = 0; j < G; ++j) ious[d * G + j] = detail::iou_of(dt, di[d], gt, gi[j]);
        e.scores.resize(D);
        for (std::size_t d = 0; d < D; ++d) e.scores[d] = dt.score[di[d]];
        e.matched.assign(T * D, 0);
        e.ignored.assign(T * D, 0);
        for (std::size_t t = 0; t < T && G > 0 && D > 0; ++t) {
          std::vector<uint8_t> gtm(G, 0);
          for (std::size_t d = 0; d < D; ++d) {
            double iou = std::min(iou_thresholds[t], 1 - 1e-10);
            int64_t m = -1;
            for (std::size_t j = 0; j < G; ++j) {
              if (gtm[j]) continue;
              if (m > -1 && gig[m] == 0 && gig[j] == 1) break;
              if (ious[d * G + j] < iou) continue;
              iou = ious[d * G + j];
              m = static_cast<int64_t>(j);
            }
            if (m == -1) continue;
            e.ignored[t * D + d] = gig[m];
            e.matched[t * D + d] = 1;
            gtm[m] = 1;
          }
        }
        for (std::size_t t = 0; t < T; ++t)
          for (std::size_t d = 0; d < D; ++d) {
            const double ar = dt.area[di[d]];
            if (!e.matched[t * D + d] && (ar < areas[a].first || ar > areas[a].second)) e.ignored[t * D + d] = 1;
          }
      }
    }
  }

  // accumulate: precision (T, R, K, A, M) and recall (T, K, A, M), -1 where undefined.
  auto precision = torch::full({(int64_t)T, (int64_t)R, (int64_t)K, (int64_t)A, (int64_t)M}, -1.0, torch::kFloat64);
  auto recall = torch::full({(int64_t)T, (int64_t)K, (int64_t)A, (int64_t)M}, -1.0, torch::kFloat64);
  auto pa = precision.accessor<double, 5>();
  auto ra = recall.accessor<double, 4>();
  for (std::size_t k = 0; k < K; ++k) {
    for (std::size_t mi = 0; mi < M; ++mi) {
      const auto md = static_cast<std::size_t>(max_dets[mi]);
      // The concatenation order (image, then rank) and a stable sort by descending score, as pycocotools.
      std::vector<std::pair<std::size_t, std::size_t>> refs;  // (image, rank)
      std::vector<double> sc;
      for (std::size_t i = 0; i < I; ++i) {
        const auto& e = evals[(k * A + 0) * I + i];
        for (std::size_t d = 0; d < std::min(md, e.scores.size()); ++d) {
          refs.emplace_back(i, d);
          sc.push_back(e.scores[d]);
        }
      }
      std::vector<std::size_t> order(refs.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](std::size_t p, std::size_t q) { return sc[p] > sc[q]; });
      for (std::size_t a = 0; a < A; ++a) {
        int64_t npig = 0;
        bool any = false;
        for (std::size_t i = 0; i < I; ++i) {
          const auto& e = evals[(k * A + a) * I + i];
          if (e.present) { any = true; npig += e.n_gt; }
        }
        if (!any || npig == 0) continue;
        const std::size_t nd_all = order.size();
        for (std::size_t t = 0; t < T; ++t) {
          std::vector<double> rc, pr;
          rc.reserve(nd_all);
          pr.reserve(nd_all);
          double tp = 0, fp = 0;
          for (std::size_t o : order) {
            const auto [i, d] = refs[o];
            const auto& e = evals[(k * A + a) * I + i];
            const std::size_t D = e.scores.size();
            const bool ig = e.ignored[t * D + d], mt = e.matched[t * D + d];
            if (mt && !ig) tp += 1;
            if (!mt && !ig) fp += 1;
            rc.push_back(tp / static_cast<double>(npig));
            pr.push_back(tp / (fp + tp + std::numeric_limits<double>::epsilon()));
          }
          const std::size_t nd = rc.size();
          ra[t][k][a][mi] = nd ? rc.back() : 0.0;
          for (std::size_t i = nd; i-- > 1;)
            if (pr[i] > pr[i - 1]) pr[i - 1] = pr[i];
          for (std::size_t r = 0; r < R; ++r) {
            const auto pi = static_cast<std::size_t>(std::lower_bound(rc.begin(), rc.end(), rec_thrs[r]) - rc.begin());
            if (pi >= nd) {
              for (std::size_t r2 = r; r2 < R; ++r2) pa[t][r2][k][a][mi] = 0.0;
              break;
            }
            pa[t][r][k][a][mi] = pr[pi];
          }
        }
      }
    }
  }

  // summarize
  DetectionResult out;
  out.classes = classes;
  out.iou_thresholds = iou_thresholds;
  auto find_t = [&](double v) -> int64_t {
    for (std::size_t t = 0; t < T; ++t)
      if (std::fabs(iou_thresholds[t] - v) < 1e-12) return static_cast<int64_t>(t);
    return -1;
  };
  auto mean_valid = [](const torch::Tensor& s) {
    const auto v = s.masked_select(s > -1);
    return v.numel() == 0 ? -1.0 : v.mean().item<double>();
  };
  auto ap = [&](int64_t t, int64_t a, int64_t m) {
    auto s = precision.select(4, m).select(3, a);  // (T, R, K)
    if (t >= 0) s = s.select(0, t);
    return mean_valid(s);
  };
  auto ar = [&](int64_t a, int64_t m) { return mean_valid(recall.select(3, m).select(2, a)); };
  out.map = ap(-1, 0, 2);
  const int64_t t50 = find_t(0.5), t75 = find_t(0.75);
  if (t50 >= 0) out.map_50 = ap(t50, 0, 2);
  if (t75 >= 0) out.map_75 = ap(t75, 0, 2);
  out.map_small = ap(-1, 1, 2);
  out.map_medium = ap(-1, 2, 2);
  out.map_large = ap(-1, 3, 2);
  out.mar_1 = ar(0, 0);
  out.mar_10 = ar(0, 1);
  out.mar_100 = ar(0, 2);
  out.mar_small = ar(1, 2);
  out.mar_medium = ar(2, 2);
  out.mar_large = ar(3, 2);
  for (std::size_t k = 0; k < K; ++k) {
    out.map_per_class.push_back(mean_valid(precision.select(4, 2).select(3, 0).select(2, k)));
    out.mar_100_per_class.push_back(mean_valid(recall.select(3, 2).select(2, 0).select(1, k)));
  }
  out.precision = precision;
  out.recall = recall;
  return out;
}

/// Pascal VOC AP per class: detections of a class over all images by descending score (stable), each matched to
/// the ground truth of highest IoU in its image; a hit when IoU ≥ threshold and that ground truth is still free,
/// otherwise a false positive (VOCevaldet). AP: "voc" all-point (VOC2010+, area under the precision envelope),
/// "voc07" 11-point (mean of max precision at recall ≥ 0, 0.1, …, 1). map averages classes with ground truth;
/// boxes are continuous coordinates (no +1 pixel), no "difficult" flags.
inline DetectionResult voc_evaluate(const std::vector<BoxSet>& preds, const std::vector<BoxSet>& targets,
                                    const std::string& method = "voc", std::vector<double> iou_thresholds = {}) {
  detail::check_inputs(preds, targets, "detection_map");
  OSTEONET_CHECK(method == "voc" || method == "voc07", "detection_map: VOC method must be 'voc' or 'voc07', got '", method, "'");
  if (iou_thresholds.empty()) iou_thresholds = {0.5};
  detail::check_iou_thresholds(iou_thresholds);
  const std::size_t I = targets.size(), T = iou_thresholds.size();
  const auto [dts, gts] = detail::to_box_lists(preds, targets);
  const auto classes = detail::class_list(dts, gts);
  const std::size_t K = classes.size();
  auto aps = torch::full({(int64_t)T, (int64_t)K}, -1.0, torch::kFloat64);
  auto recall = torch::full({(int64_t)T, (int64_t)K}, -1.0, torch::kFloat64);
  for (std::size_t k = 0; k < K; ++k) {
    std::vector<std::vector<std::size_t>> g_of(I);
    std::size_t npos = 0;
    std::vector<std::pair<std::size_t, std::size_t>> refs;  // (image, box)
    std::vector<double> sc;
    for (std::size_t i = 0; i < I; ++i) {
      g_of[i] = detail::of_class(gts[i], classes[k], false, gts[i].size());
      npos += g_of[i].size();
      for (auto d : detail::of_class(dts[i], classes[k], false, dts[i].size())) {
        refs.emplace_back(i, d);
        sc.push_back(dts[i].score[d]);
      }
    }
    if (npos == 0) continue;
    std::vector<std::size_t> order(refs.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t p, std::size_t q) { return sc[p] > sc[q]; });
    for (std::size_t t = 0; t < T; ++t) {
      std::vector<std::vector<uint8_t>> used(I);
      for (std::size_t i = 0; i < I; ++i) used[i].assign(g_of[i].size(), 0);
      std::vector<double> rec, prec;
      double tp = 0, fp = 0;
      for (auto o : order) {
        const auto [i, d] = refs[o];
        double best = -1;
        int64_t jm = -1;
        for (std::size_t j = 0; j < g_of[i].size(); ++j) {
          const double v = detail::iou_of(dts[i], d, gts[i], g_of[i][j]);
          if (v > best) { best = v; jm = static_cast<int64_t>(j); }
        }
        if (jm >= 0 && best >= iou_thresholds[t] && !used[i][jm]) {
          used[i][jm] = 1;
          tp += 1;
        } else {
          fp += 1;
        }
        rec.push_back(tp / static_cast<double>(npos));
        prec.push_back(tp / std::max(tp + fp, std::numeric_limits<double>::min()));
      }
      double ap = 0;
      if (method == "voc07") {
        for (int s = 0; s <= 10; ++s) {
          const double thr = s * 0.1;
          double p = 0;
          for (std::size_t i = 0; i < rec.size(); ++i)
            if (rec[i] >= thr) p = std::max(p, prec[i]);
          ap += p;
        }
        ap /= 11.0;  // the sum first: eleven precisions of 1 give exactly 1 (p / 11 summed gave 1 + 2e-16)
      } else {
        std::vector<double> mrec{0.0}, mpre{0.0};
        mrec.insert(mrec.end(), rec.begin(), rec.end());
        mpre.insert(mpre.end(), prec.begin(), prec.end());
        mrec.push_back(1.0);
        mpre.push_back(0.0);
        for (std::size_t i = mpre.size() - 1; i-- > 0;) mpre[i] = std::max(mpre[i], mpre[i + 1]);
        for (std::size_t i = 1; i < mrec.size(); ++i)
          if (mrec[i] != mrec[i - 1]) ap += (mrec[i] - mrec[i - 1]) * mpre[i];
      }
      aps[t][k] = ap;
      recall[t][k] = rec.empty() ? 0.0 : rec.back();
    }
  }
  DetectionResult out;
  out.classes = classes;
  out.iou_thresholds = iou_thresholds;
  auto mean_valid = [](const torch::Tensor& s) {
    const auto v = s.masked_select(s > -1);
    return v.numel() == 0 ? -1.0 : v.mean().item<double>();
  };
  out.map = mean_valid(aps);
  for (std::size_t t = 0; t < T; ++t) {
    if (std::fabs(iou_thresholds[t] - 0.5) < 1e-12) out.map_50 = mean_valid(aps[t]);
    if (std::fabs(iou_thresholds[t] - 0.75) < 1e-12) out.map_75 = mean_valid(aps[t]);
  }
  out.mar_100 = mean_valid(recall);
  for (std::size_t k = 0; k < K; ++k) {
    out.map_per_class.push_back(mean_valid(aps.select(1, k)));
    out.mar_100_per_class.push_back(mean_valid(recall.select(1, k)));
  }
  out.recall = recall;
  return out;
}

/// Counts at one IoU threshold, the way DSNet scores detections: a prediction (score ≥ score_threshold) is correct
/// when it overlaps a ground-truth box of the same class with IoU ≥ iou_threshold (greedy one-to-one matching by
/// descending score, best free IoU); every other prediction is a false positive, every unmatched box a miss.
struct DetectionCounts {
  int64_t tp = 0, fp = 0, fn = 0, n_predictions = 0, n_targets = 0;
};

inline DetectionCounts detection_counts(const std::vector<BoxSet>& preds, const std::vector<BoxSet>& targets,
                                        double iou_threshold = 0.5, double score_threshold = 0.0) {
  detail::check_inputs(preds, targets, "detection_counts");
  OSTEONET_CHECK(iou_threshold >= 0 && iou_threshold <= 1, "detection_counts: iou_threshold must be in [0, 1], got ",
                 iou_threshold);
  DetectionCounts c;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const auto dt = detail::to_boxes(preds[i], true, "detection_counts", i);
    const auto gt = detail::to_boxes(targets[i], false, "detection_counts", i);
    std::vector<std::size_t> order;
    for (std::size_t d = 0; d < dt.size(); ++d)
      if (dt.score[d] >= score_threshold) order.push_back(d);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t p, std::size_t q) { return dt.score[p] > dt.score[q]; });
    std::vector<uint8_t> used(gt.size(), 0);
    for (auto d : order) {
      double best = iou_threshold;
      int64_t m = -1;
      for (std::size_t j = 0; j < gt.size(); ++j) {
        if (used[j] || gt.label[j] != dt.label[d]) continue;
        const double v = detail::iou_of(dt, d, gt, j);
        if (v >= best) { best = v; m = static_cast<int64_t>(j); }
      }
      if (m >= 0) { used[m] = 1; ++c.tp; } else { ++c.fp; }
    }
    c.n_predictions += static_cast<int64_t>(order.size());
    c.n_targets += static_cast<int64_t>(gt.size());
  }
  c.fn = c.n_targets - c.tp;
  return c;
}

/// DSNet's equation (3) verbatim, "Map = TP / (N (TP + FP))" with N the number of classes. NOT the standard mAP
/// (coco_evaluate / voc_evaluate); kept only to reproduce the paper's numbers.
inline double dsnet_paper_map(double tp, double fp, double n) {
  OSTEONET_CHECK(n > 0 && tp + fp > 0, "dsnet_paper_map: needs N > 0 and TP + FP > 0, got N=", n, " TP+FP=", tp + fp);
  return tp / (n * (tp + fp));
}

/// DSNet's equation (5) verbatim, "Acc = TP / (TP + TN + FN)". NOT the standard accuracy (TP + TN) / all.
inline double dsnet_paper_accuracy(double tp, double tn, double fn) {
  OSTEONET_CHECK(tp + tn + fn > 0, "dsnet_paper_accuracy: needs TP + TN + FN > 0, got 0");
  return tp / (tp + tn + fn);
}

}  // namespace osteonet::metrics
