// The detector's input transform, torchvision 0.14's GeneralizedRCNNTransform: normalise, resize
// (shorter side to min_size, longer side at most max_size; bilinear), batch with zero padding to a
// multiple of 32, and map detections back to the original image sizes.
#pragma once

#include <torch/torch.h>

#include "osteonet/core/call.hpp"

#include <array>
#include <cmath>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::detection {

/// Boxes (x1, y1, x2, y2) and labels of one image.
struct Target {
  torch::Tensor boxes;
  torch::Tensor labels;
};

/// Detections of one image.
struct Detection {
  torch::Tensor boxes, labels, scores;
};

/// A padded batch and the size of every image inside it (after resizing).
struct ImageList {
  torch::Tensor tensors;
  std::vector<std::array<int64_t, 2>> image_sizes;
};

struct TransformOptions {
  /// Shorter-side sizes; training draws one at random, evaluation uses the last.
  TORCH_ARG(std::vector<int64_t>, min_size) = {800};
  TORCH_ARG(int64_t, max_size) = 1333;
  TORCH_ARG(std::vector<double>, image_mean) = {0.485, 0.456, 0.406};
  TORCH_ARG(std::vector<double>, image_std) = {0.229, 0.224, 0.225};
  TORCH_ARG(int64_t, size_divisible) = 32;
};

/// Scales boxes from `from` (h, w) to `to` (h, w), ratios in float32 as torchvision.
inline torch::Tensor resize_boxes(const torch::Tensor& boxes, std::array<int64_t, 2> from, std::array<int64_t, 2> to) {
  const float rh = static_cast<float>(to[0]) / static_cast<float>(from[0]);
  const float rw = static_cast<float>(to[1]) / static_cast<float>(from[1]);
  auto r = torch::tensor({rw, rh, rw, rh}, torch::TensorOptions().dtype(torch::kFloat).device(boxes.device()));
  return boxes * r;
}

class GeneralizedRCNNTransformImpl : public torch::nn::Cloneable<GeneralizedRCNNTransformImpl>, public core::Invocable {
 public:
  explicit GeneralizedRCNNTransformImpl(TransformOptions options = {}) : options(std::move(options)) { reset(); }
  void reset() override {
    OSTEONET_CHECK(!options.min_size().empty(), "GeneralizedRCNNTransform: min_size must not be empty");
    OSTEONET_CHECK(options.image_mean().size() == options.image_std().size(),
                   "GeneralizedRCNNTransform: image_mean and image_std differ in length");
  }

  /// Normalises and resizes every image (and its target boxes, when given), then pads into a batch.
  ImageList forward(const std::vector<torch::Tensor>& images, std::vector<Target>* targets = nullptr) {
    std::vector<torch::Tensor> out;
    out.reserve(images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      const auto& img = images[i];
      OSTEONET_CHECK(img.dim() == 3, "GeneralizedRCNNTransform: images are expected to be 3-D tensors C x H x W, got ",
                     "image ", i, " of shape ", img.sizes());
      auto x = normalize(img);
      const std::array<int64_t, 2> hw{x.size(-2), x.size(-1)};
      x = resize(x);
      if (targets) (*targets)[i].boxes = resize_boxes((*targets)[i].boxes, hw, {x.size(-2), x.size(-1)});
      out.push_back(x);
    }
    ImageList list;
    for (const auto& x : out) list.image_sizes.push_back({x.size(-2), x.size(-1)});
    list.tensors = batch_images(out);
    return list;
  }

  torch::Tensor normalize(const torch::Tensor& img) const {
    const auto n = static_cast<int64_t>(options.image_mean().size());
    OSTEONET_CHECK(img.size(0) == n, "GeneralizedRCNNTransform: expected ", n, " channels (image_mean), got ",
                   img.size(0));
    auto o = img.options();
    auto mean = torch::tensor(options.image_mean(), torch::kDouble).to(o).view({-1, 1, 1});
    auto std = torch::tensor(options.image_std(), torch::kDouble).to(o).view({-1, 1, 1});
    return (img - mean) / std;
  }

  torch::Tensor resize(const torch::Tensor& img) const {
    const auto& ms = options.min_size();
    const int64_t size = is_training() && ms.size() > 1
                             ? ms[static_cast<size_t>(torch::randint(static_cast<int64_t>(ms.size()), {1}).item<int64_t>())]
                             : ms.back();
    const int64_t h = img.size(-2), w = img.size(-1);
    // float32 arithmetic as torchvision: scale = min(min_size / short, max_size / long)
    const float s = std::min(static_cast<float>(size) / static_cast<float>(std::min(h, w)),
                             static_cast<float>(options.max_size()) / static_cast<float>(std::max(h, w)));
    const auto oh = static_cast<int64_t>(std::floor(static_cast<double>(h) * static_cast<double>(s)));
    const auto ow = static_cast<int64_t>(std::floor(static_cast<double>(w) * static_cast<double>(s)));
    namespace F = torch::nn::functional;
    return F::interpolate(img.unsqueeze(0), F::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{oh, ow})
                                                .mode(torch::kBilinear)
                                                .align_corners(false))
        .squeeze(0);
  }

  torch::Tensor batch_images(const std::vector<torch::Tensor>& images) const {
    int64_t c = 0, h = 0, w = 0;
    for (const auto& x : images) {
      c = std::max(c, x.size(0));
      h = std::max(h, x.size(1));
      w = std::max(w, x.size(2));
    }
    const auto d = static_cast<double>(options.size_divisible());
    h = static_cast<int64_t>(std::ceil(static_cast<double>(h) / d) * d);
    w = static_cast<int64_t>(std::ceil(static_cast<double>(w) / d) * d);
    auto batch = torch::zeros({static_cast<int64_t>(images.size()), c, h, w}, images.at(0).options());
    using torch::indexing::Slice;
    for (size_t i = 0; i < images.size(); ++i) {
      const auto& x = images[i];
      batch.index_put_({static_cast<int64_t>(i), Slice(0, x.size(0)), Slice(0, x.size(1)), Slice(0, x.size(2))}, x);
    }
    return batch;
  }

  /// Maps detection boxes from the resized to the original image sizes.
  void postprocess(std::vector<Detection>& dets, const std::vector<std::array<int64_t, 2>>& sizes,
                   const std::vector<std::array<int64_t, 2>>& original) const {
    for (size_t i = 0; i < dets.size(); ++i) dets[i].boxes = resize_boxes(dets[i].boxes, sizes[i], original[i]);
  }

  TransformOptions options;
};
TORCH_MODULE(GeneralizedRCNNTransform);

}  // namespace osteonet::detection
