// Dual-Selective (DS) channel attention of DSNet (seed 000, §2.3, Fig. 2c): two branches with
// kernels 3 and 5, each followed by global average pooling and a fully connected layer that weights
// the channels of that branch; the two weighted branches are summed and fused by a 3×3 convolution
// with dilation 2.
//
// The paper leaves these open; osteonet's choices, each an option:
//  - branch convolutions: C -> C, grouped (groups = 32, reduced to gcd(32, C)), BatchNorm + ReLU
//    after each (as SK's paths); the 5 branch is a true 5×5 (`dilated_branches=true` makes it a 3×3
//    dilated by 2, SK's cheaper equivalent);
//  - channel weights: Eq. (2) is one FC with bias (`reduction=1`); `reduction=r>1` uses an SE-style
//    bottleneck C -> C/r -> C instead; the gate is a sigmoid per branch ("quadratic"/second weighting
//    of each branch), or `gate="softmax"` to make the two branches compete as in SK;
//  - fusion: 3×3 dilation-2 convolution (groups as the branches) + BatchNorm, no activation;
//  - the module is residual, out = x + fuse(Σ w_i ⊙ u_i), with the fusion BatchNorm's scale zeroed at
//    initialisation (`zero_init_fuse`), so inserting DS into a pretrained backbone starts from that
//    backbone's exact function (DSNet relies on transfer learning); `residual=false` returns the
//    fused map alone.
//
// Inference on the CPU (core::unobserved_cpu_inference: eval mode, autograd not recording, not
// tracing, no call site taken over by Python): the channel weighting, branch sum and residual add
// run in place, and with up to 32 channels per group (detail::channels_last_pays) the same modules
// run on a channels-last copy of the input, where oneDNN's grouped convolutions are up to 4x faster;
// the result comes back in the default layout (benchmarks/results/attention_inference.md).
// Training, gradients, hooks and tracing take the path as written.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::attention {

/// Options for DualSelective.
///
/// Example:
/// ```
/// DualSelective ds(DualSelectiveOptions(2048).reduction(16).gate("softmax"));
/// ```
struct DualSelectiveOptions {
  DualSelectiveOptions(int64_t channels = 0) : channels_(channels) {}  // NOLINT
  /// Channels of the input (and output) feature map.
  TORCH_ARG(int64_t, channels);
  /// Kernel sizes of the branches (the paper's 3 and 5).
  TORCH_ARG(std::vector<int64_t>, kernel_sizes) = std::vector<int64_t>{3, 5};
  /// Realise a k×k branch (k > 3) as a 3×3 convolution dilated by (k - 1) / 2.
  TORCH_ARG(bool, dilated_branches) = false;
  /// Groups of the branch and fusion convolutions; reduced to gcd(groups, channels).
  TORCH_ARG(int64_t, groups) = 32;
  /// 1: one FC C -> C with bias per branch (Eq. 2); r > 1: bottleneck C -> C/r -> C.
  TORCH_ARG(int64_t, reduction) = 1;
  /// "sigmoid" (independent weights per branch) or "softmax" (across branches).
  TORCH_ARG(std::string, gate) = "sigmoid";
  /// Kernel and dilation of the fusion convolution (3 and 2 in the paper).
  TORCH_ARG(int64_t, fuse_kernel) = 3;
  TORCH_ARG(int64_t, fuse_dilation) = 2;
  /// Add the input back (out = x + fused).
  TORCH_ARG(bool, residual) = true;
  /// Zero the fusion BatchNorm's scale so the module starts as the identity (needs residual).
  TORCH_ARG(bool, zero_init_fuse) = true;
};

