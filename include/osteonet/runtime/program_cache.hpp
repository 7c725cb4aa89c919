// ProgramCache: prepared programs per input shape for a tensor function (issue 8). On the CPU each
// shape is traced into a TorchScript module that is frozen and optimised for inference (oneDNN
// prepacked convolutions); on CUDA builds each shape is captured into a CUDA graph with static
// input/output buffers in one private memory pool. Shapes beyond max_shapes, and shapes whose program
// cannot be built, run the function eagerly. InferenceSession (backbones) and DetectorSession
// (backbone + FPN of a Faster R-CNN) both run through one.
#pragma once

#include <torch/torch.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#if defined(OSTEONET_WITH_CUDA)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace osteonet::runtime {

struct ProgramCacheOptions {
  /// CPU: TorchScript-freeze the function per shape (false: always run it eagerly).
  TORCH_ARG(bool, freeze) = true;
  /// CUDA: capture a CUDA graph per shape (CUDA builds only).
  TORCH_ARG(bool, cuda_graph) = true;
  /// Runs of each new program before it is used (at least one, which also validates it).
  TORCH_ARG(int64_t, warmup) = 2;
  /// Shapes with their own program; later shapes run the function eagerly.
  TORCH_ARG(int64_t, max_shapes) = 8;
};

/// Thread-safe cache of per-shape programs for `fn`: one input tensor -> one or more output tensors.
/// `fn` must be traceable: tensor operations only, no data-dependent control flow.
class ProgramCache {
 public:
  using Fn = std::function<std::vector<torch::Tensor>(const torch::Tensor&)>;
  using Shape = std::vector<int64_t>;

  ProgramCache(std::string name, Fn fn, torch::Device device, ProgramCacheOptions options = {})
      : name_(std::move(name)), fn_(std::move(fn)), device_(device), options_(options) {}

  /// The function's outputs for x: from x's program when it has one, else eagerly.
  std::vector<torch::Tensor> operator()(const torch::Tensor& x) {
    const Shape shape(x.sizes().begin(), x.sizes().end());
#if defined(OSTEONET_WITH_CUDA)
    if (use_cuda_graph()) return run_graph(x, shape);
#endif
    if (device_.is_cuda() || !options_.freeze()) return fn_(x);
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
          for (int64_t i = 0; i < std::max<int64_t>(options_.warmup(), 1); ++i) run(*program, x);
        } catch (const std::exception& e) {  // c10::Error, or the TorchScript interpreter's runtime_error
          TORCH_WARN(name_, ": no frozen program for input shape ", x.sizes(), "; running it eagerly (",
                     reason(e), ")");
          program = nullptr;
        }
        frozen_.emplace(shape, program);
      }
    }
    if (!program) return fn_(x);
    return unpack(run(*program, x));
  }

  /// "frozen" (TorchScript, CPU), "cuda_graph" or "eager": how shapes with their own program run.
  std::string mode() const {
    if (device_.is_cuda()) return use_cuda_graph() ? "cuda_graph" : "eager";
    return options_.freeze() ? "frozen" : "eager";
  }

  /// Input shapes that have their own program (frozen module or CUDA graph).
  std::vector<Shape> shapes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Shape> out;
    for (const auto& kv : frozen_)
      if (kv.second) out.push_back(kv.first);
#if defined(OSTEONET_WITH_CUDA)
    for (const auto& kv : graphs_)
      if (kv.second && kv.second->captured) out.push_back(kv.first);
