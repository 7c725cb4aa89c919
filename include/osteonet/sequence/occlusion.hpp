// Occlusion sensitivity (Zeiler & Fergus; seed 002 Fig. 3 uses it to show what the network looks at):
// slide a patch over an image and record how much the model's output probability drops.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::sequence {

/// Options for occlusion_sensitivity.
struct OcclusionOptions {
  /// Side of the square occluding patch, in pixels.
  TORCH_ARG(int64_t, patch_size) = 32;
  /// Step between patch positions; the last row/column of positions is moved flush with the border
  /// so every pixel is covered.
  TORCH_ARG(int64_t, stride) = 16;
  /// Value written into the patch (0 = the pixel mean after mean subtraction).
  TORCH_ARG(double, fill_value) = 0.0;
  /// Occluded copies per model call.
  TORCH_ARG(int64_t, batch_size) = 32;
};

/// The result: per-pixel heat (H x W: the mean probability drop of the patches covering the pixel),
/// the drop per patch position (rows x cols) and the unoccluded probability.
struct OcclusionResult {
  torch::Tensor heatmap;
  torch::Tensor grid;
  torch::Tensor ys, xs;  // top-left corners of the positions along each axis
  double base_probability = 0.0;
};

/// A model as a function: N x C x H x W images -> N probabilities (any shape with N elements).
using ProbabilityFn = std::function<torch::Tensor(const torch::Tensor&)>;

namespace detail_occ {
inline std::vector<int64_t> positions(int64_t extent, int64_t patch, int64_t stride) {
  std::vector<int64_t> out;
  if (patch >= extent) return {0};
  for (int64_t p = 0; p + patch <= extent; p += stride) out.push_back(p);
  if (out.back() + patch < extent) out.push_back(extent - patch);
  return out;
}
}  // namespace detail_occ

/// Occlusion sensitivity of `model` on one image (C x H x W), evaluated in batches without gradients.
inline OcclusionResult occlusion_sensitivity(const ProbabilityFn& model, const torch::Tensor& image,
                                             const OcclusionOptions& options = {}) {
  OSTEONET_CHECK(image.defined() && image.dim() == 3, "occlusion_sensitivity: expected one C x H x W image, got shape ",
                 image.defined() ? image.sizes() : torch::IntArrayRef{});
  OSTEONET_CHECK(options.patch_size() > 0 && options.stride() > 0 && options.batch_size() > 0,
                 "occlusion_sensitivity: patch_size, stride and batch_size must be positive, got patch_size=",
                 options.patch_size(), " stride=", options.stride(), " batch_size=", options.batch_size());
  torch::NoGradGuard no_grad;
  const int64_t h = image.size(1), w = image.size(2);
  const int64_t ph = std::min(options.patch_size(), h), pw = std::min(options.patch_size(), w);
  const auto ys = detail_occ::positions(h, ph, options.stride());
  const auto xs = detail_occ::positions(w, pw, options.stride());
  auto call = [&](const torch::Tensor& batch) {
    auto p = model(batch).reshape({-1});
    OSTEONET_CHECK(p.numel() == batch.size(0), "occlusion_sensitivity: the model must give one probability per image, got ",
                   p.numel(), " for ", batch.size(0), " images");
    return p.to(torch::kDouble).cpu();
  };
  const double base = call(image.unsqueeze(0))[0].item<double>();

  const int64_t total = static_cast<int64_t>(ys.size() * xs.size());
  auto drops = torch::empty({total}, torch::kDouble);
  for (int64_t start = 0; start < total; start += options.batch_size()) {
    const int64_t n = std::min(options.batch_size(), total - start);
    auto batch = image.unsqueeze(0).repeat({n, 1, 1, 1});
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = start + i;
      const int64_t y = ys[k / xs.size()], x = xs[k % xs.size()];
      batch[i].narrow(1, y, ph).narrow(2, x, pw).fill_(options.fill_value());
    }
    drops.narrow(0, start, n).copy_(base - call(batch));
  }
  auto grid = drops.view({static_cast<int64_t>(ys.size()), static_cast<int64_t>(xs.size())});

  auto sum = torch::zeros({h, w}, torch::kDouble), count = torch::zeros({h, w}, torch::kDouble);
  for (size_t i = 0; i < ys.size(); ++i) {
    for (size_t j = 0; j < xs.size(); ++j) {
      sum.narrow(0, ys[i], ph).narrow(1, xs[j], pw).add_(grid[i][j]);
      count.narrow(0, ys[i], ph).narrow(1, xs[j], pw).add_(1.0);
    }
  }
  OcclusionResult out;
  out.heatmap = (sum / count.clamp_min(1.0)).to(torch::kFloat);
  out.grid = grid.to(torch::kFloat);
  out.ys = torch::tensor(ys, torch::kLong);
  out.xs = torch::tensor(xs, torch::kLong);
  out.base_probability = base;
  return out;
}

}  // namespace osteonet::sequence
