// The backbone contract: logits, feature maps described by FeatureInfo, input checks, and the
// stage-level ("dsnet") attention slots shared by every backbone.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "osteonet/attention/attention.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/core/feature_info.hpp"

namespace osteonet::backbones {

/// Where a backbone's attention goes. "blocks": inside every residual block (ResNet, timm's way).
/// "dsnet": DSNet Fig. 3's placement, one module after the stem stage (`attn_stem`) and one after the
/// last feature stage (`attn_last`); the only placement for non-residual networks.
enum class AttentionPlacement { kBlocks, kDSNet };

inline AttentionPlacement parse_placement(const std::string& s) {
  if (s == "blocks") return AttentionPlacement::kBlocks;
  if (s == "dsnet") return AttentionPlacement::kDSNet;
  throw_unknown_name("attention_placement", "placement", s, {"blocks", "dsnet"});
}

/// Every osteonet backbone: logits, feature maps and their description, input checks.
///
/// An interface rather than a torch::nn::Module subclass: LibTorch 2.x's Cloneable<T> derives from
/// Module non-virtually, so a second Module base would be ambiguous. Concrete backbones derive from
/// Backbone<Derived> (below), which is the one Module; module() reaches it through this interface.
class BackboneImpl {
 public:
  virtual ~BackboneImpl() = default;

  /// Logits (N x num_classes), or pooled features when num_classes == 0.
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  /// One map per entry of feature_info(), in order.
  virtual std::vector<torch::Tensor> forward_features(torch::Tensor x) = 0;
  /// All heads' outputs in training mode (Inception: logits and auxiliary logits); else {forward}.
  virtual std::vector<torch::Tensor> forward_heads(torch::Tensor x) { return {forward(std::move(x))}; }

  /// The backbone as a torch::nn::Module (parameters, state, train/eval, serialisation).
  virtual torch::nn::Module& module() = 0;
  virtual const torch::nn::Module& module() const = 0;

  // Conveniences for code that holds the interface (e.g. models::create_model's result).
  void train(bool on = true) { module().train(on); }
  void eval() { module().eval(); }
  bool is_training() const { return module().is_training(); }
  std::vector<torch::Tensor> parameters(bool recurse = true) const { return module().parameters(recurse); }
  torch::OrderedDict<std::string, torch::Tensor> named_parameters(bool recurse = true) const {
    return module().named_parameters(recurse);
  }
  torch::OrderedDict<std::string, torch::Tensor> named_buffers(bool recurse = true) const {
    return module().named_buffers(recurse);
  }
  void to(torch::Device device, bool non_blocking = false) { module().to(device, non_blocking); }
  void to(torch::Dtype dtype, bool non_blocking = false) { module().to(dtype, non_blocking); }

  const FeatureInfoList& feature_info() const { return feature_info_; }
  const std::string& model_name() const { return model_name_; }
  int64_t in_chans() const { return in_chans_; }
  int64_t num_classes() const { return num_classes_; }
  /// Smallest height/width the network accepts.
  int64_t min_input_size() const { return min_input_size_; }

  /// The stage-level ("dsnet" placement) attention after the stem stage / the last stage; identity
  /// when there is none (public so that detectors that re-wire a backbone's stages can apply it).
  torch::Tensor stem_attention(torch::Tensor x) { return attn_stem_ ? attn_stem_->forward(x) : x; }
  torch::Tensor last_attention(torch::Tensor x) { return attn_last_ ? attn_last_->forward(x) : x; }

