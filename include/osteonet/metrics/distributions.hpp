// Distribution functions the metrics need (normal, Student t, beta, chi-square, binomial), in double precision.
#pragma once

#include <cmath>
#include <limits>

#include "osteonet/core/error.hpp"

namespace osteonet::metrics::dist {

namespace detail {

/// Continued fraction of the regularized incomplete beta function (modified Lentz).
inline double beta_cf(double a, double b, double x) {
  constexpr double tiny = 1e-300, eps = 1e-16;
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0, d = 1.0 - qab * x / qap;
  if (std::fabs(d) < tiny) d = tiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 1000; ++m) {
    const int m2 = 2 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) < eps) break;
  }
  return h;
}

}  // namespace detail

/// Regularized incomplete beta function I_x(a, b).
inline double beta_inc(double a, double b, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double lbt = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  if (x < (a + 1.0) / (a + b + 2.0)) return std::exp(lbt) * detail::beta_cf(a, b, x) / a;
  return 1.0 - std::exp(lbt) * detail::beta_cf(b, a, 1.0 - x) / b;
}

/// Quantile of the Beta(a, b) distribution (bisection to full double precision).
inline double beta_ppf(double p, double a, double b) {
  if (p <= 0.0) return 0.0;
  if (p >= 1.0) return 1.0;
  double lo = 0.0, hi = 1.0;
  for (int i = 0; i < 1100; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    if (beta_inc(a, b, mid) < p) lo = mid; else hi = mid;
  }
  return 0.5 * (lo + hi);
}

/// Regularized upper incomplete gamma function Q(a, x).
inline double gamma_q(double a, double x) {
  if (x <= 0.0) return 1.0;
  const double gln = std::lgamma(a);
  if (x < a + 1.0) {  // series for P, then Q = 1 - P
    double ap = a, sum = 1.0 / a, del = sum;
    for (int n = 0; n < 10000; ++n) {
      ap += 1.0;
      del *= x / ap;
      sum += del;
      if (std::fabs(del) < std::fabs(sum) * 1e-17) break;
    }
    return 1.0 - sum * std::exp(-x + a * std::log(x) - gln);
  }
  constexpr double tiny = 1e-300;  // continued fraction for Q (modified Lentz)
  double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
  for (int i = 1; i < 10000; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) < 1e-17) break;
  }
  return std::exp(-x + a * std::log(x) - gln) * h;
}

/// Standard normal cumulative distribution function.
inline double norm_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

/// Standard normal survival function 1 - Φ(x), accurate in the upper tail.
inline double norm_sf(double x) { return 0.5 * std::erfc(x / std::sqrt(2.0)); }

/// Standard normal quantile Φ⁻¹(p): Acklam's rational approximation refined by two Halley steps.
inline double norm_ppf(double p) {
  if (p <= 0.0) return -std::numeric_limits<double>::infinity();
  if (p >= 1.0) return std::numeric_limits<double>::infinity();
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double plow = 0.02425;
  double x;
  if (p < plow) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - plow) {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log1p(-p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  for (int i = 0; i < 2; ++i) {  // Halley refinement against erfc
    const double e = (p < 0.5 ? norm_cdf(x) - p : (1.0 - p) - norm_sf(x) ) ;
    const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
    x = x - u / (1 + x * u / 2);
  }
  return x;
}

/// Two-sided p-value of Student's t statistic with `df` degrees of freedom, P(|T| ≥ |t|).
inline double t_two_sided_p(double t, double df) {
  if (!std::isfinite(t)) return 0.0;
  return beta_inc(df / 2.0, 0.5, df / (df + t * t));
}

/// Student t quantile for upper-tail probability q (q < 0.5): t such that P(T > t) = q.
inline double t_isf(double q, double df) {
  OSTEONET_CHECK(q > 0.0 && q < 0.5, "t_isf: need 0 < q < 0.5, got q=", q);
  const double x = beta_ppf(2.0 * q, df / 2.0, 0.5);  // P(|T| > t) = I_{df/(df+t²)}(df/2, 1/2)
  return std::sqrt(df * (1.0 - x) / x);
}

/// Chi-square survival function P(X ≥ x) with `df` degrees of freedom.
inline double chi2_sf(double x, double df) { return gamma_q(df / 2.0, x / 2.0); }

/// Binomial cumulative distribution P(X ≤ k) for X ~ Bin(n, p).
inline double binom_cdf(double k, double n, double p) {
  if (k < 0) return 0.0;
  if (k >= n) return 1.0;
  return beta_inc(n - k, k + 1, 1.0 - p);
}

}  // namespace osteonet::metrics::dist
