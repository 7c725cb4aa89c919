// Normalisation layers of the backbones: torchvision's FrozenBatchNorm2d (fixed statistics and affine
// parameters, all four as buffers; what torchvision's pretrained detectors use) and `Norm2d`, one
// handle over BatchNorm2d or FrozenBatchNorm2d so a backbone picks its norm at construction.
#pragma once

#include <torch/torch.h>

#include <memory>

namespace osteonet::detail {

/// torchvision.ops.misc.FrozenBatchNorm2d: buffers weight, bias, running_mean, running_var (no
/// num_batches_tracked); y = x * scale + (bias - running_mean * scale), scale = weight * rsqrt(var + eps).
class FrozenBatchNorm2dImpl : public torch::nn::Cloneable<FrozenBatchNorm2dImpl> {
 public:
  explicit FrozenBatchNorm2dImpl(int64_t num_features, double eps = 1e-5) : num_features_(num_features), eps_(eps) {
    reset();
  }
  void reset() override {
    weight = register_buffer("weight", torch::ones({num_features_}));
    bias = register_buffer("bias", torch::zeros({num_features_}));
    running_mean = register_buffer("running_mean", torch::zeros({num_features_}));
    running_var = register_buffer("running_var", torch::ones({num_features_}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto w = weight.reshape({1, -1, 1, 1}), b = bias.reshape({1, -1, 1, 1});
    auto rv = running_var.reshape({1, -1, 1, 1}), rm = running_mean.reshape({1, -1, 1, 1});
    auto scale = w * (rv + eps_).rsqrt();
    auto shift = b - rm * scale;
    return x * scale + shift;
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "FrozenBatchNorm2d(" << num_features_ << ", eps=" << eps_ << ")";
  }
  double eps() const { return eps_; }

  torch::Tensor weight, bias, running_mean, running_var;

 private:
  int64_t num_features_;
  double eps_;
};
TORCH_MODULE(FrozenBatchNorm2d);

/// BatchNorm2d (eps 1e-5, momentum 0.1) or FrozenBatchNorm2d behind one callable handle. Register
/// `ptr()` under the torchvision name; `weight()` is the BN scale (parameter or buffer).
class Norm2d {
 public:
  Norm2d(std::nullptr_t) {}  // NOLINT: empty, like ModuleHolder's {nullptr}
  Norm2d(int64_t channels, bool frozen) {
    if (frozen)
      frozen_ = FrozenBatchNorm2d(channels);
    else
      bn_ = torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(channels).eps(1e-5).momentum(0.1));
  }
  torch::Tensor operator()(const torch::Tensor& x) { return bn_ ? bn_(x) : frozen_(x); }
  torch::Tensor forward(const torch::Tensor& x) { return (*this)(x); }
  std::shared_ptr<torch::nn::Module> ptr() const {
    return bn_ ? std::static_pointer_cast<torch::nn::Module>(bn_.ptr())
               : std::static_pointer_cast<torch::nn::Module>(frozen_.ptr());
  }
  torch::Tensor& weight() { return bn_ ? bn_->weight : frozen_->weight; }
  bool frozen() const { return !bn_; }
  explicit operator bool() const { return bn_ || frozen_; }

 private:
  torch::nn::BatchNorm2d bn_{nullptr};
  FrozenBatchNorm2d frozen_{nullptr};
};

}  // namespace osteonet::detail
