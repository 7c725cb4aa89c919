// Call sites that Python can take over. Every osteonet forward calls its named submodules through
// core::call; it runs the C++ child unless an override is installed for that child (osteonet.models
// installs one when Python registers a hook on the submodule or assigns a replacement module). While
// no override exists anywhere in the process, a call costs one atomic load and the forward is the
// plain C++ one; with overrides, containers are walked child by child so that nested ones are found.
// The same call sites let an inference session run chosen modules in float32 inside a bfloat16 copy
// (Float32Modules, Float32Scope: thread-local, so no other model in the process is affected).
#pragma once

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::core {

/// What runs in place of a submodule's C++ forward: its tensor arguments in, its tensor results out
/// (a tuple result flattened, e.g. an LSTM's {output, h, c}).
using CallOverride = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

/// The process's overrides by module. Entries hold the module weakly, so an entry never applies to
/// a later module that happens to reuse a freed address.
class CallOverrides {
 public:
  static CallOverrides& instance() {
    static CallOverrides overrides;
    return overrides;
  }

  /// True while no override exists (the fast path of every call).
  bool empty() const noexcept { return count_.load(std::memory_order_acquire) == 0; }

  void set(const std::shared_ptr<torch::nn::Module>& module, CallOverride fn) {
    OSTEONET_CHECK(module != nullptr, "CallOverrides::set: expected a module, got null");
    std::unique_lock<std::shared_mutex> lock(mu_);
    map_[module.get()] = Entry{module, std::make_shared<const CallOverride>(std::move(fn))};
    count_.store(map_.size(), std::memory_order_release);
  }

  void erase(const torch::nn::Module* module) {
    std::shared_ptr<const CallOverride> dropped;  // released after the lock
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto it = map_.find(module);
    if (it == map_.end()) return;
    dropped = std::move(it->second.fn);
    map_.erase(it);
    count_.store(map_.size(), std::memory_order_release);
  }

  /// The override of `module`, or null.
  std::shared_ptr<const CallOverride> find(const torch::nn::Module* module) const {
    if (empty()) return nullptr;
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = map_.find(module);
    if (it == map_.end() || it->second.module.expired()) return nullptr;
    return it->second.fn;
  }

  std::size_t size() const noexcept { return count_.load(std::memory_order_acquire); }

 private:
  CallOverrides() = default;
  struct Entry {
    std::weak_ptr<torch::nn::Module> module;
    std::shared_ptr<const CallOverride> fn;
  };
  mutable std::shared_mutex mu_;
  std::unordered_map<const torch::nn::Module*, Entry> map_;
  std::atomic<std::size_t> count_{0};
};

/// Modules that run in float32 inside a model that computes in a lower precision: the inference
/// session's bfloat16 program with float32 ends (its stem convolution and classifier; docs/runtime.md).
/// While a Float32Scope holding them is active on a thread, call() runs each listed module on its
/// input cast to float32 and casts the result back to the model's dtype, except a module listed as
/// the model's output (the classifier: its float32 logits are the result). Containers are then walked
/// child by child, so that nested modules are found. Each listed module counts its calls.
class Float32Modules {
 public:
  explicit Float32Modules(torch::Dtype dtype) : dtype_(dtype) {}

  /// Lists `module` (`name`: its qualified name, for messages).
  void add(const torch::nn::Module* module, std::string name, bool float32_result) {
    OSTEONET_CHECK(module != nullptr, "Float32Modules::add: expected a module, got null");
    entries_[module] = std::make_unique<Entry>(std::move(name), float32_result);
  }

  /// Names of the listed modules that no call() has run yet.
  std::vector<std::string> uncalled() const {
    std::vector<std::string> names;
    for (const auto& kv : entries_)
      if (kv.second->calls.load(std::memory_order_relaxed) == 0) names.push_back(kv.second->name);
    return names;
  }

  /// `forward(x)` in float32 when `module` is listed (true), else false and `out` untouched.
  template <typename Forward>
  bool run(const torch::nn::Module* module, const torch::Tensor& x, Forward&& forward, torch::Tensor& out) const {
    auto it = entries_.find(module);
    if (it == entries_.end()) return false;
    it->second->calls.fetch_add(1, std::memory_order_relaxed);
    out = forward(x.to(torch::kFloat));
    if (!it->second->float32_result) out = out.to(dtype_);
    return true;
  }

 private:
  struct Entry {
    Entry(std::string n, bool f) : name(std::move(n)), float32_result(f) {}
    std::string name;
    bool float32_result;
    std::atomic<int64_t> calls{0};
  };
  torch::Dtype dtype_;
  std::unordered_map<const torch::nn::Module*, std::unique_ptr<Entry>> entries_;
};

namespace detail_call {
/// The Float32Modules active on this thread (null outside a Float32Scope).
inline const Float32Modules*& active_float32() {
  thread_local const Float32Modules* active = nullptr;
  return active;
}
}  // namespace detail_call

/// Makes `modules` (may be null: no effect) the active Float32Modules of this thread for its lifetime.
class Float32Scope {
 public:
  explicit Float32Scope(const Float32Modules* modules) : previous_(detail_call::active_float32()) {
    detail_call::active_float32() = modules;
  }
  ~Float32Scope() { detail_call::active_float32() = previous_; }
  Float32Scope(const Float32Scope&) = delete;
  Float32Scope& operator=(const Float32Scope&) = delete;

 private:
  const Float32Modules* previous_;
};

/// True when Python has taken over `module`'s calls.
inline bool overridden(const torch::nn::Module* module) {
  return !CallOverrides::instance().empty() && CallOverrides::instance().find(module) != nullptr;
}

/// True where `m` may run its forward on `x` in another memory layout and with in-place arithmetic
/// on its own intermediates: eval mode, autograd not recording, not tracing (a traced program keeps
/// the module as written), on the CPU, and no call site taken over by Python anywhere (no hook or
/// replacement can observe or hold an intermediate). The attention modules' inference layout.
inline bool unobserved_cpu_inference(const torch::nn::Module& m, const torch::Tensor& x) {
  return !m.is_training() && !torch::GradMode::is_enabled() && x.dim() == 4 && x.device().is_cpu() &&
         CallOverrides::instance().empty() && !torch::jit::tracer::isTracing();
}

/// A module Python can call with tensors (osteonet._core.Module.forward runs it): every osteonet
/// module type implements it; LibTorch's own modules are called through their torch.nn twins.
class Invocable {
 public:
  virtual ~Invocable() = default;
  /// The module's forward on tensor arguments, results flattened to a list. Parts that take other
  /// arguments (a detector's transform, RPN, RoI heads) keep the default: they run only inside
  /// their parent.
  virtual std::vector<torch::Tensor> invoke(const std::vector<torch::Tensor>& args) {
    (void)args;
    throw TypeError("this part runs only inside its parent model (it takes images, targets or lists of maps), "
                    "so it cannot be called alone");
  }
  /// Children whose calls do not go through core::call (they pass images, targets or lists), so
  /// Python refuses hooks and replacements on them; their own tensor-in, tensor-out children are
  /// still overridable.
  virtual std::vector<std::string> opaque_children() const { return {}; }
  /// Containers (Sequential, ModuleList) whose children the forward walks one by one rather than
  /// calling the container: their children are fixed (Python may replace them, not add or remove).
  virtual std::vector<std::string> walked_children() const { return {}; }
};

/// Invocable for modules whose forward takes one tensor and returns one.
template <typename Derived>
class TensorInvocable : public Invocable {
 public:
  std::vector<torch::Tensor> invoke(const std::vector<torch::Tensor>& args) override {
    OSTEONET_CHECK(args.size() == 1, static_cast<Derived&>(*this).name(), ": forward takes one tensor, got ",
                   args.size());
    return {static_cast<Derived&>(*this).forward(args[0])};
  }
};

namespace detail_call {

inline torch::Tensor single(std::vector<torch::Tensor> out, const torch::nn::Module& m) {
  OSTEONET_CHECK(out.size() == 1, m.name(), ": the Python module run in its place returned ", out.size(),
                 " tensors, expected one");
  return std::move(out[0]);
}

template <typename M>
torch::nn::Module* raw(M& m) {
  if constexpr (std::is_base_of_v<torch::nn::Module, M>) {
    return &m;
  } else {
    return m.get();  // a ModuleHolder
  }
}

template <typename M>
decltype(auto) impl(M& m) {
  if constexpr (std::is_base_of_v<torch::nn::Module, M>) {
    return (m);
  } else {
    return (*m);
  }
}

}  // namespace detail_call

torch::Tensor call(torch::nn::AnyModule& child, const torch::Tensor& x, bool* python = nullptr);

/// A Sequential (or osteonet's Seq) child by child, each through call(), as torch.nn.Sequential
/// runs; `*python` tells whether Python computed the result (the last child's call).
inline torch::Tensor run_sequential(torch::nn::SequentialImpl& seq, torch::Tensor x, bool* python = nullptr) {
  bool last = false;
  for (auto& m : seq) x = call(m, x, &last);
  if (python) *python = last;
  return x;
}

namespace detail_call {

/// True when call() may run something other than the child's own forward (an override exists in the
/// process, or a Float32Scope is active on this thread): the fast path's one test.
inline bool intercepting() { return !CallOverrides::instance().empty() || active_float32() != nullptr; }

/// What call() runs in place of `m`'s own `forward`, if anything: Python's override of `m`; `m` in
/// float32 (the active Float32Scope lists it); or, for a container, its children one by one through
/// call(), so that either is found inside it.
template <typename Forward>
std::optional<torch::Tensor> intercept(torch::nn::Module* m, const torch::Tensor& x, Forward&& forward, bool* python) {
  if (auto fn = CallOverrides::instance().find(m)) {
    if (python) *python = true;
    return single((*fn)({x}), *m);
  }
  torch::Tensor out;
  if (const auto* f32 = active_float32(); f32 != nullptr && f32->run(m, x, forward, out)) {
    if (python) *python = false;
    return out;
  }
  if (auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(m)) return run_sequential(*seq, x, python);
  return std::nullopt;
}

}  // namespace detail_call

/// `child(x)`, or what Python runs in its place. `*python` (if given) is set when Python ran: its
/// result may be held by a hook, so the caller must not modify it in place. `child` is a
/// ModuleHolder (torch::nn::Conv2d, ...) or a module reference (`*list[i]->as<T>()`).
template <typename M>
torch::Tensor call(M& child, const torch::Tensor& x, bool* python = nullptr) {
  auto& impl = detail_call::impl(child);
  if (detail_call::intercepting()) {
    auto forward = [&impl](const torch::Tensor& in) { return impl.forward(in); };
    if (auto out = detail_call::intercept(detail_call::raw(child), x, forward, python)) return std::move(*out);
  }
  if (python) *python = false;
  return impl.forward(x);
}

inline torch::Tensor call(torch::nn::AnyModule& child, const torch::Tensor& x, bool* python) {
  if (detail_call::intercepting()) {
    auto forward = [&child](const torch::Tensor& in) { return child.forward(in); };
    if (auto out = detail_call::intercept(child.ptr().get(), x, forward, python)) return std::move(*out);
  }
  if (python) *python = false;
  return child.forward(x);
}

/// `child(args...)` for forwards of several tensors or several results: `native` runs the C++
/// forward and returns its results as a list (the convention Python's replacement follows).
template <typename M, typename Native>
std::vector<torch::Tensor> call_many(M& child, const std::vector<torch::Tensor>& args, Native&& native) {
  auto& overrides = CallOverrides::instance();
  if (!overrides.empty()) {
    if (auto fn = overrides.find(detail_call::raw(child))) return (*fn)(args);
  }
  return native();
}

}  // namespace osteonet::core
