// Scan-level OVF diagnosis of seed 002 (§3.2 preprocessing, §2 pipeline): centre sagittal slices ->
// 224 x 224, grey -> 3 channels, pixel-mean subtraction -> ovf_resnet34 -> aggregator -> probability.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>

#include "osteonet/core/error.hpp"
#include "osteonet/sequence/aggregators.hpp"
#include "osteonet/sequence/slice_encoder.hpp"

namespace osteonet::sequence {

// ---- preprocessing ---------------------------------------------------------------------------

/// First index and count of the centre `fraction` of `num_slices` slices (§3.2: the centre 5 %),
/// at least `min_slices` (and at most all). The count is round(fraction * num_slices); when the
/// remainder is odd the extra slice falls on the low side.
inline std::pair<int64_t, int64_t> center_slice_range(int64_t num_slices, double fraction, int64_t min_slices = 1) {
  OSTEONET_CHECK(num_slices > 0, "center_slice_range: the volume needs at least one slice, got num_slices=", num_slices);
  OSTEONET_CHECK(fraction > 0.0 && fraction <= 1.0, "center_slice_range: fraction must lie in (0, 1], got fraction=",
                 fraction);
  OSTEONET_CHECK(min_slices >= 1, "center_slice_range: min_slices must be >= 1, got min_slices=", min_slices);
  int64_t count = static_cast<int64_t>(std::llround(fraction * static_cast<double>(num_slices)));
  count = std::min(num_slices, std::max(count, min_slices));
  return {(num_slices - count) / 2, count};
}

/// The centre slices of a sagittal-first volume (S x H x W or S x 1 x H x W).
inline torch::Tensor select_center_slices(const torch::Tensor& volume, double fraction, int64_t min_slices = 1) {
  OSTEONET_CHECK(volume.dim() == 3 || volume.dim() == 4,
                 "select_center_slices: expected S x H x W or S x 1 x H x W, got shape ", volume.sizes());
  auto [start, count] = center_slice_range(volume.size(0), fraction, min_slices);
  return volume.narrow(0, start, count);
}

/// T x 1 x H x W float slices from T x H x W or T x 1 x H x W (any real dtype).
inline torch::Tensor as_slice_batch(const torch::Tensor& slices, const std::string& where) {
  OSTEONET_CHECK(slices.defined(), where, ": expected a slice tensor, got an undefined tensor");
  OSTEONET_CHECK(slices.dim() == 3 || (slices.dim() == 4 && slices.size(1) == 1), where,
                 ": expected T x H x W or T x 1 x H x W grey slices, got shape ", slices.sizes());
  OSTEONET_CHECK(slices.size(0) > 0, where, ": expected at least one slice, got shape ", slices.sizes());
  auto x = slices.dim() == 3 ? slices.unsqueeze(1) : slices;
  return x.is_floating_point() ? x : x.to(torch::kFloat);
}

/// Bilinear resize of N x C x H x W to size x size (§3.2: 512 -> 224), antialiased when shrinking.
inline torch::Tensor resize_slices(const torch::Tensor& x, int64_t size, bool antialias = true) {
  OSTEONET_CHECK(size > 0, "resize_slices: size must be positive, got size=", size);
  if (x.size(2) == size && x.size(3) == size) return x;
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{size, size})
                               .mode(torch::kBilinear)
                               .align_corners(false)
                               .antialias(antialias));
}

/// Grey (N x 1 x H x W) copied to 3 channels (§3.2).
inline torch::Tensor grey_to_rgb(const torch::Tensor& x) {
  OSTEONET_CHECK(x.dim() == 4 && x.size(1) == 1, "grey_to_rgb: expected N x 1 x H x W, got shape ", x.sizes());
  return x.expand({-1, 3, -1, -1}).contiguous();
}

