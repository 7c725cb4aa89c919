// Segmentation umbrella: U-Net / U-Net++, losses, sliding-window inference, region matting, and the
// registry of segmentation models by name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "osteonet/core/options.hpp"
#include "osteonet/segmentation/losses.hpp"
#include "osteonet/segmentation/matting.hpp"
#include "osteonet/segmentation/sliding_window.hpp"
#include "osteonet/segmentation/unet.hpp"

namespace osteonet::segmentation {

inline std::vector<std::string> list_segmenters() { return {"unet", "unet_plusplus"}; }

/// Builds "unet" (keywords: encoder, base_channels, depth) or "unet_plusplus" (base_channels,
/// depth, deep_supervision, fast_inference); unknown names or keywords raise ValueError.
inline std::shared_ptr<SegmenterImpl> create_segmenter(const std::string& name, int64_t in_chans, int64_t num_classes,
                                                       const OptionMap& kw = {}) {
  std::shared_ptr<SegmenterImpl> out;
  if (name == "unet") {
    out = std::make_shared<UNetImpl>(UNetOptions()
                                         .in_chans(in_chans)
                                         .num_classes(num_classes)
                                         .encoder(kw.get_string("encoder", ""))
                                         .base_channels(kw.get_int("base_channels", 64))
                                         .depth(kw.get_int("depth", 4)));
  } else if (name == "unet_plusplus") {
    const int64_t base = kw.get_int("base_channels", 32), depth = kw.get_int("depth", 4);
    OSTEONET_CHECK(base > 0 && depth >= 1 && depth <= 6, "unet_plusplus: base_channels > 0 and depth in 1..6, got ",
                   base, " and ", depth);
    std::vector<int64_t> ch;
    for (int64_t i = 0; i <= depth; ++i) ch.push_back(base << i);
    out = std::make_shared<UNetPlusPlusImpl>(UNetPlusPlusOptions()
                                                 .in_chans(in_chans)
                                                 .num_classes(num_classes)
                                                 .channels(ch)
                                                 .deep_supervision(kw.get_bool("deep_supervision", false))
                                                 .fast_inference(kw.get_bool("fast_inference", false)));
  } else {
    throw_unknown_name("create_segmenter", "segmentation model", name, list_segmenters());
  }
  kw.check_all_used(name);
  return out;
}

}  // namespace osteonet::segmentation
