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
#include "osteonet/core/options.hpp"

namespace osteonet::attention {

/// No attention: blocks register nothing, so torchvision weights load strictly.
struct NoAttentionOptions {};

/// Typed options of one attention kind; the channel counts are filled in where it is placed.
using AttentionOptions = std::variant<NoAttentionOptions, SqueezeExciteOptions, EfficientChannelOptions,
                                      SelectiveKernelOptions, DualSelectiveOptions>;

/// The names the factory knows, in the variant's order.
inline const std::vector<std::string>& attention_names() {
  static const std::vector<std::string> names{"none", "se", "eca", "sk", "ds"};
  return names;
}

/// The name of the kind `options` holds.
inline const std::string& attention_name(const AttentionOptions& options) { return attention_names()[options.index()]; }

/// True for kinds that replace a convolution (SK) rather than follow one.
inline bool replaces_conv(const AttentionOptions& options) {
  return std::holds_alternative<SelectiveKernelOptions>(options);
}

inline bool is_none(const AttentionOptions& options) { return options.index() == 0; }

/// Default options for `name`, overridden by keyword options `<prefix><field>` (e.g. "attn_reduction").
/// Unknown names raise ValueError with the nearest valid one.
inline AttentionOptions attention_options(const std::string& name, const OptionMap& kw = {},
                                          const std::string& prefix = "attn_") {
  auto key = [&](const char* field) { return prefix + field; };
  if (name == "none" || name.empty()) return NoAttentionOptions{};
  if (name == "se") {
    SqueezeExciteOptions o;
    o.reduction(kw.get_int(key("reduction"), o.reduction())).min_channels(kw.get_int(key("min_channels"), o.min_channels()));
    return o;
  }
  if (name == "eca") {
    EfficientChannelOptions o;
    o.kernel_size(kw.get_int(key("kernel_size"), o.kernel_size()))
        .gamma(kw.get_double(key("gamma"), o.gamma()))
        .beta(kw.get_double(key("beta"), o.beta()));
    return o;
  }
  if (name == "sk") {
    SelectiveKernelOptions o;
    o.groups(kw.get_int(key("groups"), o.groups()))
        .reduction(kw.get_int(key("reduction"), o.reduction()))
        .min_attn_channels(kw.get_int(key("min_channels"), o.min_attn_channels()));
    return o;
  }
  if (name == "ds") {
    DualSelectiveOptions o;
    o.groups(kw.get_int(key("groups"), o.groups()))
        .reduction(kw.get_int(key("reduction"), o.reduction()))
        .gate(kw.get_string(key("gate"), o.gate()))
        .dilated_branches(kw.get_bool(key("dilated_branches"), o.dilated_branches()))
        .fuse_dilation(kw.get_int(key("fuse_dilation"), o.fuse_dilation()))
        .residual(kw.get_bool(key("residual"), o.residual()))
        .zero_init_fuse(kw.get_bool(key("zero_init_fuse"), o.zero_init_fuse()));
    return o;
  }
  throw_unknown_name("attention", "attention", name, attention_names());
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
