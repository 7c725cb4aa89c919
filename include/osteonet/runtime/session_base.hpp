// What the runtime's sessions share (issue 8): options, device and dtype choice, the measured
// accuracy check with its fall-backs (bfloat16 -> float32 -> unfolded eager), the per-shape program
// cache and the accessors. InferenceSession (backbones) and DetectorSession (Faster R-CNN) derive.
#pragma once

#include <torch/torch.h>

#include <cstdio>

#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/runtime/program_cache.hpp"

namespace osteonet::runtime {

/// True when this build has the CUDA-graph code (the library was compiled with OSTEONET_WITH_CUDA,
/// defined by CMake/setup.py when the LibTorch in use has CUDA).
inline bool built_with_cuda() {
#if defined(OSTEONET_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

/// True when the CPU advertises bfloat16 matrix hardware (AMX-BF16 or AVX512-BF16; Linux /proc/cpuinfo).
inline bool cpu_has_bf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0)
      return line.find(" amx_bf16") != std::string::npos || line.find(" avx512_bf16") != std::string::npos;
  return false;
}

/// "cpu" or "cuda[:index]" as a device; a one-line ValueError naming `where` otherwise.
inline torch::Device parse_device(const std::string& s, const std::string& where) {
  OSTEONET_CHECK(s == "cpu" || s.rfind("cuda", 0) == 0, where, ": device must be \"cpu\" or \"cuda\", got device=\"",
                 s, "\"");
  if (s == "cpu") return torch::Device(torch::kCPU);
  OSTEONET_CHECK(torch::cuda::is_available(), where,
                 ": device=\"cuda\" needs a CUDA-enabled LibTorch and a visible GPU; this LibTorch ",
                 "reports no CUDA device, got device=\"", s, "\"");
  try {
    return torch::Device(s);
  } catch (const c10::Error&) {
    throw ValueError(where + ": device must be \"cpu\" or \"cuda[:index]\", got device=\"" + s + "\"");
  }
}

/// Options of InferenceSession and DetectorSession.
struct InferenceSessionOptions {
  /// "float32", "bfloat16" or "auto" (bfloat16 where the CPU has AMX/AVX512-BF16 or on CUDA, if the
  /// accuracy check passes; else float32).
  TORCH_ARG(std::string, dtype) = "float32";
  /// "cpu" or "cuda" (a CUDA device index may follow: "cuda:1").
  TORCH_ARG(std::string, device) = "cpu";
  /// CUDA graphs per input shape (CUDA only; ignored on the CPU).
  TORCH_ARG(bool, cuda_graph) = true;
  /// CPU: TorchScript-freeze the folded copy per input shape (oneDNN prepacked convolutions). false:
  /// run the folded copy eagerly.
  TORCH_ARG(bool, freeze) = true;
  /// at::set_num_threads(num_threads) at construction when > 0 (process-wide, as LibTorch's setting is).
  TORCH_ARG(int64_t, num_threads) = 0;
  /// Runs of each new shape's program before it is used (at least one, which also validates it).
  TORCH_ARG(int64_t, warmup) = 2;
  /// Input shapes with their own frozen program / CUDA graph; later shapes run the folded copy eagerly.
  TORCH_ARG(int64_t, max_shapes) = 8;
  /// Largest accepted max |softmax(session) - softmax(eager float32)| on the example input, float32.
  TORCH_ARG(double, tolerance_float32) = 1e-4;
  /// The same for bfloat16; above it a backbone's session first keeps its float32 ends (below), then
  /// falls back to float32, with a warning each time.
  TORCH_ARG(double, tolerance_bfloat16) = 1e-2;
  /// bfloat16 backbone sessions: keep the stem convolution and the classifier in float32 from the start
  /// (the input and the logits are not rounded to bfloat16's 8 bits; everything between computes in
  /// bfloat16). Without it they are kept only when full bfloat16 fails the accuracy check.
  TORCH_ARG(bool, float32_ends) = false;
  /// Run the model without its classifier: the session returns what the model's num_classes = 0
  /// form returns (pooled features; ovf_resnet34: the 32-d slice embedding that seed 002's
  /// aggregators take). The accuracy check is then relative to the largest feature value.
  TORCH_ARG(bool, features) = false;
};

/// The sessions' common part. A derived session calls build() from its constructor with its own
/// prepare (copy, fold, convert, set_program) and measure (accuracy on the example) steps.
class SessionBase {
 public:
  /// The accuracy measured at construction (see the derived session for its definition).
  double accuracy() const { return accuracy_; }
  /// The dtype the prepared model computes in ("float32" or "bfloat16").
  std::string dtype() const { return bf16_ ? "bfloat16" : "float32"; }
  /// Qualified names of the modules a bfloat16 session runs in float32 (its float32 ends: stem
  /// convolution, classifier); empty when it runs all in one dtype.
  const std::vector<std::string>& float32_modules() const { return float32_modules_; }
  torch::Device device() const { return device_; }
  /// Conv+BN pairs folded in the session's copy.
  int64_t folded() const { return folded_; }
  /// "frozen" (TorchScript, CPU), "cuda_graph" or "eager": how shapes with their own program run.
  std::string mode() const { return programs_->mode(); }
  /// Input shapes that have their own program (frozen module or CUDA graph).
  std::vector<std::vector<int64_t>> cached_shapes() const { return programs_->shapes(); }
  const std::string& model_name() const { return name_; }
  const InferenceSessionOptions& options() const { return options_; }

