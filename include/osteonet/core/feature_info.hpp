// Feature-map description: what each backbone stage returns (name, channels, stride).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace osteonet {

/// One feature map a backbone exposes to detectors and U-Nets.
struct FeatureInfo {
  std::string name;      ///< stage name, e.g. "layer3" (torchvision's module name where one exists)
  int64_t channels = 0;  ///< channels of the map
  int64_t stride = 1;    ///< input pixels per feature-map pixel
};

using FeatureInfoList = std::vector<FeatureInfo>;

}  // namespace osteonet