#endif
    return out;
  }

 private:
  /// One run of a frozen program, below the autograd dispatch keys. On the CPU the frozen float32 program
  /// computes on oneDNN (MKLDNN) tensors, whose autograd key is AutogradOther. Debian's LibTorch 2.6 is
  /// built with Vulkan, which registers a kernel of its own for aten::max_pool2d beside the
  /// CompositeImplicitAutograd one; Vulkan also maps to AutogradOther, so the dispatcher's AutogradOther
  /// entry for max_pool2d is the "ambiguous" kernel, which throws (an INTERNAL ASSERT) even under
  /// NoGradGuard: every program with a max pooling (ResNets, DenseNets, the detector's body) failed at its
  /// first run and its shape ran eagerly. (1.13 has no Vulkan kernel there.) Dispatching below autograd
  /// reaches the CompositeImplicitAutograd kernel (oneDNN's max pooling). Not c10::InferenceMode, which
  /// would do the same but return inference tensors, which the caller could neither update in place nor
  /// save for backward (a trainable head on a session's embeddings). The input is detached: the programs
  /// are inference-only, and nothing here records autograd history.
  /// Under LibTorch 2.x the graph executor's own passes are also off (a thread-local guard, as
  /// torch.jit.optimized_execution(False)): the program is already frozen and optimised for inference, and
  /// 2.x's CPU TensorExpr fuser spends minutes compiling a DenseNet's graph (LibTorch 2.6: densenet121's
  /// bfloat16 session did not finish in 10 minutes, 6 s without the fuser). LibTorch 1.13 does not fuse
  /// on the CPU.
  static c10::IValue run(torch::jit::Module& program, const torch::Tensor& x) {
#if TORCH_VERSION_MAJOR >= 2
    torch::jit::GraphOptimizerEnabledGuard no_executor_passes(false);
#endif
    at::AutoDispatchBelowAutograd below_autograd;
    return program.forward({x.detach()});
  }

  /// The line of a failure's message that says what failed: after the TorchScript interpreter's traceback,
  /// its "RuntimeError: ..." line where there is one (the error may append many lines, e.g. a dispatcher
  /// table), else the last non-empty line; for any other failure (tracing, freezing) the first line (a
  /// tensor may follow it).
  static std::string reason(const std::exception& e) {
    std::string what = e.what();
    if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) what = c10e->what_without_backtrace();
    if (what.rfind("The following operation failed in the TorchScript interpreter", 0) != 0)
      return what.substr(0, what.find('\n'));
    const auto error = what.find("\nRuntimeError: ");
    if (error != std::string::npos) return what.substr(error + 1, what.find('\n', error + 1) - error - 1);
    const auto last = what.find_last_of('\n', what.find_last_not_of('\n'));
    return what.substr(last == std::string::npos ? 0 : last + 1);
  }

  static std::vector<torch::Tensor> unpack(const c10::IValue& v) {
    if (!v.isTuple()) return {v.toTensor()};
    std::vector<torch::Tensor> out;
    for (const auto& e : v.toTupleRef().elements()) out.push_back(e.toTensor());
    return out;
  }

  bool use_cuda_graph() const {
#if defined(OSTEONET_WITH_CUDA)
    return device_.is_cuda() && options_.cuda_graph();
#else
    return false;
#endif
  }

  /// fn traced at x's shape, frozen and optimised for inference (TorchScript's freeze +
  /// optimize_for_inference: constant weights, oneDNN prepacked convolutions on the CPU). One output
  /// is returned as a tensor, several as a tuple.
  torch::jit::Module freeze_program(const torch::Tensor& x) {
    torch::jit::Module m(c10::QualifiedName("__torch__.osteonet.runtime.Program"));
    m.register_attribute("training", c10::BoolType::get(), false);
    auto fn = fn_;
    auto traced_fn = [fn](torch::jit::Stack in) -> torch::jit::Stack {
      auto outs = fn(in.at(0).toTensor());
      if (outs.size() == 1) return {outs.front()};
      std::vector<c10::IValue> items(outs.begin(), outs.end());
      return {c10::ivalue::Tuple::create(std::move(items))};
    };
    auto traced = torch::jit::tracer::trace({x}, traced_fn,
                                            [](const torch::autograd::Variable&) { return std::string(); },
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
    torch::Tensor input;
    std::vector<torch::Tensor> outputs;
    std::mutex mutex;
    bool captured = false;
  };

  std::vector<torch::Tensor> run_graph(const torch::Tensor& x, const Shape& shape) {
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
    if (!g || !g->captured) return fn_(x);  // too many shapes, or an op that cannot be captured
    std::lock_guard<std::mutex> lock(g->mutex);
    g->input.copy_(x);
    g->graph.replay();
    std::vector<torch::Tensor> out;
    for (const auto& o : g->outputs) out.push_back(o.clone());
    return out;
  }

  /// Captures fn at x's shape on a side stream into the cache's private memory pool.
  std::shared_ptr<Graph> capture(const torch::Tensor& x) {
    auto g = std::make_shared<Graph>();
    g->input = x.clone();
    if (!pool_) pool_ = at::cuda::graph_pool_handle();
    auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, x.device().index());
    // The side stream starts after the caller's work (x written); capture is rare, so a full sync.
    c10::cuda::getCurrentCUDAStream(x.device().index()).synchronize();
    {
      c10::cuda::CUDAStreamGuard guard(side);
      // Warm-up outside the capture (lazy initialisation, cuDNN algorithm choice).
      for (int64_t i = 0; i < std::max<int64_t>(options_.warmup(), 1); ++i) fn_(g->input);
      side.synchronize();
      try {
        // Thread-local capture: other threads may replay their graphs or allocate meanwhile.
        g->graph.capture_begin(*pool_, cudaStreamCaptureModeThreadLocal);
        g->outputs = fn_(g->input);
        g->graph.capture_end();
        g->captured = true;
      } catch (const c10::Error& e) {
        TORCH_WARN(name_, ": CUDA graph capture failed for shape ", x.sizes(), "; running this shape eagerly (",
                   e.what_without_backtrace(), ")");
        try {
          g->graph.capture_end();
        } catch (const c10::Error&) {
        }
        g->captured = false;
      }
    }
    side.synchronize();  // the captured outputs exist before the caller's stream replays the graph
    return g;
  }

  std::map<Shape, std::shared_ptr<Graph>> graphs_;
  c10::optional<decltype(at::cuda::graph_pool_handle())> pool_;
#endif

  std::string name_;
  Fn fn_;
  torch::Device device_;
  ProgramCacheOptions options_;
  std::map<Shape, std::shared_ptr<torch::jit::Module>> frozen_;
  mutable std::mutex mutex_;
};

}  // namespace osteonet::runtime
