// Model options by name: the run-time configuration the registry and the Python API pass around.
#pragma once

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
    if (auto* i = std::get_if<int64_t>(&it->second)) return *i;
    throw TypeError(detail::str_cat("option '", key, "': expected an int, got ", type_name(it->second)));
  }
  double get_double(const std::string& key, double def) const {
    auto it = find(key, def);
    if (it == values_.end()) return def;
    if (auto* d = std::get_if<double>(&it->second)) return *d;
    if (auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
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
