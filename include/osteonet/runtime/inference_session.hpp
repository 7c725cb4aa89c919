// InferenceSession: a prepared, callable copy of an osteonet backbone for inference (issue 8): eval
// and no-grad, Conv+BN folding, TorchScript freezing with oneDNN prepacking per input shape on the
// CPU, bfloat16 (channels-last) with a measured accuracy check, thread settings, warm-up, and CUDA
// graphs per input shape where LibTorch has CUDA (OSTEONET_WITH_CUDA).
#pragma once

#include <torch/torch.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/tracer.h>

#if defined(OSTEONET_WITH_CUDA)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/backbones/registry.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/runtime/fold_batchnorm.hpp"

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

/// Options of InferenceSession.
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
  /// The same for bfloat16; above it the session falls back to float32 with a warning.
  TORCH_ARG(double, tolerance_bfloat16) = 1e-2;
  /// Run the model without its classifier: the session returns what the model's num_classes = 0
  /// form returns (pooled features; ovf_resnet34: the 32-d slice embedding that seed 002's
  /// aggregators take). The accuracy check is then relative to the largest feature value.
  TORCH_ARG(bool, features) = false;
};

/// A prepared, thread-safe callable copy of an osteonet backbone for inference.
///
/// Construction copies the model (the caller's model is never changed), puts the copy in eval mode,
/// folds BatchNorm into the convolutions (in float64), converts it to the session dtype (bfloat16
/// with channels-last weights), and, on the CPU with freeze(true), traces the copy at the example
/// input's shape into a TorchScript module that is frozen and optimised for inference (oneDNN
/// prepacked convolutions, as torch.jit.freeze + optimize_for_inference). Each new input shape gets
/// its own program, up to max_shapes; further shapes run the folded copy eagerly. On CUDA builds,
/// device "cuda" with cuda_graph(true) captures one CUDA graph per shape (static input/output
/// buffers, one private memory pool, replay under a per-graph lock) and runs eagerly when a capture fails.
///
/// Outputs are float32 whatever the session dtype. Accuracy is measured at construction: max
/// |softmax(session) - softmax(eager float32)| over the example input (`accuracy()`); a bfloat16
/// session above tolerance_bfloat16 falls back to float32 (warning); a float32 session above
/// tolerance_float32 falls back to the unfolded eager copy (warning).
class InferenceSession {
 public:
  /// `config`: the ModelConfig `model` was created with (models::create_model); the session builds
  /// its own instance from the registry and copies the model's current parameters and buffers.
  InferenceSession(const backbones::BackboneImpl& model, models::ModelConfig config, const torch::Tensor& example,
                   InferenceSessionOptions options = {})
      : options_(std::move(options)), name_(model.model_name()), config_(std::move(config)) {
    init(model, example);
  }

  /// For models created with only num_classes/in_chans (no attention or model keywords).
  InferenceSession(const backbones::BackboneImpl& model, const torch::Tensor& example,
                   InferenceSessionOptions options = {})
      : options_(std::move(options)), name_(model.model_name()) {
    config_.num_classes = model.num_classes();
    config_.in_chans = model.in_chans();
    init(model, example);
  }

  /// Runs the prepared model: float32 output for an N x C x H x W input (float32 or the session dtype).
  torch::Tensor operator()(const torch::Tensor& x) { return forward(x); }

