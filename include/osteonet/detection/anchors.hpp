// Anchor generator of the RPN (Ren et al., NeurIPS 2015), torchvision 0.14's AnchorGenerator: per
// level, sizes x aspect ratios base anchors (rounded), shifted over the feature grid.
#pragma once

#include <torch/torch.h>

#include "osteonet/core/call.hpp"

#include <array>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::detection {

/// Anchor sizes and aspect ratios per feature level.
struct AnchorGeneratorOptions {
  /// Sizes per level (torchvision's FPN default: ((32,), (64,), (128,), (256,), (512,))).
  TORCH_ARG(std::vector<std::vector<double>>, sizes) = {{32}, {64}, {128}, {256}, {512}};
  /// Aspect ratios (h / w) per level.
  TORCH_ARG(std::vector<std::vector<double>>, aspect_ratios) =
      std::vector<std::vector<double>>(5, std::vector<double>{0.5, 1.0, 2.0});
};

class AnchorGeneratorImpl : public torch::nn::Cloneable<AnchorGeneratorImpl>, public core::Invocable {
 public:
  explicit AnchorGeneratorImpl(AnchorGeneratorOptions options = {}) : options(std::move(options)) { reset(); }

  void reset() override {
    OSTEONET_CHECK(options.sizes().size() == options.aspect_ratios().size(),
                   "AnchorGenerator: sizes and aspect_ratios need one entry per level, got ", options.sizes().size(),
                   " and ", options.aspect_ratios().size());
    cell_anchors_.clear();
    for (size_t l = 0; l < options.sizes().size(); ++l)
      cell_anchors_.push_back(generate_anchors(options.sizes()[l], options.aspect_ratios()[l]));
  }

  /// Base anchors centred at 0 (A x 4), rounded as torchvision does.
  static torch::Tensor generate_anchors(const std::vector<double>& sizes, const std::vector<double>& ratios) {
    auto scales = torch::tensor(sizes, torch::kFloat);
    auto ar = torch::tensor(ratios, torch::kFloat);
    auto h_ratios = torch::sqrt(ar);
    auto w_ratios = 1 / h_ratios;
    auto ws = (w_ratios.unsqueeze(1) * scales.unsqueeze(0)).view(-1);
    auto hs = (h_ratios.unsqueeze(1) * scales.unsqueeze(0)).view(-1);
    return (torch::stack({-ws, -hs, ws, hs}, 1) / 2).round();
  }

  std::vector<int64_t> num_anchors_per_location() const {
    std::vector<int64_t> n;
    for (size_t l = 0; l < options.sizes().size(); ++l)
      n.push_back(static_cast<int64_t>(options.sizes()[l].size() * options.aspect_ratios()[l].size()));
    return n;
  }

  /// Anchors of every level for an image batch padded to `batch_hw` (the same for every image):
  /// (sum_l H_l * W_l * A_l) x 4.
  torch::Tensor forward(std::array<int64_t, 2> batch_hw, const std::vector<torch::Tensor>& features) {
    OSTEONET_CHECK(features.size() == cell_anchors_.size(), "AnchorGenerator: got ", features.size(),
                   " feature maps but anchors for ", cell_anchors_.size(), " levels");
    std::vector<torch::Tensor> all;
    for (size_t l = 0; l < features.size(); ++l) {
      const int64_t gh = features[l].size(-2), gw = features[l].size(-1);
      const int64_t sh = batch_hw[0] / gh, sw = batch_hw[1] / gw;
      auto dev = features[l].device();
      auto base = cell_anchors_[l].to(features[l].options());
      auto iopt = torch::TensorOptions().dtype(torch::kInt).device(dev);
      auto shifts_x = torch::arange(0, gw, iopt) * sw;
      auto shifts_y = torch::arange(0, gh, iopt) * sh;
      auto grids = torch::meshgrid({shifts_y, shifts_x}, "ij");
      auto sy = grids[0].reshape(-1), sx = grids[1].reshape(-1);
      auto shifts = torch::stack({sx, sy, sx, sy}, 1);
      all.push_back((shifts.view({-1, 1, 4}) + base.view({1, -1, 4})).reshape({-1, 4}));
    }
    return torch::cat(all, 0);
  }

  AnchorGeneratorOptions options;

 private:
  std::vector<torch::Tensor> cell_anchors_;
};
TORCH_MODULE(AnchorGenerator);

}  // namespace osteonet::detection
