// The model registry: every backbone by name, built from a run-time configuration (the C++ twin of
// timm's create_model). Named variants are registry entries, not new classes.
#pragma once

#include <functional>
#include <memory>
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
#include "osteonet/core/options.hpp"
#include "osteonet/sequence/slice_encoder.hpp"

namespace osteonet::models {

/// What create_model builds: the common arguments plus keyword options by name.
struct ModelConfig {
  int64_t num_classes = 1000;
  int64_t in_chans = 3;
  /// "none", "se", "eca", "sk" or "ds"; its options come as "attn_<field>" keywords.
  std::string attention = "none";
  /// Model-specific keywords (e.g. aux_logits, dropout, attention_placement, attn_reduction).
  OptionMap options;
};

using BackbonePtr = std::shared_ptr<backbones::BackboneImpl>;

/// One registered model.
struct ModelEntry {
  std::string name;
  std::string description;
  /// torchvision's builder of the same architecture ("" where torchvision has none).
  std::string torchvision;
  std::function<BackbonePtr(const ModelConfig&)> build;
};

namespace detail_registry {

template <typename Options>
Options common(const ModelConfig& c) {
  Options o;
  o.num_classes(c.num_classes).in_chans(c.in_chans).attention(attention::attention_options(c.attention, c.options));
  return o;
}

inline backbones::ResNetOptions resnet_options(const ModelConfig& c) {
  auto o = common<backbones::ResNetOptions>(c);
  o.placement(backbones::parse_placement(c.options.get_string("attention_placement", "blocks")))
      .zero_init_residual(c.options.get_bool("zero_init_residual", false))
      .frozen_bn(c.options.get_bool("frozen_bn", false));
  return o;
}

template <typename Options>
Options with_dropout(const ModelConfig& c, double def) {
  auto o = common<Options>(c);
  o.dropout(c.options.get_double("dropout", def));
  return o;
}

}  // namespace detail_registry

/// All registered models, in a stable order.
inline const std::vector<ModelEntry>& model_entries() {
  using namespace backbones;
  using detail_registry::common;
  using detail_registry::resnet_options;
  using detail_registry::with_dropout;
  static const std::vector<ModelEntry> entries{
      {"resnet18", "ResNet-18 (attention in blocks or dsnet placement)", "resnet18",
       [](const ModelConfig& c) -> BackbonePtr { return resnet18(resnet_options(c)).ptr(); }},
      {"resnet34", "ResNet-34; the slice encoder of seed 002", "resnet34",
       [](const ModelConfig& c) -> BackbonePtr { return resnet34(resnet_options(c)).ptr(); }},
      {"resnet50", "ResNet-50; DSNet Table 1 with none/se/sk/ds", "resnet50",
       [](const ModelConfig& c) -> BackbonePtr { return resnet50(resnet_options(c)).ptr(); }},
      {"resnet101", "ResNet-101", "resnet101",
       [](const ModelConfig& c) -> BackbonePtr { return resnet101(resnet_options(c)).ptr(); }},
      {"dsnet_resnet50", "DSNet backbone (seed 000 Fig. 3): ResNet-50 + DS after the stem and the last stage", "",
       [](const ModelConfig& c) -> BackbonePtr {
         OSTEONET_CHECK(c.attention == "none" || c.attention == "ds",
                        "dsnet_resnet50: the DSNet backbone carries DS attention, got attention='", c.attention, "'");
         auto o = resnet_options(c);  // reads the options on `c` itself, so unread ones are reported
         o.attention(attention::attention_options("ds", c.options)).placement(AttentionPlacement::kDSNet);
         return ResNetBottleneck(o, "dsnet_resnet50").ptr();
       }},
      {"vgg16", "VGG-16; DSNet Table 2 (± DS)", "vgg16",
       [](const ModelConfig& c) -> BackbonePtr { return vgg16(with_dropout<VGGOptions>(c, 0.5)).ptr(); }},
      {"vgg16_bn", "VGG-16 with BatchNorm", "vgg16_bn",
       [](const ModelConfig& c) -> BackbonePtr { return vgg16_bn(with_dropout<VGGOptions>(c, 0.5)).ptr(); }},
      {"vgg19", "VGG-19; seed 001's comparison", "vgg19",
       [](const ModelConfig& c) -> BackbonePtr { return vgg19(with_dropout<VGGOptions>(c, 0.5)).ptr(); }},
      {"vgg19_bn", "VGG-19 with BatchNorm", "vgg19_bn",
       [](const ModelConfig& c) -> BackbonePtr { return vgg19_bn(with_dropout<VGGOptions>(c, 0.5)).ptr(); }},
      {"mobilenet_v2", "MobileNetV2; DSNet Table 2 (± DS)", "mobilenet_v2",
       [](const ModelConfig& c) -> BackbonePtr {
         auto o = with_dropout<MobileNetOptions>(c, 0.2);
         return mobilenet_v2(o.width_mult(c.options.get_double("width_mult", 1.0))).ptr();
       }},
      {"mobilenet_v3_large", "MobileNetV3-Large; DSNet Table 2 (± DS)", "mobilenet_v3_large",
       [](const ModelConfig& c) -> BackbonePtr { return mobilenet_v3_large(with_dropout<MobileNetOptions>(c, 0.2)).ptr(); }},
      {"densenet121", "DenseNet-121; seeds 003 (BMD) and 004 (hip T-score)", "densenet121",
       [](const ModelConfig& c) -> BackbonePtr {
         auto o = common<DenseNetOptions>(c);
         return densenet121(o.drop_rate(c.options.get_double("drop_rate", 0.0))).ptr();
       }},
      {"inception_v3", "Inception-v3 (auxiliary head optional); seed 001's comparison", "inception_v3",
       [](const ModelConfig& c) -> BackbonePtr {
         auto o = with_dropout<InceptionV3Options>(c, 0.5);
         o.aux_logits(c.options.get_bool("aux_logits", true)).transform_input(c.options.get_bool("transform_input", false));
         return inception_v3(o).ptr();
       }},
      {"ovf_resnet34", "Seed 002's slice encoder: ResNet-34 + FC 512->32 (BN, ReLU) + FC 32->1 (sequence/slice_encoder.hpp)", "",
       [](const ModelConfig& c) -> BackbonePtr {
         return sequence::OvfResNet34(sequence::OvfResNet34Options()
                                          .num_classes(c.num_classes)
                                          .in_chans(c.in_chans)
                                          .attention(attention::attention_options(c.attention, c.options))
                                          .embed_dim(c.options.get_int("embed_dim", 32)))
             .ptr();
       }},
      {"dxa_cnn21", "21-layer plain CNN for spine DXA (seed 001; layers documented in dxa_cnn.hpp)", "",
       [](const ModelConfig& c) -> BackbonePtr { return dxa_cnn21(with_dropout<DxaCnnOptions>(c, 0.5)).ptr(); }},
  };
  return entries;
}

inline std::vector<std::string> list_models() {
  std::vector<std::string> names;
  for (const auto& e : model_entries()) names.push_back(e.name);
  return names;
}

inline const ModelEntry& model_entry(const std::string& name) {
  for (const auto& e : model_entries())
    if (e.name == name) return e;
  throw_unknown_name("create_model", "model", name, list_models());
}

/// Builds `name`; unknown names and options raise ValueError with the nearest valid name.
inline BackbonePtr create_model(const std::string& name, const ModelConfig& config = {}) {
  const auto& entry = model_entry(name);
  auto model = entry.build(config);
  config.options.check_all_used(name);
  return model;
}

}  // namespace osteonet::models
