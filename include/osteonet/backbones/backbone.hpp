// The backbone contract: logits, feature maps described by FeatureInfo, input checks, and the
// stage-level ("dsnet") attention slots shared by every backbone.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "osteonet/attention/attention.hpp"
#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/core/feature_info.hpp"

namespace osteonet::backbones {

/// Where a backbone's attention goes. "blocks": inside every residual block (ResNet, timm's way).
/// "dsnet": DSNet Fig. 3's placement, one module after the stem stage (`attn_stem`) and one after the
/// last feature stage (`attn_last`); the only placement for non-residual networks.
enum class AttentionPlacement { kBlocks, kDSNet };

inline std::string placement_name(AttentionPlacement p) { return p == AttentionPlacement::kBlocks ? "blocks" : "dsnet"; }

inline AttentionPlacement parse_placement(const std::string& s) {
  if (s == "blocks") return AttentionPlacement::kBlocks;
  if (s == "dsnet") return AttentionPlacement::kDSNet;
  throw_unknown_name("attention_placement", "placement", s, {"blocks", "dsnet"});
}

/// Every osteonet backbone: logits, feature maps and their description, input checks.
///
/// The surface is timm's: forward(x) == forward_head(forward_features(x)); forward_intermediates(x)
/// returns one map per feature_info() entry (what detectors and U-Nets read); reset_classifier(n)
/// swaps the head. Submodules are called through core::call, so Python can hook or replace them.
///
/// An interface rather than a torch::nn::Module subclass: LibTorch 2.x's Cloneable<T> derives from
/// Module non-virtually, so a second Module base would be ambiguous. Concrete backbones derive from
/// Backbone<Derived> (below), which is the one Module; module() reaches it through this interface.
class BackboneImpl : public core::Invocable {
 public:
  ~BackboneImpl() override = default;

  /// Logits (N x num_classes), or pooled features when num_classes == 0.
  virtual torch::Tensor forward(torch::Tensor x) { return forward_head(forward_features(std::move(x))); }
  /// The last feature map, before pooling: what forward_head() takes.
  virtual torch::Tensor forward_features(torch::Tensor x) = 0;
  /// Pooling and the classifier on forward_features()' map; `pre_logits` stops before the classifier.
  virtual torch::Tensor forward_head(torch::Tensor x, bool pre_logits = false) = 0;
  /// One map per entry of feature_info(), in order.
  virtual std::vector<torch::Tensor> forward_intermediates(torch::Tensor x) = 0;
  /// All heads' outputs in training mode (Inception: logits and auxiliary logits); else {forward}.
  virtual std::vector<torch::Tensor> forward_heads(torch::Tensor x) { return {forward(std::move(x))}; }
  /// A new, freshly initialised classifier with `num_classes` outputs (0 removes it: forward returns
  /// pooled features). Feature layers keep their weights.
  virtual void reset_classifier(int64_t num_classes) = 0;

  std::vector<torch::Tensor> invoke(const std::vector<torch::Tensor>& args) override {
    OSTEONET_CHECK(args.size() == 1, model_name_, ": forward takes one tensor, got ", args.size());
    return {forward(args[0])};
  }

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
  /// Qualified names of the first convolution ("conv1", "features.0.0") and of the layer that
  /// produces the logits ("fc", "classifier.6"; "" without a classifier).
  const std::string& stem_path() const { return stem_name_; }
  virtual std::string head_path() const = 0;

  /// The stage-level ("dsnet" placement) attention after the stem stage / the last stage; identity
  /// when there is none (public so that detectors that re-wire a backbone's stages can apply it).
  torch::Tensor stem_attention(const torch::Tensor& x) { return attn_stem_ ? core::call(*attn_stem_, x) : x; }
  torch::Tensor last_attention(const torch::Tensor& x) { return attn_last_ ? core::call(*attn_last_, x) : x; }