/// Pixel-mean subtraction (§3.2): `mean` is a scalar tensor or an H x W (or 1 x 1 x H x W) mean image
/// computed on the training slices (see pixel_mean); an undefined `mean` leaves `x` unchanged.
inline torch::Tensor subtract_pixel_mean(const torch::Tensor& x, const torch::Tensor& mean) {
  if (!mean.defined()) return x;
  OSTEONET_CHECK(mean.numel() == 1 || (mean.size(-1) == x.size(-1) && mean.size(-2) == x.size(-2) && mean.numel() ==
                                                                                                      x.size(-1) * x.size(-2)),
                 "subtract_pixel_mean: the mean must be a scalar or one ", x.size(-2), "x", x.size(-1),
                 " image, got shape ", mean.sizes());
  auto m = mean.numel() == 1 ? mean.reshape({}) : mean.reshape({1, 1, x.size(-2), x.size(-1)});
  return x - m.to(x.device(), x.scalar_type());
}

/// The per-pixel mean image (1 x 1 x size x size) of training slices (N x H x W or N x 1 x H x W),
/// after the same resize the pipeline applies.
inline torch::Tensor pixel_mean(const torch::Tensor& slices, int64_t size = 224, bool antialias = true) {
  auto x = resize_slices(as_slice_batch(slices, "pixel_mean"), size, antialias);
  return x.mean(0, /*keepdim=*/true);
}

/// Training augmentation (§3.2): a random rotation in [-max_degrees, max_degrees] and a random
/// horizontal shift in [-max_shift, max_shift] (fraction of the width) per image of N x C x H x W,
/// bilinear, zero outside. `same_for_all` draws one transform for the batch (one scan's slices).
inline torch::Tensor random_rotate_shift(const torch::Tensor& x, double max_degrees, double max_shift,
                                         bool same_for_all = false) {
  OSTEONET_CHECK(x.dim() == 4, "random_rotate_shift: expected N x C x H x W, got shape ", x.sizes());
  OSTEONET_CHECK(max_degrees >= 0 && max_shift >= 0, "random_rotate_shift: ranges must be >= 0, got max_degrees=",
                 max_degrees, " max_shift=", max_shift);
  const int64_t n = same_for_all ? 1 : x.size(0);
  auto opts = x.options();
  auto angle = (torch::rand({n}, opts) * 2 - 1) * (max_degrees * 3.14159265358979323846 / 180.0);
  auto shift = (torch::rand({n}, opts) * 2 - 1) * (2.0 * max_shift);  // normalised coords span 2
  auto c = torch::cos(angle), s = torch::sin(angle), z = torch::zeros_like(c);
  // Rotation about the centre in pixel units (aspect-corrected), then the shift along x.
  const double r = static_cast<double>(x.size(2)) / static_cast<double>(x.size(3));
  auto theta = torch::stack({torch::stack({c, -s * r, shift}, 1), torch::stack({s / r, c, z}, 1)}, 1);
  if (same_for_all) theta = theta.expand({x.size(0), 2, 3});
  namespace F = torch::nn::functional;
  auto grid = F::affine_grid(theta, {x.size(0), x.size(1), x.size(2), x.size(3)}, /*align_corners=*/false);
  return F::grid_sample(x, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(false));
}

/// Options for ScanPipeline.
struct ScanPipelineOptions {
  /// Fraction of the sagittal slices kept around the centre (§3.2: 5 %).
  TORCH_ARG(double, center_fraction) = 0.05;
  /// Fewest slices kept (thin volumes).
  TORCH_ARG(int64_t, min_slices) = 1;
  /// Side of the network input (§3.2: 224).
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(bool, antialias) = true;
  /// Decision threshold on the scan probability (>= threshold is positive; §3.5: 0.5).
  TORCH_ARG(double, threshold) = 0.5;
  /// Slices per encoder forward (bounds memory; results do not depend on it in eval mode).
  TORCH_ARG(int64_t, chunk_size) = 64;
};

/// One scan's result.
struct ScanPrediction {
  /// Scan-level fracture probability (0-d tensor).
  torch::Tensor probability;
  /// Each selected slice's own probability (T): sigmoid of the encoder's logit.
  torch::Tensor slice_probabilities;
  /// The selected slices' indices in the input volume (T, int64).
  torch::Tensor slice_indices;
  bool positive = false;
};

