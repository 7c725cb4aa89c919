// Parameter-free activation modules the C++ frontend lacks (Hardswish), for Sequential containers.
#pragma once

#include <torch/torch.h>

#include <string>

#include "osteonet/core/call.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::detail {

/// Hardswish, in place by default as torchvision's `nn.Hardswish(inplace=True)` in MobileNetV3 (it
/// follows a norm or a linear layer, whose output nothing else keeps).
class HardswishImpl : public torch::nn::Cloneable<HardswishImpl>, public core::TensorInvocable<HardswishImpl> {
 public:
  explicit HardswishImpl(bool inplace = true) : inplace_(inplace) {}
  void reset() override {}
  torch::Tensor forward(torch::Tensor x) { return inplace_ ? torch::hardswish_(x) : torch::hardswish(x); }
  bool inplace() const { return inplace_; }

 private:
  bool inplace_;
};
TORCH_MODULE(Hardswish);

/// torchvision's Conv2dNormActivation: a Sequential [conv, norm, (act)], act "relu", "relu6",
/// "hardswish" or "" (none).
inline Seq conv_norm_act(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups,
                                           const std::string& act, double eps = 1e-5, double momentum = 0.1,
                                           int64_t dilation = 1) {
  Seq seq(conv2d(in, out, k, stride, -1, dilation, groups), batch_norm(out, eps, momentum));
  if (act == "relu") seq->push_back(torch::nn::ReLU(true));
  if (act == "relu6") seq->push_back(torch::nn::ReLU6(true));
  if (act == "hardswish") seq->push_back(Hardswish());
  return seq;
}

/// torchvision's _make_divisible: round to a multiple of `divisor`, never below 90 % of v.
inline int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t nv = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

}  // namespace osteonet::detail
