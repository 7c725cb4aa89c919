// Classification metrics: confusion matrix, accuracy, precision/recall/specificity/NPV/F1 with scikit-learn's
// averaging and zero_division=0, ROC and precision-recall curves, ROC AUC, average precision, Youden's J.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/metrics/inputs.hpp"

namespace osteonet::metrics {

/// Confusion matrix C (K×K, int64): C[i][j] counts samples of true class i predicted as j (scikit-learn's layout).
/// Labels are integers in [0, K); K = num_classes, or max label + 1 when num_classes <= 0.
inline torch::Tensor confusion_matrix(const torch::Tensor& y_true, const torch::Tensor& y_pred,
                                      int64_t num_classes = -1) {
  const auto t = detail::labels_1d(y_true, "confusion_matrix", "y_true");
  const auto p = detail::labels_1d(y_pred, "confusion_matrix", "y_pred");
  detail::same_length(t, p, "confusion_matrix", "y_true", "y_pred");
  const int64_t mx = std::max(t.max().item<int64_t>(), p.max().item<int64_t>());
  if (num_classes <= 0) num_classes = mx + 1;
  OSTEONET_CHECK(mx < num_classes, "confusion_matrix: labels must be in [0, num_classes), got label ", mx,
                 " with num_classes=", num_classes);
  auto cm = torch::zeros({num_classes, num_classes}, torch::kInt64);
  auto* c = cm.data_ptr<int64_t>();
  const auto* tp = t.data_ptr<int64_t>();
  const auto* pp = p.data_ptr<int64_t>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) ++c[tp[i] * num_classes + pp[i]];
  return cm;
}

/// One-vs-rest rates computed from a confusion matrix.
enum class Rate { Precision, Recall, Specificity, NPV, F1 };

/// scikit-learn's `average` argument; None returns one value per label.
enum class Average { Binary, Macro, Micro, Weighted, None };

inline Average parse_average(const std::string& s) {
  if (s == "binary") return Average::Binary;
  if (s == "macro") return Average::Macro;
  if (s == "micro") return Average::Micro;
  if (s == "weighted") return Average::Weighted;
  if (s == "none" || s == "None") return Average::None;
  throw_unknown_name("metrics", "average", s, {"binary", "macro", "micro", "weighted", "none"});
}

inline Rate parse_rate(const std::string& s) {
  if (s == "precision" || s == "ppv") return Rate::Precision;
  if (s == "recall" || s == "sensitivity") return Rate::Recall;
  if (s == "specificity") return Rate::Specificity;
  if (s == "npv") return Rate::NPV;
  if (s == "f1" || s == "f1_score") return Rate::F1;
  throw_unknown_name("metrics", "rate", s, {"precision", "recall", "specificity", "npv", "f1"});
}

namespace detail {

inline double safe_div(double num, double den) { return den == 0.0 ? 0.0 : num / den; }

/// The rate from one-vs-rest counts, zero when its denominator is zero (scikit-learn's zero_division=0).
inline double rate_from_counts(Rate r, double tp, double fp, double fn, double tn) {
  switch (r) {
    case Rate::Precision: return safe_div(tp, tp + fp);
    case Rate::Recall: return safe_div(tp, tp + fn);
    case Rate::Specificity: return safe_div(tn, tn + fp);
    case Rate::NPV: return safe_div(tn, tn + fn);
    case Rate::F1: {
      const double p = safe_div(tp, tp + fp), rc = safe_div(tp, tp + fn);
      return p + rc == 0.0 ? 0.0 : 2.0 * p * rc / (p + rc);
    }
  }
  return 0.0;
}

inline torch::Tensor as_double_matrix(const torch::Tensor& cm, const std::string& where) {
  OSTEONET_CHECK(cm.dim() == 2 && cm.size(0) == cm.size(1) && cm.size(0) > 0, where,
                 ": confusion matrix must be square K×K with K >= 1, got shape=", cm.sizes());
  return cm.to(torch::kFloat64).contiguous();
}

}  // namespace detail

