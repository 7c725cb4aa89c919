// Efficient Channel Attention (Wang et al., "ECA-Net", CVPR 2020): a 1-D convolution across channels.
#pragma once

#include <torch/torch.h>

#include <cmath>

#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"

namespace osteonet::attention {

/// Options for EfficientChannel.
///
/// Example:
/// ```
/// EfficientChannel eca(EfficientChannelOptions(512));  // kernel 5 chosen from the channel count
/// ```
struct EfficientChannelOptions {
  EfficientChannelOptions(int64_t channels = 0) : channels_(channels) {}  // NOLINT
  /// Channels of the input (and output) feature map.
  TORCH_ARG(int64_t, channels);
  /// Kernel of the 1-D convolution; 0 chooses it adaptively from the channel count.
  TORCH_ARG(int64_t, kernel_size) = 0;
  /// γ and b of the adaptive rule k = |(log2(C) + b) / γ|_odd.
  TORCH_ARG(double, gamma) = 2.0;
  TORCH_ARG(double, beta) = 1.0;
};

/// ECA's adaptive kernel: t = int(|(log2 C + b) / γ|), then t or t + 1, whichever is odd (the
/// rounding of the authors' reference code, which the paper writes |.|_odd). C=64 -> 3, 256 -> 5,
/// 2048 -> 7.
inline int64_t eca_kernel_size(int64_t channels, double gamma = 2.0, double beta = 1.0) {
  OSTEONET_CHECK(channels > 0, "eca_kernel_size: channels must be positive, got channels=", channels);
  const auto t = static_cast<int64_t>(std::abs((std::log2(static_cast<double>(channels)) + beta) / gamma));
  return t % 2 ? t : t + 1;
}

/// x * sigmoid(conv1d(avgpool(x))) with a bias-free 1-D convolution named `conv`.
class EfficientChannelImpl : public torch::nn::Cloneable<EfficientChannelImpl>,
                             public core::TensorInvocable<EfficientChannelImpl> {
 public:
  explicit EfficientChannelImpl(EfficientChannelOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    OSTEONET_CHECK(options.channels() > 0, "EfficientChannel: channels must be positive, got channels=", options.channels());
    OSTEONET_CHECK(options.kernel_size() == 0 || options.kernel_size() % 2 == 1,
                   "EfficientChannel: kernel_size must be odd (or 0 for adaptive), got kernel_size=", options.kernel_size());
    kernel_size = options.kernel_size() > 0 ? options.kernel_size()
                                            : eca_kernel_size(options.channels(), options.gamma(), options.beta());
    conv = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(1, 1, kernel_size)
                                                         .padding((kernel_size - 1) / 2)
                                                         .bias(false)));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    // Reshapes keep the batch free (-1), so a traced or exported program runs at any batch size.
    const int64_t c = x.size(1);
    auto y = torch::adaptive_avg_pool2d(x, {1, 1}).view({-1, 1, c});       // N x 1 x C
    y = torch::sigmoid(core::call(conv, y)).view({-1, c, 1, 1});            // N x C x 1 x 1
    return x * y;
  }

  EfficientChannelOptions options;
  int64_t kernel_size = 0;
  torch::nn::Conv1d conv{nullptr};
};
TORCH_MODULE(EfficientChannel);

}  // namespace osteonet::attention
