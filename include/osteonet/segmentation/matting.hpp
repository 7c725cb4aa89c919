// Region "matting" (seeds 003 and 004): keep the image inside a segmented region, crop to the
// region's box with a margin, resize for a classifier or regressor.
#pragma once

#include <torch/torch.h>

#include "osteonet/core/error.hpp"

namespace osteonet::segmentation {

/// image C x H x W, mask H x W (bool or 0/1) -> C x size x size: image · mask, cropped to the mask's
/// bounding box grown by `margin` (fraction of its size), resized bilinearly. ValueError on an empty mask.
inline torch::Tensor mat_region(const torch::Tensor& image, const torch::Tensor& mask, int64_t size = 224,
                                double margin = 0.1) {
  OSTEONET_CHECK(image.dim() == 3, "mat_region: expected image C x H x W, got shape ", image.sizes());
  OSTEONET_CHECK(mask.dim() == 2 && mask.size(0) == image.size(1) && mask.size(1) == image.size(2),
                 "mat_region: mask must be H x W = ", image.size(1), " x ", image.size(2), ", got ", mask.sizes());
  OSTEONET_CHECK(size > 0 && margin >= 0, "mat_region: size must be positive and margin >= 0");
  auto m = mask.to(torch::kBool);
  auto idx = torch::nonzero(m);
  OSTEONET_CHECK(idx.size(0) > 0, "mat_region: the mask is empty (no region to cut out)");
  const int64_t y0 = idx.select(1, 0).min().item<int64_t>(), y1 = idx.select(1, 0).max().item<int64_t>() + 1;
  const int64_t x0 = idx.select(1, 1).min().item<int64_t>(), x1 = idx.select(1, 1).max().item<int64_t>() + 1;
  const auto my = static_cast<int64_t>((y1 - y0) * margin), mx = static_cast<int64_t>((x1 - x0) * margin);
  const int64_t ya = std::max<int64_t>(0, y0 - my), yb = std::min(image.size(1), y1 + my);
  const int64_t xa = std::max<int64_t>(0, x0 - mx), xb = std::min(image.size(2), x1 + mx);
  auto crop = (image * m.to(image.dtype())).narrow(1, ya, yb - ya).narrow(2, xa, xb - xa);
  return torch::nn::functional::interpolate(crop.unsqueeze(0), torch::nn::functional::InterpolateFuncOptions()
                                                                    .size(std::vector<int64_t>{size, size})
                                                                    .mode(torch::kBilinear)
                                                                    .align_corners(false))
      .squeeze(0);
}

}  // namespace osteonet::segmentation
