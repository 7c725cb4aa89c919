// Frozen BatchNorm for fine-tuning with small batches in a C++ training loop (Python:
// osteonet.train.freeze_batchnorm, which also keeps the layers frozen through later train() calls).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace osteonet::train {

/// Puts every BatchNorm of `m` in eval mode (running statistics fixed) and stops its affine
/// parameters' gradients; returns how many. Call it after each `m.train()`, which would undo the mode.
inline int64_t freeze_batchnorm(torch::nn::Module& m) {
  int64_t n = 0;
  for (auto& sub : m.modules(/*include_self=*/true)) {
    if (dynamic_cast<torch::nn::BatchNorm1dImpl*>(sub.get()) || dynamic_cast<torch::nn::BatchNorm2dImpl*>(sub.get()) ||
        dynamic_cast<torch::nn::BatchNorm3dImpl*>(sub.get())) {
      sub->eval();
      for (auto& p : sub->parameters(false)) p.requires_grad_(false);
      ++n;
    }
  }
  return n;
}

}  // namespace osteonet::train