/// The whole method for one scan: preprocessing, the slice encoder (per-slice probabilities and
/// 32-d features) and an aggregator. Runs the modules in their current mode under NoGradGuard
/// (call eval() on both first for inference).
class ScanPipeline {
 public:
  ScanPipeline(std::shared_ptr<OvfResNet34Impl> encoder, AggregatorPtr aggregator, ScanPipelineOptions options = {},
               torch::Tensor pixel_mean = {})
      : encoder_(std::move(encoder)), aggregator_(std::move(aggregator)), options_(options),
        pixel_mean_(std::move(pixel_mean)) {
    OSTEONET_CHECK(encoder_ && aggregator_, "ScanPipeline: needs an encoder and an aggregator");
    OSTEONET_CHECK(encoder_->num_classes() == 1, "ScanPipeline: the encoder must output one logit, got num_classes=",
                   encoder_->num_classes());
    OSTEONET_CHECK(aggregator_->takes_probabilities() || aggregator_->input_dim() == encoder_->options.embed_dim(),
                   "ScanPipeline: the aggregator expects ", aggregator_->input_dim(),
                   " features per slice, the encoder gives embed_dim=", encoder_->options.embed_dim());
    OSTEONET_CHECK(options_.chunk_size() > 0, "ScanPipeline: chunk_size must be positive, got chunk_size=",
                   options_.chunk_size());
  }

  /// Network input from raw grey slices (T x H x W or T x 1 x H x W): resize, mean subtraction, 3 channels.
  torch::Tensor preprocess(const torch::Tensor& slices) const {
    auto x = as_slice_batch(slices, "ScanPipeline.preprocess");
    x = resize_slices(x, options_.image_size(), options_.antialias());
    return grey_to_rgb(subtract_pixel_mean(x, pixel_mean_));
  }

  /// Prediction from already selected slices (T x H x W or T x 1 x H x W).
  ScanPrediction predict_slices(const torch::Tensor& slices) {
    torch::NoGradGuard no_grad;
    auto raw = as_slice_batch(slices, "ScanPipeline.predict_slices");
    const auto& probe = encoder_->fc1->weight;
    std::vector<torch::Tensor> feats, logits;
    for (int64_t s = 0; s < raw.size(0); s += options_.chunk_size()) {
      auto chunk = raw.narrow(0, s, std::min(options_.chunk_size(), raw.size(0) - s));
      auto x = preprocess(chunk.to(probe.device(), probe.scalar_type()));
      auto f = encoder_->features(x);
      feats.push_back(f);
      logits.push_back(encoder_->head(f).squeeze(1));
    }
    ScanPrediction out;
    out.slice_probabilities = torch::sigmoid(torch::cat(logits));
    auto input = aggregator_->takes_probabilities() ? out.slice_probabilities.view({1, -1, 1})
                                                     : torch::cat(feats).unsqueeze(0);
    out.probability = aggregator_->forward(input, {}).squeeze(0);
    out.slice_indices = torch::arange(raw.size(0), torch::kLong);
    out.positive = out.probability.item<double>() >= options_.threshold();
    return out;
  }

  /// Prediction from a whole sagittal-first volume (S x H x W): the centre slices are selected first.
  ScanPrediction predict_volume(const torch::Tensor& volume) {
    OSTEONET_CHECK(volume.dim() == 3 || volume.dim() == 4,
                   "ScanPipeline.predict_volume: expected a sagittal-first volume S x H x W, got shape ", volume.sizes());
    auto [start, count] = center_slice_range(volume.size(0), options_.center_fraction(), options_.min_slices());
    auto out = predict_slices(volume.narrow(0, start, count));
    out.slice_indices += start;
    return out;
  }

  const ScanPipelineOptions& options() const { return options_; }
  const torch::Tensor& pixel_mean() const { return pixel_mean_; }

 private:
  std::shared_ptr<OvfResNet34Impl> encoder_;
  AggregatorPtr aggregator_;
  ScanPipelineOptions options_;
  torch::Tensor pixel_mean_;
};

}  // namespace osteonet::sequence