/// A rate averaged the way scikit-learn does it, from a confusion matrix (counts may be weighted).
///
/// Labels: all K classes when `all_labels`, else those present in y_true or y_pred (scikit-learn's default).
/// "binary" reports class `pos_label` and needs at most two present labels; "micro" pools the one-vs-rest counts;
/// "macro" is the unweighted mean over labels; "weighted" weights by support (true count); None gives one value
/// per label (a 1-D tensor), every other average a 0-D tensor.
inline torch::Tensor averaged_rate(const torch::Tensor& cm_in, Rate rate, Average average, int64_t pos_label = 1,
                                   bool all_labels = false) {
  const auto cm = detail::as_double_matrix(cm_in, "averaged_rate");
  const int64_t K = cm.size(0);
  const auto* c = cm.data_ptr<double>();
  std::vector<double> row(K, 0), col(K, 0);
  double total = 0, diag = 0;
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) {
      row[i] += c[i * K + j];
      col[j] += c[i * K + j];
      total += c[i * K + j];
    }
  std::vector<int64_t> labels;
  for (int64_t k = 0; k < K; ++k)
    if (all_labels || row[k] + col[k] > 0) labels.push_back(k);
  auto counts = [&](int64_t k, double& tp, double& fp, double& fn, double& tn) {
    tp = k < K ? c[k * K + k] : 0;
    fp = k < K ? col[k] - tp : 0;
    fn = k < K ? row[k] - tp : 0;
    tn = total - tp - fp - fn;
  };
  double tp, fp, fn, tn;
  switch (average) {
    case Average::Binary: {
      OSTEONET_CHECK(labels.size() <= 2, "metrics: average='binary' needs at most two classes, got ", labels.size(),
                     " classes; use average='macro', 'micro', 'weighted' or None");
      OSTEONET_CHECK(pos_label >= 0 && (labels.size() < 2 || pos_label == labels[0] || pos_label == labels[1]),
                     "metrics: pos_label must be one of the labels present, got pos_label=", pos_label);
      counts(pos_label, tp, fp, fn, tn);
      return torch::tensor(detail::rate_from_counts(rate, tp, fp, fn, tn), torch::kFloat64);
    }
    case Average::Micro: {
      double stp = 0, sfp = 0, sfn = 0, stn = 0;
      for (auto k : labels) {
        counts(k, tp, fp, fn, tn);
        stp += tp; sfp += fp; sfn += fn; stn += tn;
      }
      return torch::tensor(detail::rate_from_counts(rate, stp, sfp, sfn, stn), torch::kFloat64);
    }
    default: break;
  }
  auto per = torch::empty({static_cast<int64_t>(labels.size())}, torch::kFloat64);
  auto* pv = per.data_ptr<double>();
  double wsum = 0, wacc = 0, msum = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    counts(labels[i], tp, fp, fn, tn);
    pv[i] = detail::rate_from_counts(rate, tp, fp, fn, tn);
    msum += pv[i];
    wsum += row[labels[i]];
    wacc += row[labels[i]] * pv[i];
  }
  if (average == Average::None) return per;
  if (average == Average::Weighted) return torch::tensor(detail::safe_div(wacc, wsum), torch::kFloat64);
  return torch::tensor(labels.empty() ? 0.0 : msum / static_cast<double>(labels.size()), torch::kFloat64);
}

/// Accuracy: trace(C) / sum(C).
inline double accuracy_from_cm(const torch::Tensor& cm_in) {
  const auto cm = detail::as_double_matrix(cm_in, "accuracy");
  const double total = cm.sum().item<double>();
  OSTEONET_CHECK(total > 0, "accuracy: the confusion matrix must not be empty, got sum=0");
  return cm.trace().item<double>() / total;
}

/// Balanced accuracy: mean recall over the classes present in y_true (scikit-learn, adjusted=False).
inline double balanced_accuracy_from_cm(const torch::Tensor& cm_in) {
  const auto cm = detail::as_double_matrix(cm_in, "balanced_accuracy");
  const int64_t K = cm.size(0);
  const auto* c = cm.data_ptr<double>();
  double s = 0;
  int64_t m = 0;
  for (int64_t i = 0; i < K; ++i) {
    double r = 0;
    for (int64_t j = 0; j < K; ++j) r += c[i * K + j];
    if (r > 0) { s += c[i * K + i] / r; ++m; }
  }
  OSTEONET_CHECK(m > 0, "balanced_accuracy: the confusion matrix must not be empty, got sum=0");
  return s / static_cast<double>(m);
}

/// Cumulative false and true positives at each distinct score, scores descending (scikit-learn's _binary_clf_curve).
struct BinaryCurve {
  std::vector<double> fps, tps, thresholds;
  double positives = 0, negatives = 0;
};

namespace detail {

inline std::pair<torch::Tensor, torch::Tensor> binary_inputs(const torch::Tensor& y_true, const torch::Tensor& y_score,
                                                             const std::string& where) {
  auto t = labels_1d(y_true, where, "y_true");
  auto s = reals(y_score, 1, where, "y_score");
  same_length(t, s, where, "y_true", "y_score");
  const auto mx = t.max().item<int64_t>();
  OSTEONET_CHECK(mx <= 1, where, ": y_true must be binary (0 or 1), got label ", mx);
  return {t, s};
}

}  // namespace detail

