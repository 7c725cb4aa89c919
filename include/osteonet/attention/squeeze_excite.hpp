// Squeeze-and-Excitation channel attention (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).
#pragma once

#include <torch/torch.h>

#include <string>

#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"

namespace osteonet::attention {

/// Options for SqueezeExcite.
///
/// Example:
/// ```
/// SqueezeExcite se(SqueezeExciteOptions(256).reduction(16));
/// ```
struct SqueezeExciteOptions {
  SqueezeExciteOptions(int64_t channels = 0) : channels_(channels) {}  // NOLINT
  /// Channels of the input (and output) feature map.
  TORCH_ARG(int64_t, channels);
  /// Bottleneck ratio r: the hidden layer has channels / r units (SENet's r = 16).
  TORCH_ARG(int64_t, reduction) = 16;
  /// Floor of the hidden width, so narrow stages keep a usable bottleneck.
  TORCH_ARG(int64_t, min_channels) = 8;
  /// Explicit hidden width (overrides reduction; MobileNetV3 uses make_divisible(C / 4, 8)).
  TORCH_ARG(int64_t, hidden_channels) = 0;
  /// Gate: "sigmoid" (SENet) or "hardsigmoid" (MobileNetV3).
  TORCH_ARG(std::string, gate) = "sigmoid";
};

/// x * sigmoid(fc2(relu(fc1(avgpool(x))))), the FCs as 1×1 convolutions with bias (fc1, fc2).
class SqueezeExciteImpl : public torch::nn::Cloneable<SqueezeExciteImpl>,
                          public core::TensorInvocable<SqueezeExciteImpl> {
 public:
  explicit SqueezeExciteImpl(SqueezeExciteOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    OSTEONET_CHECK(options.channels() > 0, "SqueezeExcite: channels must be positive, got channels=", options.channels());
    OSTEONET_CHECK(options.reduction() > 0, "SqueezeExcite: reduction must be positive, got reduction=", options.reduction());
    OSTEONET_CHECK(options.gate() == "sigmoid" || options.gate() == "hardsigmoid",
                   "SqueezeExcite: gate must be 'sigmoid' or 'hardsigmoid', got gate='", options.gate(), "'");
    hard_gate_ = options.gate() == "hardsigmoid";
    const int64_t hidden = options.hidden_channels() > 0
                               ? options.hidden_channels()
                               : std::max(options.channels() / options.reduction(), options.min_channels());
    fc1 = register_module("fc1", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(), hidden, 1)));
    fc2 = register_module("fc2", torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, options.channels(), 1)));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto s = torch::adaptive_avg_pool2d(x, {1, 1});  // as torchvision (exports as GlobalAveragePool)
    s = core::call(fc2, torch::relu(core::call(fc1, s)));
    s = hard_gate_ ? torch::hardsigmoid(s) : torch::sigmoid(s);
    return x * s;
  }

  SqueezeExciteOptions options;
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};

 private:
  bool hard_gate_ = false;
};
TORCH_MODULE(SqueezeExcite);

}  // namespace osteonet::attention
