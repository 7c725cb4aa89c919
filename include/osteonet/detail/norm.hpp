// Normalisation layers of the backbones: torchvision's FrozenBatchNorm2d (fixed statistics and affine
// parameters, all four as buffers; what torchvision's pretrained detectors use) and `Norm2d`, one
// handle over BatchNorm2d or FrozenBatchNorm2d so a backbone picks its norm at construction.
#pragma once

#include <ATen/Parallel.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <vector>

#include "osteonet/core/call.hpp"

// The fused eval-mode norm below: x86-64 with GCC or Clang (AVX2 + FMA chosen at run time).
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define OSTEONET_FUSED_NORM 1
#include <immintrin.h>
#else
#define OSTEONET_FUSED_NORM 0
#endif

namespace osteonet::detail {

/// torchvision.ops.misc.FrozenBatchNorm2d: buffers weight, bias, running_mean, running_var (no
/// num_batches_tracked); y = x * scale + (bias - running_mean * scale), scale = weight * rsqrt(var + eps).
class FrozenBatchNorm2dImpl : public torch::nn::Cloneable<FrozenBatchNorm2dImpl>,
                              public core::TensorInvocable<FrozenBatchNorm2dImpl> {
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

#if OSTEONET_FUSED_NORM
/// p[i] = act(fma(p[i], a, b) (+ q[i])) for i < n, act = ReLU (NaN stays NaN) or identity: the
/// arithmetic of ATen's vectorised batch-norm kernel (x * alpha + beta as one fused multiply-add),
/// then its add and ReLU, so results are bit-identical to those three ATen ops. AVX2 + FMA.
__attribute__((target("avx2,fma"))) inline void scale_shift_act_row(float* p, const float* q, int64_t n, float a,
                                                                    float b, bool relu) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), va, vb);
    if (q) v = _mm256_add_ps(v, _mm256_loadu_ps(q + i));
    if (relu) v = _mm256_andnot_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ), v);  // zero where v < 0
    _mm256_storeu_ps(p + i, v);
  }
  for (; i < n; ++i) {
    float v = std::fma(p[i], a, b);
    if (q) v += q[i];
    if (relu && v < 0.f) v = 0.f;
    p[i] = v;
  }
}

/// The same with x * a + b rounded twice (a multiply, then an add), FrozenBatchNorm2d's arithmetic
/// (x * scale + shift as two ATen ops). Baseline SSE2, where no multiply-add can be contracted.
inline void scale_shift_act_row_unfused(float* p, const float* q, int64_t n, float a, float b, bool relu) {
  const __m128 va = _mm_set1_ps(a), vb = _mm_set1_ps(b), zero = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m128 v = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(p + i), va), vb);
    if (q) v = _mm_add_ps(v, _mm_loadu_ps(q + i));
    if (relu) v = _mm_andnot_ps(_mm_cmplt_ps(v, zero), v);
    _mm_storeu_ps(p + i, v);
  }
  for (; i < n; ++i) {
    const float t = p[i] * a;
    float v = t + b;
    if (q) v += q[i];
    if (relu && v < 0.f) v = 0.f;
    p[i] = v;
  }
}

/// The fused path needs AVX2 + FMA at run time (ATen's AVX2/AVX-512 kernels use FMA; elsewhere the
/// ATen ops run, so results never depend on which path ran).
inline bool fused_norm_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#else
inline bool fused_norm_supported() { return false; }
#endif