/// The DS module; submodules `branches.i` (conv, BN, ReLU), `fcs.i`, `fuse` (conv, BN).
class DualSelectiveImpl : public torch::nn::Cloneable<DualSelectiveImpl>,
                          public core::TensorInvocable<DualSelectiveImpl> {
 public:
  explicit DualSelectiveImpl(DualSelectiveOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    const int64_t c = options.channels();
    OSTEONET_CHECK(c > 0, "DualSelective: channels must be positive, got channels=", c);
    OSTEONET_CHECK(!options.kernel_sizes().empty(), "DualSelective: needs at least one branch, got kernel_sizes of size 0");
    OSTEONET_CHECK(options.reduction() >= 1, "DualSelective: reduction must be >= 1, got reduction=", options.reduction());
    OSTEONET_CHECK(options.gate() == "sigmoid" || options.gate() == "softmax",
                   "DualSelective: gate must be 'sigmoid' or 'softmax', got gate='", options.gate(), "'");
    const int64_t groups = detail::fit_groups(c, options.groups());
    channels_last_ = detail::channels_last_pays(c / groups);
    branches = register_module("branches", torch::nn::ModuleList());
    fcs = register_module("fcs", torch::nn::ModuleList());
    for (int64_t k : options.kernel_sizes()) {
      OSTEONET_CHECK(k >= 1 && k % 2 == 1, "DualSelective: kernel sizes must be odd and positive, got kernel_size=", k);
      const bool dilate = options.dilated_branches() && k > 3;
      const int64_t kernel = dilate ? 3 : k, dilation = dilate ? (k - 1) / 2 : 1;
      branches->push_back(detail::Seq(detail::conv2d(c, c, kernel, 1, -1, dilation, groups),
                                                detail::batch_norm(c), torch::nn::ReLU(true)));
      if (options.reduction() == 1) {
        fcs->push_back(torch::nn::Linear(c, c));
      } else {
        const int64_t hidden = std::max<int64_t>(c / options.reduction(), 8);
        fcs->push_back(torch::nn::Sequential(torch::nn::Linear(c, hidden), torch::nn::ReLU(true),
                                             torch::nn::Linear(hidden, c)));
      }
    }
    fuse = register_module("fuse", torch::nn::Sequential(
                                        detail::conv2d(c, c, options.fuse_kernel(), 1, -1, options.fuse_dilation(), groups),
                                        detail::batch_norm(c)));
    init_weights();
  }

  /// Zeroes the fusion norm's scale when configured (backbones call it again after their own init).
  void init_weights() {
    if (options.residual() && options.zero_init_fuse()) {
      torch::NoGradGuard no_grad;
      fuse[1]->as<torch::nn::BatchNorm2d>()->weight.zero_();
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const bool inference = core::unobserved_cpu_inference(*this, x);
    const auto in = inference && channels_last_ ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
    const int64_t c = x.size(1);
    std::vector<torch::Tensor> us, ws;
    for (size_t i = 0; i < branches->size(); ++i) {
      auto u = core::call(*branches[i]->as<detail::SeqImpl>(), in);
      auto pooled = torch::adaptive_avg_pool2d(u, {1, 1}).flatten(1);  // Eq. (1)
      torch::Tensor w = options.reduction() == 1 ? core::call(*fcs[i]->as<torch::nn::LinearImpl>(), pooled)
                                                 : core::call(*fcs[i]->as<torch::nn::SequentialImpl>(), pooled);  // Eq. (2)
      us.push_back(std::move(u));
      ws.push_back(std::move(w));
    }
    auto w = torch::stack(ws, 1);  // N M C
    w = options.gate() == "softmax" ? w.softmax(1) : torch::sigmoid(w);
    auto s = detail::weighted_sum(us, w, c, inference);
    auto y = core::call(fuse, s);
    if (inference) return (options.residual() ? y.add_(in) : y).contiguous();
    return options.residual() ? x + y : y;
  }

  std::vector<std::string> walked_children() const override { return {"branches", "fcs"}; }

  DualSelectiveOptions options;
  torch::nn::ModuleList branches{nullptr}, fcs{nullptr};
  torch::nn::Sequential fuse{nullptr};

 private:
  bool channels_last_ = false;  // the inference layout (detail::channels_last_pays)
};
TORCH_MODULE(DualSelective);

}  // namespace osteonet::attention
