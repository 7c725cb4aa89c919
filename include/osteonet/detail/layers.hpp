// Small layer builders and weight initialisers shared by the backbones (internal).
#pragma once

#include <torch/torch.h>

#include <numeric>
#include <vector>

namespace osteonet::detail {

/// A Sequential with a plain Tensor -> Tensor forward, so it can nest inside another Sequential
/// (torchvision nests Conv2dNormActivation and block containers in `features`).
class SeqImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x) { return torch::nn::SequentialImpl::forward(std::move(x)); }
};
TORCH_MODULE(Seq);

/// Conv2d with torchvision's usual arguments; padding defaults to "same" for odd kernels.
inline torch::nn::Conv2d conv2d(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t padding = -1,
                                int64_t dilation = 1, int64_t groups = 1, bool bias = false) {
  if (padding < 0) padding = dilation * (k - 1) / 2;
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k)
                               .stride(stride)
                               .padding(padding)
                               .dilation(dilation)
                               .groups(groups)
                               .bias(bias));
}

/// Conv2d with a rectangular kernel (Inception's 1×7, 7×1, ...).
inline torch::nn::Conv2d conv2d_hw(int64_t in, int64_t out, std::array<int64_t, 2> k, std::array<int64_t, 2> pad,
                                   int64_t stride = 1, bool bias = false) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, torch::ExpandingArray<2>({k[0], k[1]}))
                               .stride(stride)
                               .padding(torch::ExpandingArray<2>({pad[0], pad[1]}))
                               .bias(bias));
}

inline torch::nn::BatchNorm2d batch_norm(int64_t c, double eps = 1e-5, double momentum = 0.1) {
  return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(c).eps(eps).momentum(momentum));
}

/// Largest group count <= `groups` that divides `channels` (gcd), so grouped convolutions of the
/// attention modules also fit narrow stages (a documented osteonet choice).
inline int64_t fit_groups(int64_t channels, int64_t groups) { return std::gcd(channels, std::max<int64_t>(groups, 1)); }

/// sum_i weights[:, i] * parts[i] for N x C x H x W parts and N x M x C weights (SK's and DS's branch
/// mixing; C = `channels`, as the caller has it, so that traces and ONNX graphs keep what they had),
/// reshaped with a free batch so traced programs run at any batch size; `in_place` writes into the
/// parts (only for the caller's own intermediates that nothing else observes).
inline torch::Tensor weighted_sum(std::vector<torch::Tensor>& parts, const torch::Tensor& weights, int64_t channels,
                                  bool in_place) {
  torch::Tensor sum;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto w = weights.select(1, static_cast<int64_t>(i)).view({-1, channels, 1, 1});
    if (in_place) {
      sum = sum.defined() ? sum.add_(parts[i].mul_(w)) : parts[i].mul_(w);
    } else {
      auto term = parts[i] * w;
      sum = sum.defined() ? sum + term : term;
    }
  }
  return sum;
}

/// Whether a grouped convolution with `channels_per_group` input channels per group runs faster on a
/// channels-last input on the CPU (its weight left in the default layout): oneDNN's grouped kernels
/// are 1.1-4x faster there up to 32 channels per group and up to 4x slower at 64 (2048 channels in 32
/// groups; benchmarks/results/attention_inference.md). The attention modules' inference layout.
inline bool channels_last_pays(int64_t channels_per_group) { return channels_per_group <= 32; }

/// torchvision's ResNet/VGG/MobileNet initialisation: Kaiming-normal (fan_out, ReLU) convolutions,
/// unit/zero norms, and N(0, linear_std) linears (linear_std <= 0 keeps PyTorch's default init).
inline void init_kaiming_fan_out(torch::nn::Module& root, double linear_std) {
  torch::NoGradGuard no_grad;
  // Module-specific initialisation (e.g. DS's zeroed fusion norm) is re-applied afterwards by
  // BackboneImpl::finish_init().
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (c->bias.defined()) torch::nn::init::zeros_(c->bias);
    } else if (auto* b = m->as<torch::nn::BatchNorm2dImpl>()) {
      if (b->weight.defined()) {
        torch::nn::init::ones_(b->weight);
        torch::nn::init::zeros_(b->bias);
      }
    } else if (auto* l = m->as<torch::nn::LinearImpl>()) {
      if (linear_std > 0) {
        torch::nn::init::normal_(l->weight, 0.0, linear_std);
        if (l->bias.defined()) torch::nn::init::zeros_(l->bias);
      }
    }
  }
}

}  // namespace osteonet::detail
