// Confidence intervals and tests: Wilson and Clopper-Pearson proportions (as statsmodels), DeLong's AUC variance
// and paired test (DeLong et al., Biometrics 1988; fast algorithm of Sun & Xu, IEEE SPL 2014), seeded percentile
// bootstrap, McNemar's test and Pearson's chi-square test of a contingency table (as statsmodels / SciPy).
#pragma once

#include <torch/torch.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/metrics/classification.hpp"
#include "osteonet/metrics/distributions.hpp"

namespace osteonet::metrics {

inline void check_alpha(double alpha, const std::string& where) {
  OSTEONET_CHECK(alpha > 0 && alpha < 1, where, ": alpha must be in (0, 1), got alpha=", alpha);
}

/// Two-sided (1 − alpha) interval of a binomial proportion, "wilson" or "clopper-pearson" (statsmodels'
/// proportion_confint "wilson" and "beta").
inline std::pair<double, double> proportion_ci(double successes, double n, const std::string& method = "wilson",
                                               double alpha = 0.05) {
  OSTEONET_CHECK(std::isfinite(n) && n > 0, "proportion_ci: n must be a finite positive count, got n=", n);
  OSTEONET_CHECK(std::isfinite(successes), "proportion_ci: successes must be a finite count, got successes=", successes);
  OSTEONET_CHECK(successes >= 0 && successes <= n, "proportion_ci: need 0 <= successes <= n, got successes=",
                 successes, " n=", n);
  check_alpha(alpha, "proportion_ci");
  if (method == "wilson") {
    const double z = dist::norm_ppf(1 - alpha / 2), z2 = z * z, q = successes / n;
    const double denom = 1 + z2 / n;
    const double center = (q + z2 / (2 * n)) / denom;
    const double half = z * std::sqrt(q * (1 - q) / n + z2 / (4 * n * n)) / denom;
    // The interval lies in [0, 1]; rounding put its end at 1 + 2.2e-16 for 54 of 54 (found by Hypothesis).
    return {std::max(0.0, center - half), std::min(1.0, center + half)};
  }
  if (method == "clopper-pearson" || method == "beta") {
    const double lo = successes == 0 ? 0.0 : dist::beta_ppf(alpha / 2, successes, n - successes + 1);
    const double hi = successes == n ? 1.0 : dist::beta_ppf(1 - alpha / 2, successes + 1, n - successes);
    return {lo, hi};
  }
  throw_unknown_name("proportion_ci", "method", method, {"wilson", "clopper-pearson"});
}

namespace detail {

/// Mid-ranks (1-based, ties get their average rank).
inline std::vector<double> midranks(const double* x, int64_t n) {
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return x[a] < x[b]; });
  std::vector<double> r(n);
  int64_t i = 0;
  while (i < n) {
    int64_t j = i;
    while (j + 1 < n && x[idx[j + 1]] == x[idx[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (int64_t k = i; k <= j; ++k) r[idx[k]] = rank;
    i = j + 1;
  }
  return r;
}

}  // namespace detail

/// DeLong's AUCs and their covariance for k score vectors on the same cases.
struct DeLongResult {
  Eigen::VectorXd auc;
  Eigen::MatrixXd cov;
};

/// DeLong's estimate for scores (N, k) against binary y_true, by the mid-rank algorithm of Sun & Xu (2014).
inline DeLongResult delong(const torch::Tensor& y_true, const torch::Tensor& scores) {
  auto t = detail::labels_1d(y_true, "delong", "y_true");
  auto s = detail::reals(scores, 2, "delong", "y_score");
  detail::same_length(t, s, "delong", "y_true", "y_score");
  OSTEONET_CHECK(t.max().item<int64_t>() <= 1, "delong: y_true must be binary (0 or 1), got label ", t.max().item<int64_t>());
  const auto* tv = t.data_ptr<int64_t>();
  const int64_t N = t.numel(), k = s.size(1);
  std::vector<int64_t> pos, neg;
  for (int64_t i = 0; i < N; ++i) (tv[i] ? pos : neg).push_back(i);
  const int64_t m = static_cast<int64_t>(pos.size()), n = static_cast<int64_t>(neg.size());
  OSTEONET_CHECK(m >= 2 && n >= 2, "delong: need at least two positives and two negatives, got positives=", m,
                 " negatives=", n);
  auto sa = s.accessor<double, 2>();
  Eigen::MatrixXd v10(m, k), v01(n, k);
  Eigen::VectorXd auc(k);
  for (int64_t r = 0; r < k; ++r) {
    std::vector<double> x(m), y(n), z(m + n);
    for (int64_t i = 0; i < m; ++i) z[i] = x[i] = sa[pos[i]][r];
    for (int64_t j = 0; j < n; ++j) z[m + j] = y[j] = sa[neg[j]][r];
    const auto tx = detail::midranks(x.data(), m), ty = detail::midranks(y.data(), n),
               tz = detail::midranks(z.data(), m + n);
    double sum_pos = 0;
    for (int64_t i = 0; i < m; ++i) {
      sum_pos += tz[i];
      v10(i, r) = (tz[i] - tx[i]) / static_cast<double>(n);
    }
    for (int64_t j = 0; j < n; ++j) v01(j, r) = 1.0 - (tz[m + j] - ty[j]) / static_cast<double>(m);
    auc(r) = sum_pos / static_cast<double>(m) / static_cast<double>(n) - (m + 1.0) / (2.0 * n);
  }
  auto covariance = [](const Eigen::MatrixXd& v) {
    const Eigen::MatrixXd c = v.rowwise() - v.colwise().mean();
    return Eigen::MatrixXd((c.transpose() * c) / static_cast<double>(v.rows() - 1));
  };
  return {auc, covariance(v10) / static_cast<double>(m) + covariance(v01) / static_cast<double>(n)};
}

/// AUC with DeLong's (1 − alpha) normal interval, clipped to [0, 1].
struct AucCI {
  double auc, variance, low, high;
};

inline AucCI delong_ci(const torch::Tensor& y_true, const torch::Tensor& y_score, double alpha = 0.05) {
  check_alpha(alpha, "delong_ci");
  OSTEONET_CHECK(y_score.dim() == 1, "delong_ci: y_score must be 1-D, got y_score.dim()=", y_score.dim());
  const auto r = delong(y_true, y_score.unsqueeze(1));
  const double a = r.auc(0), v = r.cov(0, 0), h = dist::norm_ppf(1 - alpha / 2) * std::sqrt(v);
  return {a, v, std::max(0.0, a - h), std::min(1.0, a + h)};
}

/// DeLong's test of two correlated AUCs (same cases): z = (A1 − A2) / sqrt(V1 + V2 − 2 C12), two-sided p.
struct DeLongTest {
  double auc_a, auc_b, difference, variance, z, p_value, low, high;
};

inline DeLongTest delong_test(const torch::Tensor& y_true, const torch::Tensor& score_a, const torch::Tensor& score_b,
                              double alpha = 0.05) {
  check_alpha(alpha, "delong_test");
  OSTEONET_CHECK(score_a.dim() == 1 && score_b.dim() == 1 && score_a.size(0) == score_b.size(0),
                 "delong_test: score_a and score_b must be 1-D of equal length, got shapes ", score_a.sizes(), " and ",
                 score_b.sizes());
  const auto r = delong(y_true, torch::stack({score_a.to(torch::kFloat64), score_b.to(torch::kFloat64)}, 1));
  const double d = r.auc(0) - r.auc(1), v = r.cov(0, 0) + r.cov(1, 1) - 2 * r.cov(0, 1);
  const double z = v > 0 ? d / std::sqrt(v) : (d == 0 ? 0.0 : std::copysign(std::numeric_limits<double>::infinity(), d));
  const double h = dist::norm_ppf(1 - alpha / 2) * std::sqrt(std::max(v, 0.0));
  return {r.auc(0), r.auc(1), d, v, z, 2 * dist::norm_sf(std::fabs(z)), d - h, d + h};
}

/// Seeded resampling with replacement: mt19937_64 and rejection sampling, so indices are the same on every platform.
class BootstrapSampler {
 public:
  BootstrapSampler(int64_t n, uint64_t seed) : n_(static_cast<uint64_t>(n)), rng_(seed) {
    OSTEONET_CHECK(n > 0, "bootstrap: n must be positive, got n=", n);
    limit_ = (std::numeric_limits<uint64_t>::max() / n_) * n_;
  }
  int64_t next() {
    uint64_t x;
    do x = rng_(); while (x >= limit_);
    return static_cast<int64_t>(x % n_);
  }

 private:
  uint64_t n_, limit_;
  std::mt19937_64 rng_;
};

/// Indices of `n_resamples` bootstrap samples of size n, shape (n_resamples, n).
inline torch::Tensor bootstrap_indices(int64_t n, int64_t n_resamples, uint64_t seed) {
  OSTEONET_CHECK(n_resamples > 0, "bootstrap_indices: n_resamples must be positive, got n_resamples=", n_resamples);
  BootstrapSampler s(n, seed);
  auto out = torch::empty({n_resamples, n}, torch::kInt64);
  auto* p = out.data_ptr<int64_t>();
  for (int64_t i = 0, total = n * n_resamples; i < total; ++i) p[i] = s.next();
  return out;
}

/// Percentile (linear interpolation between order statistics, NumPy's default) of sorted values.
inline double percentile_sorted(const std::vector<double>& v, double q) {
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

/// Percentile bootstrap result; resamples where the metric is undefined (e.g. one class for AUC) are dropped.
struct BootstrapResult {
  double estimate, low, high, std_error;
  int64_t n_valid;
  torch::Tensor samples;
};

namespace detail {

/// A built-in metric evaluated with integer case weights (bootstrap multiplicities); NaN when undefined.
inline double weighted_metric(const std::string& metric, const std::string& average, const torch::Tensor& a,
                              const torch::Tensor& b, const std::vector<double>& w,
                              const std::vector<int64_t>& order, int64_t K) {
  const int64_t n = a.size(0);
  if (metric == "auc") {  // a: labels, b: scores; `order` sorts b ascending
    const auto* t = a.data_ptr<int64_t>();
    const auto* s = b.data_ptr<double>();
    double num = 0, neg_below = 0, P = 0, N = 0;
    int64_t i = 0;
    while (i < n) {
      double wp = 0, wn = 0;
      int64_t j = i;
      while (j < n && s[order[j]] == s[order[i]]) {
        const int64_t c = order[j];
        (t[c] ? wp : wn) += w[c];
        ++j;
      }
      num += wp * neg_below + 0.5 * wp * wn;
      neg_below += wn;
      P += wp;
      N += wn;
      i = j;
    }
    return P > 0 && N > 0 ? num / (P * N) : std::numeric_limits<double>::quiet_NaN();
  }
  if (metric == "mae" || metric == "rmse" || metric == "pearson" || metric == "bias") {
    const auto* x = a.data_ptr<double>();
    const auto* y = b.data_ptr<double>();
    double sw = 0, s1 = 0, s2 = 0, mx = 0, my = 0;
    for (int64_t i = 0; i < n; ++i) {
      sw += w[i];
      s1 += w[i] * std::fabs(y[i] - x[i]);
      s2 += w[i] * (y[i] - x[i]) * (y[i] - x[i]);
      mx += w[i] * x[i];
      my += w[i] * y[i];
    }
    if (metric == "mae") return s1 / sw;
    if (metric == "rmse") return std::sqrt(s2 / sw);
    mx /= sw;
    my /= sw;
    if (metric == "bias") return my - mx;
    double sxx = 0, syy = 0, sxy = 0;
    for (int64_t i = 0; i < n; ++i) {
      sxx += w[i] * (x[i] - mx) * (x[i] - mx);
      syy += w[i] * (y[i] - my) * (y[i] - my);
      sxy += w[i] * (x[i] - mx) * (y[i] - my);
    }
    if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
    return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
  }
  // Classification metrics from the weighted confusion matrix.
  auto cm = torch::zeros({K, K}, torch::kFloat64);
  auto* c = cm.data_ptr<double>();
  const auto* t = a.data_ptr<int64_t>();
  const auto* p = b.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) c[t[i] * K + p[i]] += w[i];
  if (metric == "accuracy") return accuracy_from_cm(cm);
  if (metric == "balanced_accuracy") return balanced_accuracy_from_cm(cm);
  return averaged_rate(cm, parse_rate(metric), parse_average(average)).item<double>();
}

}  // namespace detail

/// Names the bootstrap computes in C++: classification ("accuracy", "balanced_accuracy", "precision", "recall",
/// "sensitivity", "specificity", "npv", "f1" with `average`), "auc" (binary labels and scores) and agreement
/// ("mae", "rmse", "pearson", "bias" = mean(b − a)).
inline std::vector<std::string> bootstrap_metric_names() {
  return {"accuracy", "balanced_accuracy", "precision", "recall", "sensitivity", "specificity", "npv", "f1",
          "auc", "mae", "rmse", "pearson", "bias"};
}

/// Percentile bootstrap (1 − alpha) interval of a built-in metric of (a, b): (y_true, y_pred), (y_true, y_score)
/// or (reference, measured). The resamples are those of bootstrap_indices(n, n_resamples, seed).
inline BootstrapResult bootstrap_ci(const std::string& metric, const torch::Tensor& a_in, const torch::Tensor& b_in,
                                    int64_t n_resamples = 1000, uint64_t seed = 0, double alpha = 0.05,
                                    const std::string& average = "binary") {
  const auto names = bootstrap_metric_names();
  if (std::find(names.begin(), names.end(), metric) == names.end())
    throw_unknown_name("bootstrap_ci", "metric", metric, names);
  check_alpha(alpha, "bootstrap_ci");
  OSTEONET_CHECK(n_resamples > 0, "bootstrap_ci: n_resamples must be positive, got n_resamples=", n_resamples);
  torch::Tensor a, b;
  int64_t K = 0;
  std::vector<int64_t> order;
  const bool regression = metric == "mae" || metric == "rmse" || metric == "pearson" || metric == "bias";
  if (metric == "auc") {
    std::tie(a, b) = detail::binary_inputs(a_in, b_in, "bootstrap_ci");
    order.resize(a.size(0));
    std::iota(order.begin(), order.end(), 0);
    const auto* s = b.data_ptr<double>();
    std::sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[i] < s[j]; });
  } else if (regression) {
    a = detail::reals(a_in, 1, "bootstrap_ci", "a");
    b = detail::reals(b_in, 1, "bootstrap_ci", "b");
  } else {
    a = detail::labels_1d(a_in, "bootstrap_ci", "y_true");
    b = detail::labels_1d(b_in, "bootstrap_ci", "y_pred");
    K = std::max(a.max().item<int64_t>(), b.max().item<int64_t>()) + 1;
  }
  detail::same_length(a, b, "bootstrap_ci", "a", "b");
  const int64_t n = a.size(0);
  std::vector<double> w(n, 1.0);
  const double estimate = detail::weighted_metric(metric, average, a, b, w, order, K);
  BootstrapSampler sampler(n, seed);
  auto samples = torch::empty({n_resamples}, torch::kFloat64);
  auto* sp = samples.data_ptr<double>();
  std::vector<double> valid;
  for (int64_t r = 0; r < n_resamples; ++r) {
    std::fill(w.begin(), w.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) w[sampler.next()] += 1.0;
    sp[r] = detail::weighted_metric(metric, average, a, b, w, order, K);
    if (!std::isnan(sp[r])) valid.push_back(sp[r]);
  }
  OSTEONET_CHECK(!valid.empty(), "bootstrap_ci: the metric is undefined on every resample, got n_valid=0");
  std::sort(valid.begin(), valid.end());
  double mean = 0, ss = 0;
  for (double v : valid) mean += v;
  mean /= static_cast<double>(valid.size());
  for (double v : valid) ss += (v - mean) * (v - mean);
  const double se = valid.size() > 1 ? std::sqrt(ss / static_cast<double>(valid.size() - 1)) : 0.0;
  return {estimate, percentile_sorted(valid, alpha / 2), percentile_sorted(valid, 1 - alpha / 2), se,
          static_cast<int64_t>(valid.size()), samples};
}

