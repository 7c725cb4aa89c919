// Selective Kernel convolution (Li et al., "Selective Kernel Networks", CVPR 2019), as published:
// M = 2 paths (3×3 and 3×3 dilated by 2, the "5×5"), grouped convs G = 32, d = max(C / r, L) with
// r = 16 and L = 32, softmax across the paths. It replaces a 3×3 convolution (and may take a stride).
// At a training batch of one the pooled descriptor's BatchNorm uses its running statistics (pooled_norm).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::attention {

/// Options for SelectiveKernel.
///
/// Example:
/// ```
/// SelectiveKernel sk(SelectiveKernelOptions(128, 128).stride(2));
/// ```
struct SelectiveKernelOptions {
  SelectiveKernelOptions(int64_t in_channels = 0, int64_t out_channels = 0)  // NOLINT
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  /// Output channels; 0 means equal to in_channels.
  TORCH_ARG(int64_t, out_channels);
  /// Stride of every path (SK replaces the strided 3×3 of a block).
  TORCH_ARG(int64_t, stride) = 1;
  /// Dilation of each path's 3×3 kernel; one path per entry (M = 2 as published: {1, 2}).
  TORCH_ARG(std::vector<int64_t>, dilations) = std::vector<int64_t>{1, 2};
  /// Groups of the path convolutions (G = 32); reduced to gcd(G, channels) for narrow maps.
  TORCH_ARG(int64_t, groups) = 32;
  /// Reduction r of the fuse layer.
  TORCH_ARG(int64_t, reduction) = 16;
  /// Floor L of the fuse layer's width d = max(C / r, L).
  TORCH_ARG(int64_t, min_attn_channels) = 32;
};

/// paths.i = conv3×3(dilation_i) + BN + ReLU; U = Σ paths; z = ReLU(BN(fc_reduce(GAP(U))));
/// a = softmax over paths of fc_select(z); out = Σ a_i ⊙ path_i (timm's layout and names).
class SelectiveKernelImpl : public torch::nn::Cloneable<SelectiveKernelImpl>,
                            public core::TensorInvocable<SelectiveKernelImpl> {
 public:
  explicit SelectiveKernelImpl(SelectiveKernelOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    const int64_t in = options.in_channels();
    const int64_t out = options.out_channels() > 0 ? options.out_channels() : in;
    OSTEONET_CHECK(in > 0, "SelectiveKernel: in_channels must be positive, got in_channels=", in);
    OSTEONET_CHECK(options.dilations().size() >= 2, "SelectiveKernel: needs at least 2 paths, got dilations of size ",
                   options.dilations().size());
    OSTEONET_CHECK(options.reduction() > 0, "SelectiveKernel: reduction must be positive, got reduction=", options.reduction());
    const int64_t groups = detail::fit_groups(std::gcd(in, out), options.groups());
    channels_last_ = detail::channels_last_pays(in / groups);
    paths = register_module("paths", torch::nn::ModuleList());
    for (int64_t d : options.dilations()) {
      OSTEONET_CHECK(d >= 1, "SelectiveKernel: dilations must be >= 1, got dilation=", d);
      paths->push_back(detail::Seq(detail::conv2d(in, out, 3, options.stride(), d, d, groups),
                                             detail::batch_norm(out), torch::nn::ReLU(true)));
    }
    const int64_t d = std::max(out / options.reduction(), options.min_attn_channels());
    const auto num_paths = static_cast<int64_t>(options.dilations().size());
    fc_reduce = register_module("fc_reduce", detail::conv2d(out, d, 1));
    bn = register_module("bn", detail::batch_norm(d));
    fc_select = register_module("fc_select", detail::conv2d(d, out * num_paths, 1));
    out_channels = out;
  }

  torch::Tensor forward(const torch::Tensor& x) {
    // Four-dimensional maps throughout and reshapes with a free batch (-1): a traced or exported
    // program runs at any batch size and in ONNX runtimes without 5-D support. CPU inference weights
    // the paths in place and runs them channels-last where that pays (as DualSelective; same outputs).
    const bool inference = core::unobserved_cpu_inference(*this, x);
    const auto in = inference && channels_last_ ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
    std::vector<torch::Tensor> outs;
    outs.reserve(paths->size());
    for (const auto& p : *paths) outs.push_back(core::call(*p->as<detail::SeqImpl>(), in));
    auto u = outs[0];
    for (size_t i = 1; i < outs.size(); ++i) u = u + outs[i];                  // N C H W
    auto s = torch::adaptive_avg_pool2d(u, {1, 1});                            // N C 1 1
    auto a = core::call(fc_select, torch::relu(pooled_norm(core::call(fc_reduce, s))));  // N (M C) 1 1
    a = a.view({-1, static_cast<int64_t>(outs.size()), out_channels}).softmax(1);          // N M C
    auto out = detail::weighted_sum(outs, a, out_channels, inference);
    return inference ? out.contiguous() : out;
  }

  std::vector<std::string> walked_children() const override { return {"paths"}; }

  /// The norm of the pooled descriptor. A training batch of one has one value per channel, no batch
  /// statistics (BatchNorm raises "Expected more than 1 value per channel"): detectors train at one image
  /// per batch, so there the norm uses its running statistics (as in eval, not updated), for that call only.
  torch::Tensor pooled_norm(const torch::Tensor& z) {
    if (!(is_training() && z.size(0) == 1)) return core::call(bn, z);
    bn->eval();
    struct Restore {
      torch::nn::BatchNorm2d& m;
      ~Restore() { m->train(); }
    } restore{bn};
    return core::call(bn, z);
  }

  SelectiveKernelOptions options;
  int64_t out_channels = 0;
  torch::nn::ModuleList paths{nullptr};
  torch::nn::Conv2d fc_reduce{nullptr}, fc_select{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};

 private:
  bool channels_last_ = false;  // the inference layout (detail::channels_last_pays)
};
TORCH_MODULE(SelectiveKernel);

}  // namespace osteonet::attention
