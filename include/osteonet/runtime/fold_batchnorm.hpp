// Inference-time Conv2d + BatchNorm2d folding for osteonet modules (eval-mode arithmetic only).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace osteonet::runtime {

namespace detail {
/// A module's own parameter table (Module::parameters_ is protected; a pointer to member formed in
/// a derived class reaches it legally).
struct ParameterTableAccess : torch::nn::Module {
  static torch::OrderedDict<std::string, torch::Tensor>& get(torch::nn::Module& m) {
    return m.*(&ParameterTableAccess::parameters_);
  }
};
inline torch::OrderedDict<std::string, torch::Tensor>& parameter_table(torch::nn::Module& m) {
  return ParameterTableAccess::get(m);
}
}  // namespace detail

/// Folds every eval-mode BatchNorm2d that directly follows a Conv2d into that convolution, in place.
///
/// A pair is two consecutive children of one parent registered as (Conv2d, BatchNorm2d) with matching
/// channels: torchvision's and osteonet's layout everywhere (conv1/bn1, downsample.0/.1, the
/// Conv2dNormActivation [conv, norm, act] sequences, DenseNet's conv1 -> norm2, SK's fc_reduce -> bn).
/// The convolution gets w' = w * g / sqrt(v + eps) and b' = (b - m) * g / sqrt(v + eps) + beta
/// (computed in float64), and the BatchNorm becomes an exact identity (weight 1, bias 0, mean 0,
/// variance 1, eps 0). Only valid for inference: do it on a copy (runtime::InferenceSession does).
/// Returns the number of folded pairs.
inline int64_t fold_batchnorm(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  int64_t folded = 0;
  for (const auto& m : root.modules(/*include_self=*/true)) {
    const auto children = m->named_children();
    for (size_t i = 0; i + 1 < children.size(); ++i) {
      auto* conv = children[i].value()->as<torch::nn::Conv2dImpl>();
      auto* bn = children[i + 1].value()->as<torch::nn::BatchNorm2dImpl>();
      if (!conv || !bn || !bn->options.track_running_stats() || !bn->running_mean.defined()) continue;
      const int64_t c = conv->weight.size(0);
      if (bn->running_mean.numel() != c) continue;
      const auto dtype = conv->weight.scalar_type();
      auto mean = bn->running_mean.to(torch::kDouble), var = bn->running_var.to(torch::kDouble);
      auto gamma = bn->weight.defined() ? bn->weight.to(torch::kDouble) : torch::ones_like(mean);
      auto beta = bn->bias.defined() ? bn->bias.to(torch::kDouble) : torch::zeros_like(mean);
      auto scale = gamma / torch::sqrt(var + bn->options.eps());
      auto w = conv->weight.to(torch::kDouble) * scale.view({c, 1, 1, 1});
      auto b = conv->bias.defined() ? conv->bias.to(torch::kDouble) : torch::zeros_like(mean);
      b = (b - mean) * scale + beta;
      conv->weight.copy_(w.to(dtype));
      if (conv->bias.defined()) {
        conv->bias.copy_(b.to(dtype));
      } else {
        // bias=false convolutions register "bias" as an undefined tensor: fill that entry (so that
        // to()/clone() see the new bias) and the member forward() reads.
        conv->bias = b.to(conv->weight.options());
        detail::parameter_table(*conv)["bias"] = conv->bias;
      }
      bn->running_mean.zero_();
      bn->running_var.fill_(1.0);
      if (bn->weight.defined()) bn->weight.fill_(1.0);
      if (bn->bias.defined()) bn->bias.zero_();
      bn->options.eps(0.0);
      ++folded;
    }
  }
  return folded;
}

}  // namespace osteonet::runtime