/// A test statistic and its p-value.
struct TestResult {
  double statistic, p_value;
  double dof = 1;
};

/// McNemar's test on the discordant counts b (A right, B wrong) and c (A wrong, B right), as statsmodels' mcnemar:
/// exact = binomial test with statistic min(b, c); otherwise chi-square (|b − c| − correction)² / (b + c), df 1.
inline TestResult mcnemar(double b, double c, bool exact = true, bool correction = true) {
  OSTEONET_CHECK(b >= 0 && c >= 0, "mcnemar: discordant counts must be non-negative, got b=", b, " c=", c);
  if (exact) {
    const double stat = std::min(b, c);
    return {stat, std::min(1.0, 2 * dist::binom_cdf(stat, b + c, 0.5))};
  }
  if (b + c == 0) return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  const double d = std::fabs(b - c) - (correction ? 1.0 : 0.0);
  const double stat = d * d / (b + c);
  return {stat, dist::chi2_sf(stat, 1)};
}

/// Pearson's chi-square test of independence of an r×c table, as SciPy's chi2_contingency (Yates' correction
/// when correction and df = 1).
inline TestResult chi2_contingency(const torch::Tensor& table_in, bool correction = true) {
  OSTEONET_CHECK(table_in.dim() == 2 && table_in.size(0) >= 1 && table_in.size(1) >= 1,
                 "chi2_contingency: table must be 2-D, got shape=", table_in.sizes());
  const auto tab = table_in.to(torch::kFloat64).contiguous();
  OSTEONET_CHECK((tab >= 0).all().item<bool>(), "chi2_contingency: counts must be non-negative, got a negative count");
  const int64_t R = tab.size(0), C = tab.size(1);
  auto row = tab.sum(1), col = tab.sum(0);
  const double total = tab.sum().item<double>();
  OSTEONET_CHECK(total > 0, "chi2_contingency: table must not be empty, got sum=0");
  auto expected = torch::outer(row, col) / total;
  OSTEONET_CHECK((expected > 0).all().item<bool>(),
                 "chi2_contingency: every row and column needs a nonzero total, got a zero expected frequency");
  const double dof = static_cast<double>((R - 1) * (C - 1));
  if (dof == 0) return {0.0, 1.0, 0.0};
  auto obs = tab.clone();
  if (correction && dof == 1) {
    auto diff = expected - obs;
    obs = obs + torch::sign(diff) * torch::minimum(torch::full_like(diff, 0.5), diff.abs());
  }
  const double stat = ((obs - expected).pow(2) / expected).sum().item<double>();
  return {stat, dist::chi2_sf(stat, dof), dof};
}

}  // namespace osteonet::metrics