/// Inference fast path: an eval-mode BatchNorm2d (or a FrozenBatchNorm2d), then optionally `+ residual`
/// and ReLU, as one in-place pass over `x` (y = max(x * scale_c + shift_c + r, 0)) instead of three
/// ATen passes and a new tensor. Applies without gradient mode, outside tracing (TorchScript would
/// not record it), to float32 CPU tensors in contiguous NCHW with float32 contiguous statistics; it
/// returns false and leaves `x` untouched otherwise, so the caller runs the ATen ops. `x` must be a
/// temporary the caller owns (a convolution's output). scale_c = weight / sqrt(var + eps) and
/// shift_c = bias - mean * scale_c are computed in double from the current tensors on every call,
/// so there is nothing cached that could go stale.
inline bool fused_norm_act_(torch::Tensor& x, torch::nn::Module& norm, const torch::Tensor& residual, bool relu) {
  const bool frozen = norm.as<FrozenBatchNorm2dImpl>() != nullptr;  // the same in training and eval mode
  if (!fused_norm_supported() || torch::GradMode::is_enabled() || torch::jit::tracer::isTracing() ||
      (norm.is_training() && !frozen))
    return false;
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat || x.dim() != 4 || !x.is_contiguous()) return false;
  if (residual.defined() && (!residual.device().is_cpu() || residual.scalar_type() != torch::kFloat ||
                             residual.sizes() != x.sizes() || !residual.is_contiguous()))
    return false;
  torch::Tensor w, b, mean, var;
  double eps = 0;
  if (auto* bn = norm.as<torch::nn::BatchNorm2dImpl>()) {
    if (!bn->options.track_running_stats()) return false;
    w = bn->weight, b = bn->bias, mean = bn->running_mean, var = bn->running_var, eps = bn->options.eps();
  } else if (auto* fb = norm.as<FrozenBatchNorm2dImpl>()) {
    w = fb->weight, b = fb->bias, mean = fb->running_mean, var = fb->running_var, eps = fb->eps();
  } else {
    return false;
  }
  const int64_t C = x.size(1);
  for (const auto* t : {&mean, &var})
    if (!t->defined() || !t->device().is_cpu() || t->scalar_type() != torch::kFloat || !t->is_contiguous() ||
        t->numel() != C)
      return false;
  for (const auto* t : {&w, &b})
    if (t->defined() && (!t->device().is_cpu() || t->scalar_type() != torch::kFloat || !t->is_contiguous() ||
                         t->numel() != C))
      return false;
  std::vector<float> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  {
    const float* pm = mean.data_ptr<float>();
    const float* pv = var.data_ptr<float>();
    const float* pw = w.defined() ? w.data_ptr<float>() : nullptr;
    const float* pb = b.defined() ? b.data_ptr<float>() : nullptr;
    // BatchNorm2d: as ATen's batch_norm_cpu_collect_linear_and_constant_terms, in float (beta by
    // one FMA). FrozenBatchNorm2d: as its forward's tensor ops (shift = bias - mean * scale, two
    // roundings).
    const float feps = static_cast<float>(eps);
    for (int64_t c = 0; c < C; ++c) {
      const float invstd = 1.f / std::sqrt(pv[c] + feps);
      scale[c] = invstd * (pw ? pw[c] : 1.f);
      if (frozen) {
        const float m = pm[c] * scale[c];
        shift[c] = (pb ? pb[c] : 0.f) - m;
      } else {
        shift[c] = std::fma(-pm[c], scale[c], pb ? pb[c] : 0.f);
      }
    }
  }
  const int64_t N = x.size(0), HW = x.size(2) * x.size(3);
  float* px = x.data_ptr<float>();
  const float* pr = residual.defined() ? residual.data_ptr<float>() : nullptr;
#if OSTEONET_FUSED_NORM
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      float* row = px + nc * HW;
      const float* res = pr ? pr + nc * HW : nullptr;
      if (frozen)
        scale_shift_act_row_unfused(row, res, HW, scale[nc % C], shift[nc % C], relu);
      else
        scale_shift_act_row(row, res, HW, scale[nc % C], shift[nc % C], relu);
    }
  });
  return true;
#else
  return false;
#endif
}

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
  /// norm(x), through core::call (Python may run it); `*python` is set when it did.
  torch::Tensor operator()(const torch::Tensor& x, bool* python = nullptr) {
    return bn_ ? core::call(bn_, x, python) : core::call(frozen_, x, python);
  }
  torch::Tensor forward(const torch::Tensor& x) { return (*this)(x); }
  /// norm(x) (+ residual) (then ReLU): fused and in place on `x` where fused_norm_act_ applies and
  /// `x_owned` says that `x` is a temporary of the caller's (e.g. a convolution's output that no
  /// hook holds), else with ATen ops. A result Python computed is never modified in place.
  torch::Tensor forward_act(torch::Tensor x, bool relu, const torch::Tensor& residual = {}, bool x_owned = true) {
    auto& m = bn_ ? static_cast<torch::nn::Module&>(*bn_) : static_cast<torch::nn::Module&>(*frozen_);
    if (x_owned && !core::overridden(&m) && fused_norm_act_(x, m, residual, relu)) return x;
    bool python = false;
    auto y = (*this)(x, &python);
    if (python) {
      if (residual.defined()) y = y + residual;
      return relu ? torch::relu(y) : y;
    }
    if (residual.defined()) y += residual;
    return relu ? y.relu_() : y;
  }
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
