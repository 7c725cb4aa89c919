// Model options by name: the run-time configuration the registry and the Python API pass around.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet {

/// A keyword option value (bool, integer, float or string), as Python passes it.
using OptionValue = std::variant<bool, int64_t, double, std::string>;

/// The documented range of a numeric option (docs/reliability.md lists them).
struct OptionBound {
  double lo, hi;
  bool lo_open = false, hi_open = false;
};

/// The bounds of the size and probability options every builder shares, by keyword: a value outside
/// is refused before anything is allocated (width_mult=1e6 would ask for gigabytes).
inline const std::map<std::string, OptionBound>& option_bounds() {
  static const std::map<std::string, OptionBound> bounds = [] {
    std::map<std::string, OptionBound> b = {
        {"num_classes", {0, 100000}},     {"in_chans", {1, 1024}},        {"width_mult", {0, 4, true, false}},
        {"dropout", {0, 1, false, true}}, {"drop_rate", {0, 1, false, true}},
        {"base_channels", {1, 1024}},     {"depth", {1, 8}},              {"embed_dim", {1, 65536}},
        {"input_size", {1, 65536}},       {"hidden_size", {1, 65536}},    {"num_layers", {1, 64}},
        {"channels", {1, 65536}},         {"out_channels", {0, 65536}},   {"stride", {1, 8}},
        {"min_size", {1, 4096}},          {"max_size", {1, 8192}},        {"fpn_channels", {1, 4096}},
        {"representation_size", {1, 65536}}, {"box_detections_per_img", {1, 100000}}};
    for (const std::string prefix : {"", "attn_"}) {  // attention options, alone or inside a backbone's
      b[prefix + "reduction"] = {1, 1024};
      b[prefix + "groups"] = {1, 1024};
      b[prefix + "min_channels"] = {1, 65536};
      b[prefix + "kernel_size"] = {1, 31};
      b[prefix + "fuse_dilation"] = {1, 16};
    }
    for (const char* k : {"rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
                          "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image"})
      b[k] = {1, 100000};
    for (const char* k : {"rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_positive_fraction",
                          "rpn_score_thresh", "box_fg_iou_thresh", "box_bg_iou_thresh", "box_positive_fraction",
                          "box_score_thresh", "box_nms_thresh"})
      b[k] = {0, 1};
    return b;
  }();
  return bounds;
}

namespace detail {
inline std::string format_bound(const OptionBound& b) {
  return str_cat(b.lo_open ? "(" : "[", b.lo, ", ", b.hi, b.hi_open ? ")" : "]");
}
/// Throws ValueError "option '<key>' must be in [lo, hi], got <key>=<v>" for a value outside option_bounds().
inline void check_option_bound(const std::string& key, double v) {
  const auto& bounds = option_bounds();
  const auto it = bounds.find(key);
  if (it == bounds.end()) return;
  const auto& b = it->second;
  const bool ok = std::isfinite(v) && (b.lo_open ? v > b.lo : v >= b.lo) && (b.hi_open ? v < b.hi : v <= b.hi);
  OSTEONET_CHECK(ok, "option '", key, "' must be in ", format_bound(b), ", got ", key, "=", v);
}
}  // namespace detail

/// Keyword options with typed, checked access. Every read is recorded so that options nobody
/// read can be reported as unknown ("did you mean ...").
class OptionMap {
 public:
  OptionMap() = default;
  OptionMap(std::map<std::string, OptionValue> values) : values_(std::move(values)) {}  // NOLINT

  void set(const std::string& key, OptionValue v) { values_[key] = std::move(v); }
  bool has(const std::string& key) const { return values_.count(key) != 0; }

  bool get_bool(const std::string& key, bool def) const {
    auto it = find(key, def);
    if (it == values_.end()) return def;
    if (auto* b = std::get_if<bool>(&it->second)) return *b;
    throw TypeError(detail::str_cat("option '", key, "': expected a bool, got ", type_name(it->second)));
  }
  int64_t get_int(const std::string& key, int64_t def) const {
    auto it = find(key, def);
    if (it == values_.end()) return def;
    if (auto* i = std::get_if<int64_t>(&it->second)) {
      detail::check_option_bound(key, static_cast<double>(*i));
      return *i;
    }
    throw TypeError(detail::str_cat("option '", key, "': expected an int, got ", type_name(it->second)));
  }
  double get_double(const std::string& key, double def) const {
    auto it = find(key, def);
    if (it == values_.end()) return def;
    const double* d = std::get_if<double>(&it->second);
    const int64_t* i = std::get_if<int64_t>(&it->second);
    if (d != nullptr || i != nullptr) {
      const double v = d != nullptr ? *d : static_cast<double>(*i);
      detail::check_option_bound(key, v);
      return v;
    }
    throw TypeError(detail::str_cat("option '", key, "': expected a float, got ", type_name(it->second)));
  }
  std::string get_string(const std::string& key, const std::string& def) const {
    auto it = find(key, def);
    if (it == values_.end()) return def;
    if (auto* s = std::get_if<std::string>(&it->second)) return *s;
    throw TypeError(detail::str_cat("option '", key, "': expected a string, got ", type_name(it->second)));
  }

  /// The options read so far with the default each reader gave, in first-read order: what a builder
  /// accepts, with its defaults (core::Registry::option_defaults).
  const std::vector<std::pair<std::string, OptionValue>>& defaults() const { return defaults_; }

  /// Counts what `other` (a copy of this map handed to another reader) read as read here too.
  void record_reads_of(const OptionMap& other) const {
    for (const auto& kv : other.defaults_) {
      if (std::find(used_.begin(), used_.end(), kv.first) != used_.end()) continue;
      used_.push_back(kv.first);
      defaults_.push_back(kv);
    }
  }

  /// Throws ValueError naming the first option that no builder read.
  void check_all_used(const std::string& where) const {
    std::vector<std::string> known(used_.begin(), used_.end());
    for (const auto& kv : values_) {
      if (std::find(used_.begin(), used_.end(), kv.first) == used_.end())
        throw_unknown_name(where, "option", kv.first, known);
    }
  }

 private:
  std::map<std::string, OptionValue>::const_iterator find(const std::string& key, OptionValue def) const {
    if (std::find(used_.begin(), used_.end(), key) == used_.end()) {
      used_.push_back(key);
      defaults_.emplace_back(key, std::move(def));
    }
    return values_.find(key);
  }
  static std::string type_name(const OptionValue& v) {
    switch (v.index()) {
      case 0: return "bool";
      case 1: return "int";
      case 2: return "float";
      default: return "str";
    }
  }
  std::map<std::string, OptionValue> values_;
  mutable std::vector<std::string> used_;
  mutable std::vector<std::pair<std::string, OptionValue>> defaults_;
};

}  // namespace osteonet
