// The backbones' entries in the model registry (core::models(), family "backbone"), and the typed
// C++ entry point models::create_model (the C++ twin of timm's create_model). Named variants are
// registry entries, not new classes; every default is the Options struct's own.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "osteonet/attention/attention.hpp"
#include "osteonet/backbones/backbone.hpp"
#include "osteonet/backbones/densenet.hpp"
#include "osteonet/backbones/dxa_cnn.hpp"
#include "osteonet/backbones/inception.hpp"
#include "osteonet/backbones/mobilenet.hpp"
#include "osteonet/backbones/resnet.hpp"
#include "osteonet/backbones/vgg.hpp"
#include "osteonet/core/model_registry.hpp"
#include "osteonet/core/options.hpp"

namespace osteonet::models {

/// What create_model builds: the common arguments (unset ones take the model's own default) plus
/// keyword options by name.
struct ModelConfig {
  std::optional<int64_t> num_classes;
  std::optional<int64_t> in_chans;
  /// "none", "se", "eca", "sk" or "ds"; its options come as "attn_<field>" keywords.
  std::optional<std::string> attention;
  /// Model-specific keywords (e.g. aux_logits, dropout, attention_placement, attn_reduction).
  OptionMap options;

  /// Everything as keyword options (what the registry's builders read).
  OptionMap to_options() const {
    OptionMap o = options;
    if (num_classes) o.set("num_classes", *num_classes);
    if (in_chans) o.set("in_chans", *in_chans);
    if (attention) o.set("attention", *attention);
    return o;
  }
};

using BackbonePtr = std::shared_ptr<backbones::BackboneImpl>;

/// Names of every registered backbone (every model usable as a classifier or an encoder).
inline std::vector<std::string> list_models() { return core::models().names("backbone"); }

/// Builds backbone `name`; unknown names and options raise ValueError with the nearest valid name.
inline BackbonePtr create_model(const std::string& name, const ModelConfig& config = {}) {
  core::models().at(name, "backbone");
  return core::create<backbones::BackboneImpl>(name, config.to_options());
}

}  // namespace osteonet::models

namespace osteonet::backbones::detail_registry {

/// num_classes, in_chans and attention (with its attn_* options), defaults from `Options`.
template <typename Options>
Options common(const OptionMap& o) {
  Options d;
  d.num_classes(o.get_int("num_classes", d.num_classes()))
      .in_chans(o.get_int("in_chans", d.in_chans()))
      .attention(attention::attention_options(o.get_string("attention", attention::attention_name(d.attention())), o));
  return d;
}

inline ResNetOptions resnet_options(const OptionMap& o) {
  auto d = common<ResNetOptions>(o);
  d.placement(parse_placement(o.get_string("attention_placement", placement_name(d.placement()))))
      .zero_init_residual(o.get_bool("zero_init_residual", d.zero_init_residual()))
      .frozen_bn(o.get_bool("frozen_bn", d.frozen_bn()))
      .stride_in_1x1(o.get_bool("stride_in_1x1", d.stride_in_1x1()));
  return d;
}

template <typename Options>
Options with_dropout(const OptionMap& o) {
  auto d = common<Options>(o);
  d.dropout(o.get_double("dropout", d.dropout()));
  return d;
}

using Module = std::shared_ptr<torch::nn::Module>;

inline void add(const std::string& name, const std::string& description, const std::string& torchvision,
                std::function<Module(const OptionMap&)> build) {
  core::models().add({name, "backbone", description, torchvision, std::move(build)});
}

inline const bool registered = [] {
  add("resnet18", "ResNet-18 (attention in blocks or dsnet placement)", "resnet18",
      [](const OptionMap& o) -> Module { return resnet18(resnet_options(o)).ptr(); });
  add("resnet34", "ResNet-34; the slice encoder of seed 002", "resnet34",
      [](const OptionMap& o) -> Module { return resnet34(resnet_options(o)).ptr(); });
  add("resnet50", "ResNet-50; DSNet Table 1 with none/se/sk/ds", "resnet50",
      [](const OptionMap& o) -> Module { return resnet50(resnet_options(o)).ptr(); });
  add("resnet101", "ResNet-101", "resnet101",
      [](const OptionMap& o) -> Module { return resnet101(resnet_options(o)).ptr(); });
  add("dsnet_resnet50", "DSNet backbone (seed 000 Fig. 3): ResNet-50 + DS after the stem and the last stage", "",
      [](const OptionMap& o) -> Module {
        const auto attn = o.get_string("attention", "ds");
        OSTEONET_CHECK(attn == "none" || attn == "ds",
                       "dsnet_resnet50: the DSNet backbone carries DS attention, got attention='", attn, "'");
        auto d = resnet_options(o);  // reads the options on `o` itself, so unread ones are reported
        d.attention(attention::attention_options("ds", o)).placement(AttentionPlacement::kDSNet);
        return ResNetBottleneck(d, "dsnet_resnet50").ptr();
      });
  add("vgg16", "VGG-16; DSNet Table 2 (± DS)", "vgg16",
      [](const OptionMap& o) -> Module { return vgg16(with_dropout<VGGOptions>(o)).ptr(); });
  add("vgg16_bn", "VGG-16 with BatchNorm", "vgg16_bn",
      [](const OptionMap& o) -> Module { return vgg16_bn(with_dropout<VGGOptions>(o)).ptr(); });
  add("vgg19", "VGG-19; seed 001's comparison", "vgg19",
      [](const OptionMap& o) -> Module { return vgg19(with_dropout<VGGOptions>(o)).ptr(); });
  add("vgg19_bn", "VGG-19 with BatchNorm", "vgg19_bn",
      [](const OptionMap& o) -> Module { return vgg19_bn(with_dropout<VGGOptions>(o)).ptr(); });
  add("mobilenet_v2", "MobileNetV2; DSNet Table 2 (± DS)", "mobilenet_v2", [](const OptionMap& o) -> Module {
    auto d = with_dropout<MobileNetOptions>(o);
    return mobilenet_v2(d.width_mult(o.get_double("width_mult", d.width_mult()))).ptr();
  });
  add("mobilenet_v3_large", "MobileNetV3-Large; DSNet Table 2 (± DS)", "mobilenet_v3_large",
      [](const OptionMap& o) -> Module { return mobilenet_v3_large(with_dropout<MobileNetOptions>(o)).ptr(); });
  add("densenet121", "DenseNet-121; seeds 003 (BMD) and 004 (hip T-score)", "densenet121",
      [](const OptionMap& o) -> Module {
        auto d = common<DenseNetOptions>(o);
        return densenet121(d.drop_rate(o.get_double("drop_rate", d.drop_rate()))).ptr();
      });
  add("inception_v3", "Inception-v3 (auxiliary head optional); seed 001's comparison", "inception_v3",
      [](const OptionMap& o) -> Module {
        auto d = with_dropout<InceptionV3Options>(o);
        d.aux_logits(o.get_bool("aux_logits", d.aux_logits()))
            .transform_input(o.get_bool("transform_input", d.transform_input()));
        return inception_v3(d).ptr();
      });
  add("dxa_cnn21", "21-layer plain CNN for spine DXA (seed 001; layers documented in dxa_cnn.hpp)", "",
      [](const OptionMap& o) -> Module { return dxa_cnn21(with_dropout<DxaCnnOptions>(o)).ptr(); });
  return true;
}();

}  // namespace osteonet::backbones::detail_registry
