// The model registry: every module osteonet builds by name (backbones, detectors, segmenters,
// aggregators, attention modules), each family registering itself in its own header.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "osteonet/core/registry.hpp"

namespace osteonet::core {

using ModuleRegistry = Registry<std::shared_ptr<torch::nn::Module>>;

/// The process's model registry.
inline ModuleRegistry& models() {
  static ModuleRegistry registry("model");
  return registry;
}

/// Builds `name` and returns it as the family interface `T` (e.g. backbones::BackboneImpl); a model
/// of another family is a TypeError naming both.
template <typename T>
std::shared_ptr<T> create(const std::string& name, const OptionMap& options = {}) {
  auto module = models().create(name, options);
  auto typed = std::dynamic_pointer_cast<T>(module);
  OSTEONET_CHECK_TYPE(typed != nullptr, "create: '", name, "' is a ", models().at(name).family,
                      ", which does not provide the interface asked for");
  return typed;
}

}  // namespace osteonet::core
