// Sliding-window inference with overlap blending, for images larger than the training size.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::segmentation {

/// Options for sliding_window_inference.
struct SlidingWindowOptions {
  /// Window height and width (clipped to the image: a window covering the image runs once).
  TORCH_ARG(std::vector<int64_t>, window) = std::vector<int64_t>{256, 256};
  /// Fraction of a window shared with its neighbour, in [0, 1).
  TORCH_ARG(double, overlap) = 0.5;
  /// "constant" (plain average) or "gaussian" (centre-weighted, sigma = window / 8).
  TORCH_ARG(std::string, blend) = "gaussian";
};

namespace detail_sw {
inline std::vector<int64_t> starts(int64_t size, int64_t win, int64_t stride) {
  std::vector<int64_t> s;
  for (int64_t p = 0;; p += stride) {
    if (p + win >= size) {
      s.push_back(size - win);
      break;
    }
    s.push_back(p);
  }
  return s;
}
}  // namespace detail_sw

/// Runs `fn` (N x C x h x w -> N x K x h x w) on overlapping windows of `image` and blends the
/// outputs into N x K x H x W.
inline torch::Tensor sliding_window_inference(const std::function<torch::Tensor(const torch::Tensor&)>& fn,
                                              const torch::Tensor& image, const SlidingWindowOptions& o = {}) {
  OSTEONET_CHECK(image.dim() == 4, "sliding_window_inference: expected N x C x H x W, got shape ", image.sizes());
  OSTEONET_CHECK(o.window().size() == 2 && o.window()[0] > 0 && o.window()[1] > 0,
                 "sliding_window_inference: window must be two positive sizes");
  OSTEONET_CHECK(o.overlap() >= 0 && o.overlap() < 1, "sliding_window_inference: overlap must be in [0, 1), got overlap=",
                 o.overlap());
  OSTEONET_CHECK(o.blend() == "constant" || o.blend() == "gaussian",
                 "sliding_window_inference: blend must be 'constant' or 'gaussian', got blend='", o.blend(), "'");
  const int64_t H = image.size(2), W = image.size(3);
  const int64_t wh = std::min(o.window()[0], H), ww = std::min(o.window()[1], W);
  const auto ys = detail_sw::starts(H, wh, std::max<int64_t>(1, static_cast<int64_t>(wh * (1 - o.overlap()))));
  const auto xs = detail_sw::starts(W, ww, std::max<int64_t>(1, static_cast<int64_t>(ww * (1 - o.overlap()))));
  if (ys.size() == 1 && xs.size() == 1) return fn(image);
  auto opts = image.options();
  torch::Tensor weight;
  if (o.blend() == "gaussian") {
    auto g = [&](int64_t n) {
      auto t = torch::arange(n, opts) - (n - 1) / 2.0;
      return torch::exp(-0.5 * (t / (n / 8.0)).pow(2));
    };
    weight = torch::outer(g(wh), g(ww)).clamp_min(1e-3);
  } else {
    weight = torch::ones({wh, ww}, opts);
  }
  torch::Tensor out, norm = torch::zeros({H, W}, opts);
  for (int64_t y : ys) {
    for (int64_t x : xs) {
      auto pred = fn(image.narrow(2, y, wh).narrow(3, x, ww));
      OSTEONET_CHECK(pred.dim() == 4 && pred.size(2) == wh && pred.size(3) == ww,
                     "sliding_window_inference: the model must return N x K x h x w for an h x w window, got ", pred.sizes());
      if (!out.defined()) out = torch::zeros({image.size(0), pred.size(1), H, W}, pred.options());
      out.narrow(2, y, wh).narrow(3, x, ww).add_(pred * weight);
      norm.narrow(0, y, wh).narrow(1, x, ww).add_(weight);
    }
  }
  return out / norm;
}

}  // namespace osteonet::segmentation