 private:
  void init(const backbones::BackboneImpl& model, const torch::Tensor& example) {
    const std::string where = "InferenceSession(" + name_ + ")";
    OSTEONET_CHECK(options_.dtype() == "float32" || options_.dtype() == "bfloat16" || options_.dtype() == "auto",
                   where, ": dtype must be \"float32\", \"bfloat16\" or \"auto\", got dtype=\"", options_.dtype(), "\"");
    OSTEONET_CHECK(options_.warmup() >= 0, where, ": warmup must be >= 0, got warmup=", options_.warmup());
    OSTEONET_CHECK(options_.max_shapes() >= 0, where, ": max_shapes must be >= 0, got max_shapes=",
                   options_.max_shapes());
    OSTEONET_CHECK(options_.num_threads() >= 0, where, ": num_threads must be >= 0, got num_threads=",
                   options_.num_threads());
    device_ = parse_device(options_.device(), where);
    if (options_.features()) config_.num_classes = 0;  // the copies are built without the classifier
    OSTEONET_CHECK_TYPE(example.defined(), where, ": expected an example input tensor, got an undefined tensor");
    OSTEONET_CHECK_TYPE(example.is_floating_point(), where, ": expected a floating-point example input, got dtype=",
                        example.dtype());
    if (options_.num_threads() > 0) at::set_num_threads(static_cast<int>(options_.num_threads()));

    torch::NoGradGuard no_grad;
    // The reference: an eval-mode float32 copy of the caller's model (which is left untouched).
    auto ref = copy_model(model, config_, torch::kFloat, device_);
    ref->check_input(example.to(device_, torch::kFloat));
    const auto x32 = example.to(device_, torch::kFloat);
    const auto expected = ref->forward(x32).to(torch::kFloat);

    bool bf16 = options_.dtype() == "bfloat16" ||
                (options_.dtype() == "auto" && (device_.is_cuda() || cpu_has_bf16()));
    prepare(ref, bf16, /*fold=*/true);
    accuracy_ = measure(x32, expected);
    if (bf16 && accuracy_ > options_.tolerance_bfloat16()) {
      TORCH_WARN(where, ": bfloat16 output differs from float32 by ", accuracy_, " (> tolerance ",
                 options_.tolerance_bfloat16(), "); using float32");
      prepare(copy_model(model, config_, torch::kFloat, device_), /*bf16=*/false, /*fold=*/true);
      accuracy_ = measure(x32, expected);
    }
    if (!bf16_ && accuracy_ > options_.tolerance_float32()) {
      TORCH_WARN(where, ": the folded float32 copy differs from eager by ", accuracy_, " (> tolerance ",
                 options_.tolerance_float32(), "); running the unfolded copy eagerly");
      options_.freeze(false);
      options_.cuda_graph(false);
      prepare(copy_model(model, config_, torch::kFloat, device_), /*bf16=*/false, /*fold=*/false);
      accuracy_ = measure(x32, expected);
    }
  }


 public:
  torch::Tensor forward(const torch::Tensor& x) {
    const std::string where = "InferenceSession(" + name_ + ")";
    OSTEONET_CHECK_TYPE(x.defined(), where, ": expected an input tensor, got an undefined tensor");
    OSTEONET_CHECK_TYPE(x.scalar_type() == torch::kFloat || x.scalar_type() == dtype_, where,
                        ": expected a float32 input", bf16_ ? " (or bfloat16)" : "", ", got dtype=", x.dtype());
    torch::NoGradGuard no_grad;
    auto in = x.to(device_, dtype_);
    net_->check_input(in);
    if (bf16_) in = in.contiguous(torch::MemoryFormat::ChannelsLast);
    return run(in).to(torch::kFloat);
  }

