// InferenceSession: a prepared, callable copy of an osteonet backbone for inference (issue 8): eval
// and no-grad, Conv+BN folding, TorchScript freezing with oneDNN prepacking per input shape on the
// CPU, bfloat16 (channels-last) with a measured accuracy check, thread settings, warm-up, and CUDA
// graphs per input shape where LibTorch has CUDA (OSTEONET_WITH_CUDA).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/backbones/registry.hpp"
#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/runtime/fold_batchnorm.hpp"
#include "osteonet/runtime/session_base.hpp"

namespace osteonet::runtime {

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
/// |softmax(session) - softmax(eager float32)| over the example input (`accuracy()`; sigmoid for one
/// logit; max |difference| relative to the largest reference value for outputs that are not
/// logits, e.g. features(true)); a bfloat16 session above tolerance_bfloat16 is rebuilt with its
/// float32 ends (the stem convolution and the classifier in float32, everything between in bfloat16:
/// core::Float32Modules; at once with float32_ends(true)), and above it again falls back to float32
/// (warnings); a float32 session above tolerance_float32 falls back to the unfolded eager copy (warning).
class InferenceSession : public SessionBase {
 public:
  /// `config`: the ModelConfig `model` was created with (models::create_model); the session builds
  /// its own instance from the registry and copies the model's current parameters and buffers.
  InferenceSession(const backbones::BackboneImpl& model, models::ModelConfig config, const torch::Tensor& example,
                   InferenceSessionOptions options = {})
      : SessionBase("InferenceSession", model.model_name(), std::move(options)), config_(std::move(config)) {
    init(model, example);
  }

  /// For models created with only num_classes/in_chans (no attention or model keywords).
  InferenceSession(const backbones::BackboneImpl& model, const torch::Tensor& example,
                   InferenceSessionOptions options = {})
      : SessionBase("InferenceSession", model.model_name(), std::move(options)) {
    config_.num_classes = model.num_classes();
    config_.in_chans = model.in_chans();
    init(model, example);
  }

  /// Runs the prepared model: float32 output for an N x C x H x W input (float32 or the session dtype).
  torch::Tensor operator()(const torch::Tensor& x) { return forward(x); }

  /// The accuracy measure of `outputs`, another program's float32 outputs for the example input,
  /// against eager float32 (the definition above): how a program built from this session (e.g. the
  /// Python side's oneDNN Graph program under torch 2.x, docs/runtime.md) is held to the same check.
  double accuracy_of(const torch::Tensor& outputs) const {
    OSTEONET_CHECK_TYPE(outputs.defined() && outputs.scalar_type() == torch::kFloat, where(),
                        ": accuracy_of expects float32 outputs, got ",
                        outputs.defined() ? std::string(c10::toString(outputs.scalar_type())) : "an undefined tensor");
    OSTEONET_CHECK(outputs.sizes() == expected_.sizes(), where(), ": accuracy_of expects outputs of shape ",
                   expected_.sizes(), " (the example input's), got ", outputs.sizes());
    torch::NoGradGuard no_grad;
    const auto got = outputs.to(expected_.device());
    if (expected_.dim() == 2 && net_->num_classes() == 1)  // one logit: its sigmoid is the probability
      return (got.sigmoid() - expected_.sigmoid()).abs().max().item<double>();
    if (expected_.dim() == 2 && net_->num_classes() > 1)
      return (got.softmax(1) - expected_.softmax(1)).abs().max().item<double>();
    const double scale = std::max(1.0, expected_.abs().max().item<double>());
    return (got - expected_).abs().max().item<double>() / scale;
  }

  /// The largest accuracy() accepted for the session's dtype.
  double tolerance() const { return bf16_ ? options_.tolerance_bfloat16() : options_.tolerance_float32(); }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    return (*programs_)(session_input(x)).front().to(torch::kFloat);
  }

  /// The folded copy run eagerly, past the per-shape programs (what they are traced from; the Python side
  /// traces it for its oneDNN Graph programs, docs/runtime.md).
  torch::Tensor forward_eager(const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    core::Float32Scope scope(float32_.get());
    return net_->forward(session_input(x)).to(torch::kFloat);
  }