 protected:
  /// Checks the options (one-line ValueErrors naming `kind(name)`), parses the device, sets threads.
  SessionBase(std::string kind, std::string name, InferenceSessionOptions options)
      : options_(std::move(options)), kind_(std::move(kind)), name_(std::move(name)) {
    const auto w = where();
    OSTEONET_CHECK(options_.dtype() == "float32" || options_.dtype() == "bfloat16" || options_.dtype() == "auto",
                   w, ": dtype must be \"float32\", \"bfloat16\" or \"auto\", got dtype=\"", options_.dtype(), "\"");
    OSTEONET_CHECK(options_.warmup() >= 0, w, ": warmup must be >= 0, got warmup=", options_.warmup());
    OSTEONET_CHECK(options_.max_shapes() >= 0, w, ": max_shapes must be >= 0, got max_shapes=",
                   options_.max_shapes());
    OSTEONET_CHECK(options_.num_threads() >= 0, w, ": num_threads must be >= 0, got num_threads=",
                   options_.num_threads());
    OSTEONET_CHECK(!options_.float32_ends() || options_.dtype() != "float32", w,
                   ": float32_ends keeps a bfloat16 session's stem and classifier in float32; a float32 session has ",
                   "no other dtype, got dtype=\"float32\" with float32_ends=true");
    device_ = parse_device(options_.device(), w);
    if (options_.num_threads() > 0) at::set_num_threads(static_cast<int>(options_.num_threads()));
  }
  virtual ~SessionBase() = default;

  std::string where() const { return kind_ + "(" + name_ + ")"; }

  /// A double as text ("%.3g") without an ostream (see build()).
  static std::string number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
  }

  /// prepare(bf16, float32_ends, fold) -> folded pairs (and float32_modules_ set); measure() -> accuracy
  /// against eager float32 on the example (it builds the example shape's program). bfloat16 above
  /// tolerance_bfloat16 is rebuilt with float32 ends where `ends` (backbones), then in float32; float32
  /// above tolerance_float32 (a folding problem) as the unfolded copy run eagerly; each with a warning
  /// naming `output` (what the accuracy compares).
  void build(const std::function<int64_t(bool, bool, bool)>& prepare, const std::function<double()>& measure,
             const std::string& output, bool ends) {
    const bool bf16 = options_.dtype() == "bfloat16" ||
                      (options_.dtype() == "auto" && (device_.is_cuda() || cpu_has_bf16()));
    auto step = [&](bool b, bool e, bool fold) {
      bf16_ = b;
      float32_modules_.clear();
      folded_ = prepare(b, e, fold);
      accuracy_ = measure();
    };
    step(bf16, bf16 && ends && options_.float32_ends(), true);
    // Numbers in these warnings are formatted with snprintf, not an ostream: on the H100 image (pip's
    // torch 2.11, CUDA 13) streaming a double here crashed the process (docs/runtime.md, GPU).
    if (bf16 && ends && float32_modules_.empty() && accuracy_ > options_.tolerance_bfloat16()) {
      const double full = accuracy_;
      step(true, true, true);
      TORCH_WARN(where(), ": bfloat16 differs from float32 by ", number(full), " in the ", output, " (> tolerance ",
                 number(options_.tolerance_bfloat16()), "); with ", join(float32_modules_), " in float32: ",
                 number(accuracy_));
    }
    if (bf16 && accuracy_ > options_.tolerance_bfloat16()) {
      TORCH_WARN(where(), ": bfloat16 differs from float32 by ", number(accuracy_), " in the ", output,
                 " (> tolerance ", number(options_.tolerance_bfloat16()), "); using float32");
      step(false, false, true);
    }
    if (!bf16_ && accuracy_ > options_.tolerance_float32()) {
      TORCH_WARN(where(), ": the folded float32 copy differs from eager by ", number(accuracy_), " in the ", output,
                 " (> tolerance ", number(options_.tolerance_float32()), "); running the unfolded copy eagerly");
      options_.freeze(false);
      options_.cuda_graph(false);
      step(false, false, false);
    }
  }

  /// "a, b and c".
  static std::string join(const std::vector<std::string>& names) {
    std::string s;
    for (size_t i = 0; i < names.size(); ++i)
      s += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
    return s;
  }

  /// A new program cache for `fn` with the session's options.
  void set_program(ProgramCache::Fn fn) {
    programs_ = std::make_unique<ProgramCache>(where(), std::move(fn), device_,
                                               ProgramCacheOptions()
                                                   .freeze(options_.freeze())
                                                   .cuda_graph(options_.cuda_graph())
                                                   .warmup(options_.warmup())
                                                   .max_shapes(options_.max_shapes()));
  }

  /// Copies the tensors of `src` into `dst` by name (`dst` may hold a subset of `src` when `subset`);
  /// a one-line ValueError naming the first mismatch and `hint`.
  void copy_tensors(const torch::OrderedDict<std::string, torch::Tensor>& src,
                    torch::OrderedDict<std::string, torch::Tensor> dst, bool subset, const std::string& hint) const {
    torch::NoGradGuard no_grad;
    OSTEONET_CHECK(subset ? src.size() >= dst.size() : src.size() == dst.size(), where(),
                   ": the model does not match its configuration (", src.size(), " vs ", dst.size(), " tensors)", hint);
    for (auto& kv : dst) {
      const auto* t = src.find(kv.key());
      OSTEONET_CHECK(t != nullptr && t->sizes() == kv.value().sizes(), where(),
                     ": the model does not match its configuration at '", kv.key(), "'", hint);
      kv.value().copy_(*t);
    }
  }

  InferenceSessionOptions options_;
  std::string kind_, name_;
  torch::Device device_{torch::kCPU};
  bool bf16_ = false;
  int64_t folded_ = 0;
  double accuracy_ = 0.0;
  std::vector<std::string> float32_modules_;
  std::unique_ptr<ProgramCache> programs_;
};

}  // namespace osteonet::runtime