  /// max |softmax(session) - softmax(eager float32)| on the example input (max |difference| relative
  /// to the largest reference value for outputs that are not logits).
  double accuracy() const { return accuracy_; }
  /// The dtype the session computes in ("float32" or "bfloat16").
  std::string dtype() const { return bf16_ ? "bfloat16" : "float32"; }
  torch::Device device() const { return device_; }
  /// Conv+BN pairs folded in the session's copy.
  int64_t folded() const { return folded_; }
  /// "frozen" (TorchScript, CPU), "cuda_graph" or "eager": how shapes with their own program run.
  std::string mode() const {
    if (device_.is_cuda()) return use_cuda_graph() ? "cuda_graph" : "eager";
    return options_.freeze() ? "frozen" : "eager";
  }
  /// Input shapes that have their own program (frozen module or CUDA graph).
  std::vector<std::vector<int64_t>> cached_shapes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::vector<int64_t>> out;
    for (const auto& kv : frozen_)
      if (kv.second) out.push_back(kv.first);
#if defined(OSTEONET_WITH_CUDA)
    for (const auto& kv : graphs_) out.push_back(kv.first);
#endif
    return out;
  }
  const std::string& model_name() const { return name_; }
  const InferenceSessionOptions& options() const { return options_; }

 private:
  using Shape = std::vector<int64_t>;

  static torch::Device parse_device(const std::string& s, const std::string& where) {
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

  /// An eval-mode copy of `model` in `dtype` on `device`, without gradients: a new instance from the
  /// registry (`config`) with the model's parameters and buffers copied by name. (Module::clone() is
  /// not used: it does not rebuild every osteonet container faithfully.)
  static std::shared_ptr<backbones::BackboneImpl> copy_model(const backbones::BackboneImpl& model,
                                                             const models::ModelConfig& config, torch::Dtype dtype,
                                                             torch::Device device) {
    const std::string where = "InferenceSession(" + model.model_name() + ")";
    auto net = models::create_model(model.model_name(), config);
    torch::NoGradGuard no_grad;
    // Without its classifier (config.num_classes == 0 while the model has one), the copy holds a
    // subset of the model's tensors; otherwise exactly the same set.
    const bool subset = config.num_classes == 0 && model.num_classes() != 0;
    auto copy_all = [&](const torch::OrderedDict<std::string, torch::Tensor>& src,
                        torch::OrderedDict<std::string, torch::Tensor> dst) {
      OSTEONET_CHECK(subset ? src.size() >= dst.size() : src.size() == dst.size(), where,
                     ": the model does not match its configuration (", src.size(), " vs ", dst.size(),
                     " tensors); pass the ModelConfig it was created with");
      for (auto& kv : dst) {
        const auto* t = src.find(kv.key());
        OSTEONET_CHECK(t != nullptr && t->sizes() == kv.value().sizes(), where, ": the model does not match its ",
                       "configuration at '", kv.key(), "'; pass the ModelConfig it was created with");
        kv.value().copy_(*t);
      }
    };
    copy_all(model.named_parameters(true), net->named_parameters(true));
    copy_all(model.named_buffers(true), net->named_buffers(true));
    net->module().to(device, dtype);
    net->eval();
    for (auto& p : net->module().parameters()) p.set_requires_grad(false);
    return net;
  }

  /// Folds (optionally) and converts `net` to the session dtype, then builds the example shape's program.
  void prepare(std::shared_ptr<backbones::BackboneImpl> net, bool bf16, bool fold) {
    torch::NoGradGuard no_grad;
    folded_ = fold ? fold_batchnorm(net->module()) : 0;
    bf16_ = bf16;
    dtype_ = bf16 ? torch::kBFloat16 : torch::kFloat;
    if (bf16) {
      net->module().to(torch::kBFloat16);
      // Channels-last weights: oneDNN's bfloat16 (AMX) convolutions on the CPU, tensor cores on CUDA.
      for (auto& p : net->module().parameters())
        if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    }
    net_ = std::move(net);
    std::lock_guard<std::mutex> lock(mutex_);
    frozen_.clear();
#if defined(OSTEONET_WITH_CUDA)
    graphs_.clear();
#endif
  }

  /// Accuracy of the session against the float32 eager reference on `x` (builds x's program).
  double measure(const torch::Tensor& x, const torch::Tensor& expected) {
    auto got = forward(x);
    if (expected.dim() == 2 && net_->num_classes() > 0)
      return (got.softmax(1) - expected.softmax(1)).abs().max().item<double>();
    const double scale = std::max(1.0, expected.abs().max().item<double>());
    return (got - expected).abs().max().item<double>() / scale;
  }

  torch::Tensor eager(const torch::Tensor& x) { return net_->forward(x); }

  bool use_cuda_graph() const {
#if defined(OSTEONET_WITH_CUDA)
    return device_.is_cuda() && options_.cuda_graph();
#else
    return false;
#endif
  }

  torch::Tensor run(const torch::Tensor& x) {
    const Shape shape(x.sizes().begin(), x.sizes().end());
#if defined(OSTEONET_WITH_CUDA)
    if (use_cuda_graph()) return run_graph(x, shape);
#endif
    if (device_.is_cuda() || !options_.freeze()) return eager(x);
    std::shared_ptr<torch::jit::Module> program;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = frozen_.find(shape);
      if (it != frozen_.end()) {
        program = it->second;
      } else if (static_cast<int64_t>(frozen_.size()) < options_.max_shapes()) {
        // Built under the lock: concurrent first calls of one shape build it once. A shape whose
        // frozen program fails (e.g. oneDNN's adaptive pooling needs divisible sizes) runs eagerly.
        try {
          program = std::make_shared<torch::jit::Module>(freeze_program(x));
          // At least one run here: a program that fails does so inside this try.
          for (int64_t i = 0; i < std::max<int64_t>(options_.warmup(), 1); ++i) program->forward({x});
        } catch (const std::exception& e) {  // c10::Error, or the TorchScript interpreter's runtime_error
          std::string what = e.what();
          if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) what = c10e->what_without_backtrace();
          const auto last = what.find_last_of('\n', what.find_last_not_of('\n'));
          TORCH_WARN("InferenceSession(", name_, "): no frozen program for input shape ", x.sizes(),
                     "; running it eagerly (", what.substr(last == std::string::npos ? 0 : last + 1), ")");
          program = nullptr;
        }
        frozen_.emplace(shape, program);
      }
    }
    if (!program) return eager(x);
    return program->forward({x}).toTensor();
  }

  /// The folded copy traced at x's shape, frozen and optimised for inference (TorchScript's
  /// freeze + optimize_for_inference: constant weights, oneDNN prepacked convolutions on the CPU).
  torch::jit::Module freeze_program(const torch::Tensor& x) {
    torch::jit::Module m(c10::QualifiedName("__torch__.osteonet.runtime.Program"));
    m.register_attribute("training", c10::BoolType::get(), false);
    auto net = net_;
    auto fn = [net](torch::jit::Stack in) -> torch::jit::Stack { return {net->forward(in.at(0).toTensor())}; };
    auto traced = torch::jit::tracer::trace({x}, fn, [](const torch::autograd::Variable&) { return std::string(); },
                                            /*strict=*/false, /*force_outplace=*/false, &m);
    auto* function = m._ivalue()->compilation_unit()->create_function(
        c10::QualifiedName(*m.type()->name(), "forward"), traced.first->graph);
    m.type()->addMethod(function);
    m.eval();
    auto frozen = torch::jit::freeze(m);
    return torch::jit::optimize_for_inference(frozen);
  }