 private:
  void init(const backbones::BackboneImpl& model, const torch::Tensor& example) {
    if (options_.features()) config_.num_classes = 0;  // the copies are built without the classifier
    OSTEONET_CHECK_TYPE(example.defined(), where(), ": expected an example input tensor, got an undefined tensor");
    OSTEONET_CHECK_TYPE(example.is_floating_point(), where(), ": expected a floating-point example input, got dtype=",
                        example.dtype());
    torch::NoGradGuard no_grad;
    // The reference: an eval-mode float32 copy of the caller's model (which is left untouched).
    const auto ref = copy_model(model, torch::kFloat);
    const auto x32 = example.to(device_, torch::kFloat);
    ref->check_input(x32);
    expected_ = ref->forward(x32).to(torch::kFloat);
    build([&](bool bf16, bool ends, bool fold) { return prepare(copy_model(model, torch::kFloat), bf16, ends, fold); },
          [&] {
            const double accuracy = accuracy_of(forward(x32));
            const auto missed = float32_ ? float32_->uncalled() : std::vector<std::string>{};
            if (!missed.empty())  // each end must be a call site that core::call sees
              throw std::runtime_error(c10::str(where(), ": '", missed.front(), "' is not called through core::call, ",
                                                "so it cannot run in float32; use float32_ends=false or ",
                                                "dtype=\"float32\""));
            return accuracy;
          },
          "output", /*ends=*/true);
  }

  /// An eval-mode copy of `model` in `dtype` on the session's device, without gradients: a new
  /// instance from the registry (`config_`) with the model's parameters and buffers copied by name.
  /// (Module::clone() is not used: it does not rebuild every osteonet container faithfully.)
  std::shared_ptr<backbones::BackboneImpl> copy_model(const backbones::BackboneImpl& model, torch::Dtype dtype) const {
    auto net = models::create_model(model.model_name(), config_);
    // Without its classifier (config.num_classes == 0 while the model has one), the copy holds a
    // subset of the model's tensors; otherwise exactly the same set.
    const bool subset = config_.num_classes == 0 && model.num_classes() != 0;
    const std::string hint = "; pass the ModelConfig it was created with";
    copy_tensors(model.named_parameters(true), net->named_parameters(true), subset, hint);
    copy_tensors(model.named_buffers(true), net->named_buffers(true), subset, hint);
    net->module().to(device_, dtype);
    net->eval();
    for (auto& p : net->module().parameters()) p.set_requires_grad(false);
    return net;
  }

  /// Folds (optionally) and converts `net` to the session dtype, its stem convolution and classifier
  /// kept in float32 when `ends` (bfloat16); a new program cache. Returns the folded pairs.
  int64_t prepare(std::shared_ptr<backbones::BackboneImpl> net, bool bf16, bool ends, bool fold) {
    torch::NoGradGuard no_grad;
    const int64_t folded = fold ? fold_batchnorm(net->module()) : 0;
    dtype_ = bf16 ? torch::kBFloat16 : torch::kFloat;
    float32_.reset();
    if (bf16) {
      net->module().to(torch::kBFloat16);
      if (ends) {
        float32_ = std::make_shared<core::Float32Modules>(torch::kBFloat16);
        const auto modules = net->module().named_modules();
        for (const auto& [path, result] : {std::pair{net->stem_path(), false}, std::pair{net->head_path(), true}}) {
          if (path.empty()) continue;  // no classifier (features(true), num_classes 0)
          const auto* m = modules.find(path);
          if (m == nullptr) throw std::runtime_error(c10::str(where(), ": no module '", path, "' to keep in float32"));
          (*m)->to(torch::kFloat);
          float32_->add(m->get(), path, /*float32_result=*/result);
          float32_modules_.push_back(path);
        }
      }
      // Channels-last weights: oneDNN's bfloat16 (AMX) convolutions on the CPU, tensor cores on CUDA.
      for (auto& p : net->module().parameters())
        if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    }
    net_ = std::move(net);
    auto model = net_;
    auto float32 = float32_;  // the program's casts are traced into frozen programs and CUDA graphs
    set_program([model, float32](const torch::Tensor& x) {
      core::Float32Scope scope(float32.get());
      return std::vector<torch::Tensor>{model->forward(x)};
    });
    return folded;
  }

  /// `x` checked and in the session's device, dtype and layout.
  torch::Tensor session_input(const torch::Tensor& x) const {
    OSTEONET_CHECK_TYPE(x.defined(), where(), ": expected an input tensor, got an undefined tensor");
    OSTEONET_CHECK_TYPE(x.scalar_type() == torch::kFloat || x.scalar_type() == dtype_, where(),
                        ": expected a float32 input", bf16_ ? " (or bfloat16)" : "", ", got dtype=", x.dtype());
    auto in = x.to(device_, float32_ ? torch::kFloat : dtype_);  // a float32 stem takes float32
    net_->check_input(in);
    return bf16_ ? in.contiguous(torch::MemoryFormat::ChannelsLast) : in;
  }

  models::ModelConfig config_;
  torch::Tensor expected_;  // eager float32 outputs for the example input
  torch::Dtype dtype_ = torch::kFloat;
  std::shared_ptr<backbones::BackboneImpl> net_;
  std::shared_ptr<core::Float32Modules> float32_;  // the float32 ends, or null
};

}  // namespace osteonet::runtime