  /// Throws ValueError/TypeError when `x` is not a float N x in_chans x H x W batch of the model's
  /// dtype. Channels, dtype and device are not checked while Python runs the stem (a replaced or
  /// hooked first layer decides what it takes).
  void check_input(const torch::Tensor& x) const {
    OSTEONET_CHECK(x.defined(), model_name_, ": expected an input tensor, got an undefined tensor");
    OSTEONET_CHECK_TYPE(x.is_floating_point(), model_name_, ": expected a floating-point input, got dtype=",
                        x.dtype());
    OSTEONET_CHECK(x.dim() == 4, model_name_, ": expected a 4-D input (N, C, H, W), got a ", x.dim(),
                   "-D tensor of shape ", x.sizes());
    OSTEONET_CHECK(x.size(2) >= min_input_size_ && x.size(3) >= min_input_size_, model_name_,
                   ": expected height and width >= ", min_input_size_, ", got ", x.size(2), "x", x.size(3));
    if (stem_overridden()) return;
    OSTEONET_CHECK(x.size(1) == in_chans_, model_name_, ": expected ", in_chans_, " input channels, got ",
                   x.size(1), " (input shape ", x.sizes(), ")");
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


  /// Sets the classifier's output count after reset_classifier() (and checks it).
  void set_num_classes(int64_t num_classes) {
    OSTEONET_CHECK(num_classes >= 0, model_name_, ".reset_classifier: num_classes must be >= 0, got num_classes=",
                   num_classes);
    num_classes_ = num_classes;
  }

  /// True when Python runs a module on the path to the first convolution (see check_input).
  bool stem_overridden() const {
    if (core::CallOverrides::instance().empty()) return false;
    for (const auto& m : stem_path_)
      if (core::overridden(m.get())) return true;
    return false;
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
  /// The submodules from the root's child down to the first convolution (e.g. features, features.0,
  /// features.0.0): while Python runs any of them, the input's channels are its business.
  std::vector<std::shared_ptr<torch::nn::Module>> stem_path_;
  std::string stem_name_;
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
    register_stem_attention(options, stem_channels);
    register_last_attention(options, last_channels);
  }
  /// The two halves, for backbones that register children in the order they run (ResNet).
  void register_stem_attention(const attention::AttentionOptions& options, int64_t channels) {
    attn_stem_ = attention::create_attention(options, channels);
    if (attn_stem_) this->register_module("attn_stem", attn_stem_->ptr());
  }
  void register_last_attention(const attention::AttentionOptions& options, int64_t channels) {
    attn_last_ = attention::create_attention(options, channels);
    if (attn_last_) this->register_module("attn_last", attn_last_->ptr());
  }

  /// Records the submodules on the way to the first convolution, by its qualified name ("conv1",
  /// "features.0.0"); see BackboneImpl::check_input.
  void set_stem_path(const std::string& qualname) {
    stem_name_ = qualname;
    stem_path_.clear();
    const auto modules = this->named_modules("", /*include_self=*/false);
    std::string prefix;
    std::size_t start = 0;
    while (start <= qualname.size()) {
      const std::size_t dot = qualname.find('.', start);
      const std::size_t end = dot == std::string::npos ? qualname.size() : dot;
      prefix = qualname.substr(0, end);
      const auto* m = modules.find(prefix);
      OSTEONET_CHECK(m != nullptr, model_name_, ": no submodule '", prefix, "' on the stem path '", qualname, "'");
      stem_path_.push_back(*m);
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  }

  /// reset_classifier's work for a head `make(num_classes)` registered as `name` in `head`: the old
  /// head goes and, unless num_classes is 0, a new one comes, its linears N(0, linear_std) with zero
  /// biases (linear_std 0: PyTorch's default init; `zero_bias` zeroes the biases then too).
  template <typename Holder, typename Make>
  void replace_head(Holder& head, const std::string& name, int64_t num_classes, Make make, double linear_std,
                    bool zero_bias = false) {
    this->set_num_classes(num_classes);
    if (head) this->unregister_module(name);
    head = Holder(nullptr);
    if (num_classes == 0) return;
    head = this->register_module(name, make(num_classes));
    torch::NoGradGuard no_grad;
    for (auto& m : head->modules(/*include_self=*/true)) {
      auto* l = m->template as<torch::nn::LinearImpl>();
      if (!l) continue;
      if (linear_std > 0) torch::nn::init::normal_(l->weight, 0.0, linear_std);
      if (l->bias.defined() && (linear_std > 0 || zero_bias)) torch::nn::init::zeros_(l->bias);
    }
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