#if defined(OSTEONET_WITH_CUDA)
  /// One captured CUDA graph: static input/output buffers, replayed under its lock.
  struct Graph {
    at::cuda::CUDAGraph graph;
    torch::Tensor input, output;
    std::mutex mutex;
    bool captured = false;
  };

  torch::Tensor run_graph(const torch::Tensor& x, const Shape& shape) {
    std::shared_ptr<Graph> g;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = graphs_.find(shape);
      if (it != graphs_.end()) {
        g = it->second;
      } else if (static_cast<int64_t>(graphs_.size()) < options_.max_shapes()) {
        g = capture(x);
        graphs_.emplace(shape, g);
      }
    }
    if (!g || !g->captured) return eager(x);  // too many shapes, or an op that cannot be captured
    std::lock_guard<std::mutex> lock(g->mutex);
    g->input.copy_(x);
    g->graph.replay();
    return g->output.clone();
  }

  /// Captures the folded copy at x's shape on a side stream into the session's private memory pool.
  std::shared_ptr<Graph> capture(const torch::Tensor& x) {
    auto g = std::make_shared<Graph>();
    g->input = x.clone();
    if (!pool_) pool_ = at::cuda::graph_pool_handle();
    auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, x.device().index());
    side.wait(c10::cuda::getCurrentCUDAStream(x.device().index()));
    {
      c10::cuda::CUDAStreamGuard guard(side);
      // Warm-up outside the capture (lazy initialisation, cuDNN algorithm choice).
      for (int64_t i = 0; i < std::max<int64_t>(options_.warmup(), 1); ++i) eager(g->input);
      side.synchronize();
      try {
        g->graph.capture_begin(*pool_);
        g->output = eager(g->input);
        g->graph.capture_end();
        g->captured = true;
      } catch (const c10::Error& e) {
        TORCH_WARN("InferenceSession(", name_, "): CUDA graph capture failed for shape ", x.sizes(),
                   "; running this shape eagerly (", e.what_without_backtrace(), ")");
        try {
          g->graph.capture_end();
        } catch (const c10::Error&) {
        }
        g->captured = false;
      }
    }
    c10::cuda::getCurrentCUDAStream(x.device().index()).wait(side);
    return g;
  }

  std::map<Shape, std::shared_ptr<Graph>> graphs_;
  c10::optional<decltype(at::cuda::graph_pool_handle())> pool_;
#endif

  InferenceSessionOptions options_;
  std::string name_;
  models::ModelConfig config_;
  torch::Device device_{torch::kCPU};
  torch::Dtype dtype_ = torch::kFloat;
  bool bf16_ = false;
  int64_t folded_ = 0;
  double accuracy_ = 0.0;
  std::shared_ptr<backbones::BackboneImpl> net_;
  std::map<Shape, std::shared_ptr<torch::jit::Module>> frozen_;
  mutable std::mutex mutex_;
};

}  // namespace osteonet::runtime
