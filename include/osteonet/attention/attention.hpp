// The attention factory: one place that turns a name ("none", "se", "eca", "sk", "ds") and typed
// options into a module, as timm's create_attn does.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "osteonet/attention/dual_selective.hpp"
#include "osteonet/attention/efficient_channel.hpp"
#include "osteonet/attention/selective_kernel.hpp"
#include "osteonet/attention/squeeze_excite.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/core/model_registry.hpp"
#include "osteonet/core/options.hpp"
#include "osteonet/core/registry.hpp"

namespace osteonet::attention {

/// No attention: blocks register nothing, so torchvision weights load strictly.
struct NoAttentionOptions {};

/// Typed options of one attention kind; the channel counts are filled in where it is placed.
using AttentionOptions = std::variant<NoAttentionOptions, SqueezeExciteOptions, EfficientChannelOptions,
                                      SelectiveKernelOptions, DualSelectiveOptions>;

/// Attention kinds by name: each entry turns keyword options `<prefix><field>` (e.g.
/// "attn_reduction" inside a backbone's options) into typed options, defaults from the Options
/// structs. The channel counts are filled in where a module is placed (create_attention below).
using AttentionRegistry = core::Registry<AttentionOptions, const std::string&>;

inline AttentionRegistry& attention_registry() {
  static AttentionRegistry registry("attention");
  static const bool filled = [] {
    auto& r = registry;
    r.add({"none", "attention", "no attention: blocks register nothing, so torchvision weights load strictly", "",
           [](const OptionMap&, const std::string&) -> AttentionOptions { return NoAttentionOptions{}; }});
    r.add({"se", "attention", "Squeeze-and-Excitation (Hu et al., CVPR 2018)", "timm SEModule",
           [](const OptionMap& kw, const std::string& prefix) -> AttentionOptions {
             SqueezeExciteOptions o;
             o.reduction(kw.get_int(prefix + "reduction", o.reduction()))
                 .min_channels(kw.get_int(prefix + "min_channels", o.min_channels()));
             return o;
           }});
    r.add({"eca", "attention", "Efficient Channel Attention (Wang et al., CVPR 2020)", "timm EcaModule",
           [](const OptionMap& kw, const std::string& prefix) -> AttentionOptions {
             EfficientChannelOptions o;
             o.kernel_size(kw.get_int(prefix + "kernel_size", o.kernel_size()))
                 .gamma(kw.get_double(prefix + "gamma", o.gamma()))
                 .beta(kw.get_double(prefix + "beta", o.beta()));
             return o;
           }});
    r.add({"sk", "attention", "Selective Kernel convolution (Li et al., CVPR 2019); replaces a 3x3 convolution",
           "timm SelectiveKernel", [](const OptionMap& kw, const std::string& prefix) -> AttentionOptions {
             SelectiveKernelOptions o;
             o.groups(kw.get_int(prefix + "groups", o.groups()))
                 .reduction(kw.get_int(prefix + "reduction", o.reduction()))
                 .min_attn_channels(kw.get_int(prefix + "min_channels", o.min_attn_channels()));
             return o;
           }});
    r.add({"ds", "attention", "DSNet's dual-selective attention (seed 000, Sec. 2.3)", "",
           [](const OptionMap& kw, const std::string& prefix) -> AttentionOptions {
             DualSelectiveOptions o;
             o.groups(kw.get_int(prefix + "groups", o.groups()))
                 .reduction(kw.get_int(prefix + "reduction", o.reduction()))
                 .gate(kw.get_string(prefix + "gate", o.gate()))
                 .dilated_branches(kw.get_bool(prefix + "dilated_branches", o.dilated_branches()))
                 .fuse_dilation(kw.get_int(prefix + "fuse_dilation", o.fuse_dilation()))
                 .residual(kw.get_bool(prefix + "residual", o.residual()))
                 .zero_init_fuse(kw.get_bool(prefix + "zero_init_fuse", o.zero_init_fuse()));
             return o;
           }});
    return true;
  }();
  (void)filled;
  return registry;
}

/// The names the factory knows, in the variant's order.
inline std::vector<std::string> attention_names() { return attention_registry().names(); }

/// The name of the kind `options` holds.
inline std::string attention_name(const AttentionOptions& options) { return attention_names()[options.index()]; }

/// True for kinds that replace a convolution (SK) rather than follow one.
inline bool replaces_conv(const AttentionOptions& options) {
  return std::holds_alternative<SelectiveKernelOptions>(options);
}

inline bool is_none(const AttentionOptions& options) { return options.index() == 0; }

/// Default options for `name`, overridden by keyword options `<prefix><field>` (e.g. "attn_reduction").
/// Unknown names raise ValueError with the nearest valid one ("" means "none").
inline AttentionOptions attention_options(const std::string& name, const OptionMap& kw = {},
                                          const std::string& prefix = "attn_") {
  return attention_registry().at(name.empty() ? "none" : name).build(kw, prefix);
}

/// Builds the module of `options` for a map of `channels` (SK: `channels` in, `out_channels` out
/// (0 = same), `stride`). Returns nothing for "none".
inline std::optional<torch::nn::AnyModule> create_attention(const AttentionOptions& options, int64_t channels,
                                                            int64_t out_channels = 0, int64_t stride = 1) {
  return std::visit(
      [&](auto o) -> std::optional<torch::nn::AnyModule> {
        using T = decltype(o);
        if constexpr (std::is_same_v<T, NoAttentionOptions>) {
          return std::nullopt;
        } else if constexpr (std::is_same_v<T, SelectiveKernelOptions>) {
          o.in_channels(channels).out_channels(out_channels).stride(stride);
          return torch::nn::AnyModule(SelectiveKernel(o));
        } else {
          OSTEONET_CHECK(stride == 1 && (out_channels == 0 || out_channels == channels),
                         "create_attention: '", attention_name(options),
                         "' keeps the map's shape and cannot replace a convolution, got stride=", stride,
                         " out_channels=", out_channels);
          o.channels(channels);
          if constexpr (std::is_same_v<T, SqueezeExciteOptions>) return torch::nn::AnyModule(SqueezeExcite(o));
          if constexpr (std::is_same_v<T, EfficientChannelOptions>) return torch::nn::AnyModule(EfficientChannel(o));
          if constexpr (std::is_same_v<T, DualSelectiveOptions>) return torch::nn::AnyModule(DualSelective(o));
        }
      },
      options);
}

/// Convenience: create by name with default options.
inline std::optional<torch::nn::AnyModule> create_attention(const std::string& name, int64_t channels) {
  return create_attention(attention_options(name), channels);
}

}  // namespace osteonet::attention

namespace osteonet::attention::detail_registry {
/// The attention modules as models (family "attention"): `channels` (and for SK `out_channels`,
/// `stride`) plus the kind's own options without a prefix, e.g. create_model("se", channels=64).
inline std::shared_ptr<torch::nn::Module> build(const std::string& name, const OptionMap& o) {
  auto options = attention_options(name, o, "");
  const int64_t channels = o.get_int("channels", 0);
  OSTEONET_CHECK(channels > 0, name, ": channels must be positive, got channels=", channels);
  int64_t out = 0, stride = 1;
  if (replaces_conv(options)) {
    out = o.get_int("out_channels", 0);
    stride = o.get_int("stride", 1);
  }
  return create_attention(options, channels, out, stride)->ptr();
}

inline const bool registered = [] {
  for (const auto& e : attention_registry().entries()) {
    if (e.name == "none") continue;
    const std::string name = e.name;
    core::models().add({name, "attention", e.description, e.reference,
                        [name](const OptionMap& o) { return build(name, o); }});
  }
  return true;
}();
}  // namespace osteonet::attention::detail_registry
