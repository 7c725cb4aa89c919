// Input checks shared by the metrics: 1-D labels and scores, equal lengths, no NaN, no empty input.
#pragma once

#include <torch/torch.h>

#include <string>

#include "osteonet/core/error.hpp"

namespace osteonet::metrics::detail {

/// A contiguous int64 copy of a 1-D integer (or bool) label tensor, checked to be non-negative.
inline torch::Tensor labels_1d(const torch::Tensor& t, const std::string& where, const std::string& name) {
  OSTEONET_CHECK(t.defined(), where, ": ", name, " is undefined");
  OSTEONET_CHECK_TYPE(!t.is_floating_point() && !t.is_complex(), where, ": ", name,
                      " must hold integer class labels, got dtype=", t.dtype());
  OSTEONET_CHECK(t.dim() == 1, where, ": ", name, " must be 1-D, got ", name, ".dim()=", t.dim());
  OSTEONET_CHECK(t.numel() > 0, where, ": ", name, " must not be empty, got ", name, ".numel()=0");
  auto out = t.to(torch::kInt64).contiguous();
  const auto mn = out.min().item<int64_t>();
  OSTEONET_CHECK(mn >= 0, where, ": labels must be in [0, num_classes), got ", name, " min=", mn);
  return out;
}

/// A contiguous float64 copy of a real tensor with `dim` dimensions, checked to be finite.
inline torch::Tensor reals(const torch::Tensor& t, int64_t dim, const std::string& where, const std::string& name) {
  OSTEONET_CHECK(t.defined(), where, ": ", name, " is undefined");
  OSTEONET_CHECK_TYPE(!t.is_complex(), where, ": ", name, " must be real, got dtype=", t.dtype());
  OSTEONET_CHECK(t.dim() == dim, where, ": ", name, " must be ", dim, "-D, got ", name, ".dim()=", t.dim());
  OSTEONET_CHECK(t.numel() > 0, where, ": ", name, " must not be empty, got ", name, ".numel()=0");
  auto out = t.to(torch::kFloat64).contiguous();
  OSTEONET_CHECK(torch::isfinite(out).all().item<bool>(), where, ": ", name,
                 " must be finite, got NaN or inf in ", name);
  return out;
}

/// Checks that two tensors have the same first dimension.
inline void same_length(const torch::Tensor& a, const torch::Tensor& b, const std::string& where,
                        const std::string& na, const std::string& nb) {
  OSTEONET_CHECK(a.size(0) == b.size(0), where, ": ", na, " and ", nb, " must have the same length, got len(", na,
                 ")=", a.size(0), " len(", nb, ")=", b.size(0));
}

}  // namespace osteonet::metrics::detail