/// The binary classification curve: cumulative counts at each distinct threshold, highest threshold first.
inline BinaryCurve binary_clf_curve(const torch::Tensor& y_true, const torch::Tensor& y_score,
                                    const std::string& where = "binary_clf_curve") {
  auto [t, s] = detail::binary_inputs(y_true, y_score, where);
  auto sorted = torch::sort(s, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  const auto ss = std::get<0>(sorted).contiguous();
  const auto ts = t.index_select(0, std::get<1>(sorted)).contiguous();
  const auto* sv = ss.data_ptr<double>();
  const auto* tv = ts.data_ptr<int64_t>();
  const int64_t n = ss.numel();
  BinaryCurve c;
  double tp = 0;
  for (int64_t i = 0; i < n; ++i) {
    tp += static_cast<double>(tv[i]);
    if (i == n - 1 || sv[i + 1] != sv[i]) {
      c.tps.push_back(tp);
      c.fps.push_back(static_cast<double>(i + 1) - tp);
      c.thresholds.push_back(sv[i]);
    }
  }
  c.positives = tp;
  c.negatives = static_cast<double>(n) - tp;
  return c;
}

/// ROC curve (fpr, tpr, thresholds) as scikit-learn's roc_curve; the first threshold is +inf (curve starts at 0,0).
/// drop_intermediate removes points on straight segments (scikit-learn's default), which leaves the area unchanged.
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> roc_curve(const torch::Tensor& y_true,
                                                                         const torch::Tensor& y_score,
                                                                         bool drop_intermediate = true) {
  auto c = binary_clf_curve(y_true, y_score, "roc_curve");
  OSTEONET_CHECK(c.positives > 0 && c.negatives > 0,
                 "roc_curve: y_true must contain both classes, got positives=", c.positives,
                 " negatives=", c.negatives);
  const std::size_t m = c.tps.size();
  std::vector<std::size_t> keep;
  for (std::size_t i = 0; i < m; ++i) {
    if (!drop_intermediate || m <= 2 || i == 0 || i == m - 1) { keep.push_back(i); continue; }
    const double d2f = c.fps[i + 1] - 2 * c.fps[i] + c.fps[i - 1], d2t = c.tps[i + 1] - 2 * c.tps[i] + c.tps[i - 1];
    if (d2f != 0 || d2t != 0) keep.push_back(i);
  }
  const int64_t k = static_cast<int64_t>(keep.size()) + 1;
  auto fpr = torch::empty({k}, torch::kFloat64), tpr = torch::empty({k}, torch::kFloat64),
       thr = torch::empty({k}, torch::kFloat64);
  auto *f = fpr.data_ptr<double>(), *tt = tpr.data_ptr<double>(), *th = thr.data_ptr<double>();
  f[0] = 0; tt[0] = 0; th[0] = std::numeric_limits<double>::infinity();
  for (int64_t j = 1; j < k; ++j) {
    const auto i = keep[j - 1];
    f[j] = c.fps[i] / c.negatives;
    tt[j] = c.tps[i] / c.positives;
    th[j] = c.thresholds[i];
  }
  return {fpr, tpr, thr};
}

/// Area under the ROC curve by the trapezoidal rule over distinct thresholds (ties count one half).
inline double roc_auc_binary(const torch::Tensor& y_true, const torch::Tensor& y_score) {
  auto c = binary_clf_curve(y_true, y_score, "roc_auc");
  OSTEONET_CHECK(c.positives > 0 && c.negatives > 0,
                 "roc_auc: y_true must contain both classes, got positives=", c.positives, " negatives=", c.negatives);
  double area = 0, pf = 0, pt = 0;
  for (std::size_t i = 0; i < c.tps.size(); ++i) {
    area += (c.fps[i] - pf) * (c.tps[i] + pt);
    pf = c.fps[i];
    pt = c.tps[i];
  }
  return area / (2.0 * c.positives * c.negatives);
}

/// One-vs-rest ROC AUC for y_score of shape (N, K); average "macro", "weighted" (by prevalence), "micro" or None.
/// Every class 0..K-1 must occur in y_true (as scikit-learn requires).
inline torch::Tensor roc_auc_ovr(const torch::Tensor& y_true, const torch::Tensor& y_score, Average average) {
  auto t = detail::labels_1d(y_true, "roc_auc", "y_true");
  auto s = detail::reals(y_score, 2, "roc_auc", "y_score");
  detail::same_length(t, s, "roc_auc", "y_true", "y_score");
  const int64_t K = s.size(1);
  OSTEONET_CHECK(K >= 2, "roc_auc: y_score must have at least 2 columns, got y_score.shape[1]=", K);
  const auto mx = t.max().item<int64_t>();
  OSTEONET_CHECK(mx < K, "roc_auc: labels must be in [0, K) for y_score with K columns, got label ", mx, " with K=", K);
  auto onehot = torch::one_hot(t, K);
  if (average == Average::Micro) return torch::tensor(roc_auc_binary(onehot.reshape(-1), s.reshape(-1)), torch::kFloat64);
  OSTEONET_CHECK(average != Average::Binary, "roc_auc: average='binary' needs a 1-D y_score; use 'macro', 'weighted', 'micro' or None");
  auto per = torch::empty({K}, torch::kFloat64);
  auto support = onehot.sum(0).to(torch::kFloat64);
  for (int64_t k = 0; k < K; ++k) {
    OSTEONET_CHECK(support[k].item<double>() > 0, "roc_auc: every class must occur in y_true for one-vs-rest AUC, got no sample of class ", k);
    per[k] = roc_auc_binary(onehot.select(1, k).contiguous(), s.select(1, k).contiguous());
  }
  if (average == Average::None) return per;
  if (average == Average::Weighted) return (per * support).sum() / support.sum();
  return per.mean();
}

/// Precision-recall curve as scikit-learn's: precision and recall (reversed, ending at precision 1, recall 0)
/// and the increasing thresholds.
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> precision_recall_curve(const torch::Tensor& y_true,
                                                                                      const torch::Tensor& y_score) {
  auto c = binary_clf_curve(y_true, y_score, "precision_recall_curve");
  OSTEONET_CHECK(c.positives > 0, "precision_recall_curve: y_true must contain positives, got positives=0");
  const int64_t m = static_cast<int64_t>(c.tps.size());
  auto pr = torch::empty({m + 1}, torch::kFloat64), rc = torch::empty({m + 1}, torch::kFloat64),
       th = torch::empty({m}, torch::kFloat64);
  auto *p = pr.data_ptr<double>(), *r = rc.data_ptr<double>(), *h = th.data_ptr<double>();
  for (int64_t j = 0; j < m; ++j) {
    const int64_t i = m - 1 - j;
    const double ps = c.tps[i] + c.fps[i];
    p[j] = ps == 0 ? 0.0 : c.tps[i] / ps;
    r[j] = c.tps[i] / c.positives;
    h[j] = c.thresholds[i];
  }
  p[m] = 1.0;
  r[m] = 0.0;
  return {pr, rc, th};
}

/// Average precision, scikit-learn's step-wise sum AP = Σ (R_n − R_{n−1}) P_n (no interpolation).
inline double average_precision(const torch::Tensor& y_true, const torch::Tensor& y_score) {
  auto c = binary_clf_curve(y_true, y_score, "average_precision");
  OSTEONET_CHECK(c.positives > 0, "average_precision: y_true must contain positives, got positives=0");
  double ap = 0, prev = 0;
  for (std::size_t i = 0; i < c.tps.size(); ++i) {
    ap += (c.tps[i] - prev) / c.positives * (c.tps[i] / (c.tps[i] + c.fps[i]));
    prev = c.tps[i];
  }
  return ap;
}

/// Youden's J = sensitivity + specificity − 1 at its maximum over the full ROC curve (highest threshold on ties).
struct YoudenResult {
  double threshold, j, sensitivity, specificity;
};

inline YoudenResult youden_threshold(const torch::Tensor& y_true, const torch::Tensor& y_score) {
  const auto c = binary_clf_curve(y_true, y_score, "youden_threshold");
  OSTEONET_CHECK(c.positives > 0 && c.negatives > 0, "youden_threshold: y_true must contain both classes, got positives=",
                 c.positives, " negatives=", c.negatives);
  // Compare J·P·N = TP·N − FP·P in exact integer arithmetic, so equal J values tie exactly.
  double best_v = 0;  // the (0, 0) corner at threshold +inf
  int64_t best = -1;
  for (std::size_t i = 0; i < c.tps.size(); ++i) {
    const double v = c.tps[i] * c.negatives - c.fps[i] * c.positives;
    if (v > best_v) { best_v = v; best = static_cast<int64_t>(i); }
  }
  if (best < 0) return {std::numeric_limits<double>::infinity(), 0.0, 0.0, 1.0};
  const double tpr = c.tps[best] / c.positives, fpr = c.fps[best] / c.negatives;
  return {c.thresholds[best], best_v / (c.positives * c.negatives), tpr, 1.0 - fpr};
}

}  // namespace osteonet::metrics