  /// Throws ValueError/TypeError when `x` is not a float N x in_chans x H x W batch of the model's dtype.
  void check_input(const torch::Tensor& x) const {
    OSTEONET_CHECK(x.defined(), model_name_, ": expected an input tensor, got an undefined tensor");
    OSTEONET_CHECK_TYPE(x.is_floating_point(), model_name_, ": expected a floating-point input, got dtype=",
                        x.dtype());
    OSTEONET_CHECK(x.dim() == 4, model_name_, ": expected a 4-D input (N, C, H, W), got a ", x.dim(),
                   "-D tensor of shape ", x.sizes());
    OSTEONET_CHECK(x.size(1) == in_chans_, model_name_, ": expected ", in_chans_, " input channels, got ",
                   x.size(1), " (input shape ", x.sizes(), ")");
    OSTEONET_CHECK(x.size(2) >= min_input_size_ && x.size(3) >= min_input_size_, model_name_,
                   ": expected height and width >= ", min_input_size_, ", got ", x.size(2), "x", x.size(3));
    OSTEONET_CHECK_TYPE(!probe_.defined() || probe_.dtype() == x.dtype(), model_name_, ": expected input dtype ",
                        probe_.dtype(), " (the model's), got dtype=", x.dtype());
    OSTEONET_CHECK(!probe_.defined() || probe_.device() == x.device(), model_name_, ": expected input on ",
                   probe_.device(), " (the model's device), got device=", x.device());
  }

 protected:
  /// Checks and stores the common options (called first by every reset()).
  template <typename Options>
  void init_common(const Options& o) {
    OSTEONET_CHECK(o.in_chans() > 0, model_name_, ": in_chans must be positive, got in_chans=", o.in_chans());
    OSTEONET_CHECK(o.num_classes() >= 0, model_name_, ": num_classes must be >= 0, got num_classes=", o.num_classes());
    in_chans_ = o.in_chans();
    num_classes_ = o.num_classes();
  }


  std::string model_name_ = "backbone";
  int64_t in_chans_ = 3;
  int64_t num_classes_ = 1000;
  int64_t min_input_size_ = 32;
  FeatureInfoList feature_info_;
  std::optional<torch::nn::AnyModule> attn_stem_, attn_last_;
  /// A parameter whose dtype and device are the model's (the first convolution's weight; it shares
  /// the parameter's storage and metadata, so .to() is seen here too).
  torch::Tensor probe_;
};

/// Base of every concrete backbone: the single torch::nn::Module (through Cloneable<Derived>) plus
/// the BackboneImpl interface, and the helpers that register submodules.
template <typename Derived>
class Backbone : public torch::nn::Cloneable<Derived>, public BackboneImpl {
 public:
  // Module's own versions win over the interface's forwarding ones inside concrete classes.
  using torch::nn::Module::eval;
  using torch::nn::Module::is_training;
  using torch::nn::Module::named_buffers;
  using torch::nn::Module::named_parameters;
  using torch::nn::Module::parameters;
  using torch::nn::Module::to;
  using torch::nn::Module::train;

  torch::nn::Module& module() override { return *this; }
  const torch::nn::Module& module() const override { return *this; }

 protected:
  /// Registers `attn_stem` / `attn_last` for the "dsnet" placement (nothing for "none").
  void register_stage_attention(const attention::AttentionOptions& options, int64_t stem_channels,
                                int64_t last_channels) {
    attn_stem_ = attention::create_attention(options, stem_channels);
    attn_last_ = attention::create_attention(options, last_channels);
    if (attn_stem_) this->register_module("attn_stem", attn_stem_->ptr());
    if (attn_last_) this->register_module("attn_last", attn_last_->ptr());
  }

  /// Re-applies attention modules' own initialisation after a backbone-wide init overwrote it.
  void finish_init() {
    for (auto& m : this->modules(/*include_self=*/false))
      if (auto* ds = m->template as<attention::DualSelectiveImpl>()) ds->init_weights();
  }
};

}  // namespace osteonet::backbones

/// Adds the common backbone arguments to an options struct, chainable (`.num_classes(3).in_chans(1)`).
#define OSTEONET_BACKBONE_ARGS                                                                        \
  TORCH_ARG(int64_t, num_classes) = 1000;                                                             \
  TORCH_ARG(int64_t, in_chans) = 3;                                                                   \
  TORCH_ARG(::osteonet::attention::AttentionOptions, attention) = ::osteonet::attention::NoAttentionOptions{};
