// Feature pyramid network (Lin et al., CVPR 2017), torchvision 0.14's FeaturePyramidNetwork with
// LastLevelMaxPool: 1x1 lateral convs (`inner_blocks.i.0`), nearest top-down upsampling, 3x3 output
// convs (`layer_blocks.i.0`), and a stride-2 max-pool of the coarsest output ("pool").
#pragma once

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/torch.h>

#include <vector>

#include "osteonet/core/call.hpp"
#include "osteonet/detail/layers.hpp"

namespace osteonet::detection {

class FeaturePyramidNetworkImpl : public torch::nn::Cloneable<FeaturePyramidNetworkImpl>, public core::Invocable {
 public:
  FeaturePyramidNetworkImpl(std::vector<int64_t> in_channels_list, int64_t out_channels, bool last_level_max_pool = true)
      : in_(std::move(in_channels_list)), out_(out_channels), pool_(last_level_max_pool) {
    reset();
  }
  void reset() override {
    inner_blocks = register_module("inner_blocks", torch::nn::ModuleList());
    layer_blocks = register_module("layer_blocks", torch::nn::ModuleList());
    for (auto c : in_) {
      OSTEONET_CHECK(c > 0, "FeaturePyramidNetwork: in_channels must be positive, got ", c);
      inner_blocks->push_back(detail::Seq(detail::conv2d(c, out_, 1, 1, 0, 1, 1, true)));
      layer_blocks->push_back(detail::Seq(detail::conv2d(out_, out_, 3, 1, 1, 1, 1, true)));
    }
    torch::NoGradGuard g;
    for (auto& m : modules(false))
      if (auto* c = m->as<torch::nn::Conv2dImpl>()) {
        torch::nn::init::kaiming_uniform_(c->weight, 1.0);
        torch::nn::init::zeros_(c->bias);
      }
  }
  int64_t num_outputs() const { return static_cast<int64_t>(in_.size()) + (pool_ ? 1 : 0); }

  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& x) {
    namespace F = torch::nn::functional;
    const auto n = static_cast<int64_t>(x.size());
    OSTEONET_CHECK(n == static_cast<int64_t>(in_.size()), "FeaturePyramidNetwork: expected ", in_.size(),
                   " feature maps, got ", n);
    std::vector<torch::Tensor> results(static_cast<size_t>(n));
    auto last_inner = inner(n - 1, x.back());
    results[n - 1] = layer(n - 1, last_inner);
    for (int64_t i = n - 2; i >= 0; --i) {
      // lateral + nearest-upsampled coarser map.
      auto lateral = inner(i, x[i]);
      const int64_t H = lateral.size(-2), W = lateral.size(-1), h = last_inner.size(-2), w = last_inner.size(-1);
      auto upsample = [&] {
        return F::interpolate(last_inner,
                              F::InterpolateFuncOptions().size(std::vector<int64_t>{H, W}).mode(torch::kNearest));
      };
      if (torch::jit::tracer::isTracing()) {
        // Traced programs (runtime sessions) keep torchvision's out-of-place form: TorchScript's
        // freeze + optimize_for_inference passes (oneDNN layouts) mishandle in-place adds on views.
        lateral = lateral + upsample();
      } else if (H == 2 * h && W == 2 * w) {
        // Exactly 2x (nearest: source index floor(i / 2)): each coarse value is broadcast onto its
        // 2 x 2 block and added in place, the same sums as interpolate + add without materialising
        // the upsampled map or a new sum (two full-resolution temporaries at the finest level).
        const int64_t N = lateral.size(0), C = lateral.size(1);
        lateral.view({N, C, h, 2, w, 2}).add_(last_inner.view({N, C, h, 1, w, 1}));
      } else {
        lateral.add_(upsample());
      }
      last_inner = lateral;
      results[i] = layer(i, last_inner);
    }
    if (pool_) results.push_back(torch::max_pool2d(results.back(), 1, 2, 0));
    return results;
  }

  std::vector<std::string> walked_children() const override { return {"inner_blocks", "layer_blocks"}; }

  torch::nn::ModuleList inner_blocks{nullptr}, layer_blocks{nullptr};

 private:
  torch::Tensor inner(int64_t i, const torch::Tensor& x) { return core::call(*inner_blocks[i]->as<detail::SeqImpl>(), x); }
  torch::Tensor layer(int64_t i, const torch::Tensor& x) { return core::call(*layer_blocks[i]->as<detail::SeqImpl>(), x); }
  std::vector<int64_t> in_;
  int64_t out_;
  bool pool_;
};
TORCH_MODULE(FeaturePyramidNetwork);

}  // namespace osteonet::detection
