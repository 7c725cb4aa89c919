// Agreement between two measurements (e.g. a model's BMD against QCT): Pearson r with Fisher-z interval, Spearman's
// rho, MAE, RMSE, Bland–Altman bias and limits of agreement with their intervals (Bland & Altman, Lancet 1986;
// Stat Methods Med Res 1999), and the least-squares line.
#pragma once

#include <torch/torch.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/metrics/distributions.hpp"
#include "osteonet/metrics/inputs.hpp"

namespace osteonet::metrics {

namespace detail {

/// Both inputs as float64 1-D vectors of equal length >= min_n.
inline std::pair<torch::Tensor, torch::Tensor> pair_1d(const torch::Tensor& x, const torch::Tensor& y,
                                                       const std::string& where, int64_t min_n = 1) {
  auto a = reals(x, 1, where, "x");
  auto b = reals(y, 1, where, "y");
  same_length(a, b, where, "x", "y");
  OSTEONET_CHECK(a.size(0) >= min_n, where, ": needs at least ", min_n, " pairs, got n=", a.size(0));
  return {a, b};
}

inline double pearson_raw(const double* x, const double* y, int64_t n, const std::string& where) {
  double mx = 0, my = 0;
  for (int64_t i = 0; i < n; ++i) { mx += x[i]; my += y[i]; }
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxx = 0, syy = 0, sxy = 0;
  for (int64_t i = 0; i < n; ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  OSTEONET_CHECK(sxx > 0 && syy > 0, where, ": correlation is undefined for a constant input, got var(x)=", sxx,
                 " var(y)=", syy);
  return std::clamp(sxy / std::sqrt(sxx) / std::sqrt(syy), -1.0, 1.0);
}

}  // namespace detail

/// A correlation coefficient, its two-sided p-value (t test, n − 2 df) and a (1 − alpha) interval.
struct Correlation {
  double r, p_value, low, high;
  int64_t n;
};

/// Pearson's r; the interval is Fisher's z: tanh(atanh r ± z_{1−α/2} / sqrt(n − 3)) (NaN when n <= 3).
inline Correlation pearson(const torch::Tensor& x, const torch::Tensor& y, double alpha = 0.05) {
  OSTEONET_CHECK(alpha > 0 && alpha < 1, "pearson: alpha must be in (0, 1), got alpha=", alpha);
  auto [a, b] = detail::pair_1d(x, y, "pearson", 3);
  const int64_t n = a.size(0);
  const double r = detail::pearson_raw(a.data_ptr<double>(), b.data_ptr<double>(), n, "pearson");
  const double p = std::fabs(r) == 1.0 ? 0.0 : dist::beta_inc((n - 2) / 2.0, 0.5, 1.0 - r * r);
  double lo = std::numeric_limits<double>::quiet_NaN(), hi = lo;
  if (n > 3) {
    const double z = std::atanh(r), h = dist::norm_ppf(1 - alpha / 2) / std::sqrt(static_cast<double>(n - 3));
    lo = std::tanh(z - h);
    hi = std::tanh(z + h);
  }
  return {r, p, lo, hi, n};
}

/// Spearman's rho: Pearson's r of the mid-ranks; p-value from the t distribution with n − 2 df (as SciPy);
/// the interval is Fisher's z with standard error sqrt(1.06 / (n − 3)) (Fieller, Hartley & Pearson 1957).
inline Correlation spearman(const torch::Tensor& x, const torch::Tensor& y, double alpha = 0.05) {
  OSTEONET_CHECK(alpha > 0 && alpha < 1, "spearman: alpha must be in (0, 1), got alpha=", alpha);
  auto [a, b] = detail::pair_1d(x, y, "spearman", 3);
  const int64_t n = a.size(0);
  auto rank = [n](const double* v) {
    std::vector<int64_t> idx(n);
    for (int64_t i = 0; i < n; ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](int64_t p, int64_t q) { return v[p] < v[q]; });
    std::vector<double> r(n);
    for (int64_t i = 0; i < n;) {
      int64_t j = i;
      while (j + 1 < n && v[idx[j + 1]] == v[idx[i]]) ++j;
      for (int64_t k = i; k <= j; ++k) r[idx[k]] = 0.5 * static_cast<double>(i + j) + 1.0;
      i = j + 1;
    }
    return r;
  };
  const auto ra = rank(a.data_ptr<double>()), rb = rank(b.data_ptr<double>());
  const double r = detail::pearson_raw(ra.data(), rb.data(), n, "spearman");
  const double p = std::fabs(r) == 1.0 ? 0.0 : dist::beta_inc((n - 2) / 2.0, 0.5, 1.0 - r * r);
  double lo = std::numeric_limits<double>::quiet_NaN(), hi = lo;
  if (n > 3) {
    const double z = std::atanh(r), h = dist::norm_ppf(1 - alpha / 2) * std::sqrt(1.06 / static_cast<double>(n - 3));
    lo = std::tanh(z - h);
    hi = std::tanh(z + h);
  }
  return {r, p, lo, hi, n};
}

/// Mean absolute error mean(|y − x|).
inline double mae(const torch::Tensor& x, const torch::Tensor& y) {
  auto [a, b] = detail::pair_1d(x, y, "mae");
  return (b - a).abs().mean().item<double>();
}

/// Root mean squared error sqrt(mean((y − x)²)).
inline double rmse(const torch::Tensor& x, const torch::Tensor& y) {
  auto [a, b] = detail::pair_1d(x, y, "rmse");
  return std::sqrt((b - a).pow(2).mean().item<double>());
}

/// Bland–Altman analysis of d = y − x: bias mean(d), sd (n − 1), limits bias ± z_{1−α/2} sd, and (1 − alpha)
/// t intervals: bias ± t sd/√n, each limit ± t sd √(1/n + z²/(2(n − 1))) (Bland & Altman 1999, §4.2).
struct BlandAltman {
  double bias, sd, loa_low, loa_high;
  double bias_ci_low, bias_ci_high, loa_low_ci_low, loa_low_ci_high, loa_high_ci_low, loa_high_ci_high;
  int64_t n;
};

inline BlandAltman bland_altman(const torch::Tensor& x, const torch::Tensor& y, double alpha = 0.05) {
  OSTEONET_CHECK(alpha > 0 && alpha < 1, "bland_altman: alpha must be in (0, 1), got alpha=", alpha);
  auto [a, b] = detail::pair_1d(x, y, "bland_altman", 2);
  const auto d = b - a;
  const int64_t n = d.size(0);
  const double nn = static_cast<double>(n);
  const double bias = d.mean().item<double>(), sd = d.std(/*unbiased=*/true).item<double>();
  const double z = dist::norm_ppf(1 - alpha / 2), t = dist::t_isf(alpha / 2, nn - 1);
  const double se_bias = sd / std::sqrt(nn), se_loa = sd * std::sqrt(1.0 / nn + z * z / (2.0 * (nn - 1)));
  const double lo = bias - z * sd, hi = bias + z * sd;
  return {bias, sd, lo, hi, bias - t * se_bias, bias + t * se_bias, lo - t * se_loa, lo + t * se_loa,
          hi - t * se_loa, hi + t * se_loa, n};
}

/// Least-squares line y = intercept + slope·x with standard errors, r and the slope's two-sided p-value
/// (the quantities of SciPy's linregress).
struct LinearFit {
  double slope, intercept, r, p_value, slope_se, intercept_se;
  int64_t n;
};

inline LinearFit linear_fit(const torch::Tensor& x, const torch::Tensor& y) {
  auto [a, b] = detail::pair_1d(x, y, "linear_fit", 3);
  const int64_t n = a.size(0);
  Eigen::Map<const Eigen::VectorXd> xv(a.data_ptr<double>(), n), yv(b.data_ptr<double>(), n);
  const double mx = xv.mean(), my = yv.mean();
  const Eigen::VectorXd xc = xv.array() - mx, yc = yv.array() - my;
  const double sxx = xc.squaredNorm(), syy = yc.squaredNorm(), sxy = xc.dot(yc);
  OSTEONET_CHECK(sxx > 0, "linear_fit: x must not be constant, got var(x)=0");
  // Centred normal equations: the slope from the 1×1 system, the intercept from the means.
  const double slope = sxy / sxx, intercept = my - slope * mx;
  const double r = syy > 0 ? std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0) : 0.0;
  const double df = static_cast<double>(n - 2);
  const double resid = std::max(0.0, (syy - slope * sxy)) / df;
  const double slope_se = std::sqrt(resid / sxx);
  const double intercept_se = slope_se * std::sqrt(xv.squaredNorm() / static_cast<double>(n));
  const double p = std::fabs(r) == 1.0 ? 0.0 : dist::beta_inc(df / 2.0, 0.5, 1.0 - r * r);
  return {slope, intercept, r, p, slope_se, intercept_se, n};
}

}  // namespace osteonet::metrics
