// osteonet version numbers.
#pragma once

#define OSTEONET_VERSION_MAJOR 0
#define OSTEONET_VERSION_MINOR 1
#define OSTEONET_VERSION_PATCH 0

namespace osteonet {
inline constexpr const char* version() { return "0.1.0"; }
}  // namespace osteonet
