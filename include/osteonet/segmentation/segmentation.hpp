// Segmentation umbrella: U-Net / U-Net++, losses, sliding-window inference, region matting, and the
// registry of segmentation models by name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "osteonet/core/model_registry.hpp"
#include "osteonet/core/options.hpp"
#include "osteonet/segmentation/losses.hpp"
#include "osteonet/segmentation/matting.hpp"
#include "osteonet/segmentation/sliding_window.hpp"
#include "osteonet/segmentation/unet.hpp"

namespace osteonet::segmentation {

namespace detail_registry {
inline const bool registered = [] {
  using Module = std::shared_ptr<torch::nn::Module>;
  core::models().add(
      {"unet", "segmenter", "U-Net (Ronneberger et al., 2015), classic or with any registered backbone as encoder", "",
       [](const OptionMap& o) -> Module {
         UNetOptions d;
         return UNet(d.in_chans(o.get_int("in_chans", d.in_chans()))
                         .num_classes(o.get_int("num_classes", d.num_classes()))
                         .encoder(o.get_string("encoder", d.encoder()))
                         .base_channels(o.get_int("base_channels", d.base_channels()))
                         .depth(o.get_int("depth", d.depth())))
             .ptr();
       }});
  core::models().add(
      {"unet_plusplus", "segmenter", "U-Net++ (Zhou et al., 2018): nested skip paths, optional deep supervision", "",
       [](const OptionMap& o) -> Module {
         UNetPlusPlusOptions d;
         const int64_t base = o.get_int("base_channels", d.channels().front());
         const int64_t depth = o.get_int("depth", static_cast<int64_t>(d.channels().size()) - 1);
         OSTEONET_CHECK(base > 0 && depth >= 1 && depth <= 6,
                        "unet_plusplus: base_channels > 0 and depth in 1..6, got base_channels=", base, " depth=", depth);
         std::vector<int64_t> ch;
         for (int64_t i = 0; i <= depth; ++i) ch.push_back(base << i);
         return UNetPlusPlus(d.in_chans(o.get_int("in_chans", d.in_chans()))
                                 .num_classes(o.get_int("num_classes", d.num_classes()))
                                 .channels(ch)
                                 .deep_supervision(o.get_bool("deep_supervision", d.deep_supervision()))
                                 .fast_inference(o.get_bool("fast_inference", d.fast_inference())))
             .ptr();
       }});
  return true;
}();
}  // namespace detail_registry

inline std::vector<std::string> list_segmenters() { return core::models().names("segmenter"); }

/// Builds "unet" (keywords: in_chans, num_classes, encoder, base_channels, depth) or "unet_plusplus"
/// (in_chans, num_classes, base_channels, depth, deep_supervision, fast_inference); unknown names
/// or keywords raise ValueError.
inline std::shared_ptr<SegmenterImpl> create_segmenter(const std::string& name, const OptionMap& kw = {}) {
  core::models().at(name, "segmenter");
  return core::create<SegmenterImpl>(name, kw);
}

}  // namespace osteonet::segmentation
