// Clinical bone-density categories: WHO classes from DXA T-scores (WHO 1994; normal >= -1.0,
// osteopenia between, osteoporosis <= -2.5) and ACR classes from QCT trabecular BMD (ACR 2018
// practice parameter: > 120 mg/cm³ normal, 80-120 osteopenia, < 80 osteoporosis).
#pragma once

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <string>

#include "osteonet/core/error.hpp"

namespace osteonet::clinical {

/// Bone-density class; the integer values are the class indices osteonet's models predict.
enum class BoneClass : int64_t { kNormal = 0, kOsteopenia = 1, kOsteoporosis = 2 };

inline const std::array<std::string, 3>& class_names() {
  static const std::array<std::string, 3> names{"normal", "osteopenia", "osteoporosis"};
  return names;
}

inline const std::string& class_name(BoneClass c) { return class_names()[static_cast<size_t>(c)]; }

/// Class index of a name ("normal", "osteopenia", "osteoporosis"); ValueError otherwise.
inline BoneClass class_from_name(const std::string& name) {
  for (size_t i = 0; i < class_names().size(); ++i)
    if (class_names()[i] == name) return static_cast<BoneClass>(i);
  throw_unknown_name("class_from_name", "class", name, {class_names().begin(), class_names().end()});
}

/// WHO class of a DXA T-score: >= -1.0 normal, <= -2.5 osteoporosis, osteopenia between.
inline BoneClass who_class(double t_score) {
  OSTEONET_CHECK(std::isfinite(t_score), "who_class: T-score must be finite, got t_score=", t_score);
  if (t_score >= -1.0) return BoneClass::kNormal;
  if (t_score <= -2.5) return BoneClass::kOsteoporosis;
  return BoneClass::kOsteopenia;
}

/// ACR class of a QCT trabecular BMD in mg/cm³: > 120 normal, 80-120 osteopenia, < 80 osteoporosis.
inline BoneClass acr_class(double bmd_mg_cm3) {
  OSTEONET_CHECK(std::isfinite(bmd_mg_cm3) && bmd_mg_cm3 >= 0, "acr_class: BMD must be finite and >= 0 mg/cm3, got bmd=",
                 bmd_mg_cm3);
  if (bmd_mg_cm3 > 120.0) return BoneClass::kNormal;
  if (bmd_mg_cm3 < 80.0) return BoneClass::kOsteoporosis;
  return BoneClass::kOsteopenia;
}

/// T-score of a BMD against a young-adult reference: (bmd - young_mean) / young_sd.
inline double t_score(double bmd, double young_mean, double young_sd) {
  OSTEONET_CHECK(young_sd > 0, "t_score: young_sd must be positive, got young_sd=", young_sd);
  return (bmd - young_mean) / young_sd;
}

namespace detail {
inline void check_finite(const torch::Tensor& x, const char* where, const char* what) {
  OSTEONET_CHECK_TYPE(x.is_floating_point(), where, ": expected floating-point ", what, ", got dtype=", x.dtype());
  OSTEONET_CHECK(x.numel() == 0 || torch::isfinite(x).all().item<bool>(), where, ": ", what, " must be finite, got NaN or inf");
}
}  // namespace detail

/// Element-wise who_class over a tensor of T-scores (int64 class indices).
inline torch::Tensor who_class(const torch::Tensor& t_scores) {
  detail::check_finite(t_scores, "who_class", "T-scores");
  auto out = torch::full(t_scores.sizes(), static_cast<int64_t>(BoneClass::kOsteopenia), torch::kInt64);
  out.masked_fill_(t_scores >= -1.0, static_cast<int64_t>(BoneClass::kNormal));
  out.masked_fill_(t_scores <= -2.5, static_cast<int64_t>(BoneClass::kOsteoporosis));
  return out;
}

/// Element-wise acr_class over a tensor of QCT BMD values (int64 class indices).
inline torch::Tensor acr_class(const torch::Tensor& bmd) {
  detail::check_finite(bmd, "acr_class", "BMD values");
  OSTEONET_CHECK(bmd.numel() == 0 || (bmd >= 0).all().item<bool>(), "acr_class: BMD must be >= 0 mg/cm3, got a negative value");
  auto out = torch::full(bmd.sizes(), static_cast<int64_t>(BoneClass::kOsteopenia), torch::kInt64);
  out.masked_fill_(bmd > 120.0, static_cast<int64_t>(BoneClass::kNormal));
  out.masked_fill_(bmd < 80.0, static_cast<int64_t>(BoneClass::kOsteoporosis));
  return out;
}

}  // namespace osteonet::clinical
