// The registry: everything osteonet builds by name (models of every family, attention, schedules,
// optimisers) is an entry with a description and a builder that reads keyword options. One
// implementation of the lookup ("did you mean"), the unused-option check and the option listing, so
// defaults live only in the Options structs the builders read them from.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/core/options.hpp"

namespace osteonet::core {

/// Entries that build a `Product` from keyword options (and `Args`, e.g. an optimiser's parameters).
///
/// Families register themselves where they are defined (a header's inline variable), so a C++ user
/// gets exactly the families whose headers they include; `osteonet/osteonet.hpp` includes them all.
///
/// Example:
/// ```
/// auto net = core::models().create("resnet50", OptionMap({{"num_classes", int64_t(3)}}));
/// ```
template <typename Product, typename... Args>
class Registry {
 public:
  using Builder = std::function<Product(const OptionMap&, Args...)>;

  struct Entry {
    std::string name;
    /// What kind of thing it builds ("backbone", "detector", "segmenter", "aggregator", "attention", ...).
    std::string family;
    std::string description;
    /// The reference implementation of the same thing (e.g. torchvision's builder), "" if none.
    std::string reference;
    Builder build;
  };

  /// `what` names the product in messages ("model", "schedule", ...).
  explicit Registry(std::string what) : what_(std::move(what)) {}

  /// Adds an entry; a second entry of the same name is a programming error (ValueError).
  void add(Entry entry) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : entries_)
      OSTEONET_CHECK(e.name != entry.name, what_, " registry: '", entry.name, "' is registered twice");
    entries_.push_back(std::move(entry));
  }

  /// Registers an entry (for inline-variable registration in headers); always true.
  bool enroll(Entry entry) {
    add(std::move(entry));
    return true;
  }

  bool contains(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : entries_)
      if (e.name == name) return true;
    return false;
  }

  /// The entry called `name`; unknown names raise ValueError with the nearest valid one.
  const Entry& at(const std::string& name, const std::string& family = "") const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& e : entries_)
        if (e.name == name && (family.empty() || e.family == family)) return e;
    }
    throw_unknown_name("create_" + (family.empty() ? what_ : family), family.empty() ? what_ : family, name,
                       names(family));
  }

  /// Names in registration order, all of them or one family's.
  std::vector<std::string> names(const std::string& family = "") const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& e : entries_)
      if (family.empty() || e.family == family) out.push_back(e.name);
    return out;
  }

  /// Every entry (a copy, safe to iterate while other threads register).
  std::vector<Entry> entries() const {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_;
  }

  /// Builds `name`; options no builder read raise ValueError ("did you mean ...").
  Product create(const std::string& name, const OptionMap& options, Args... args) const {
    const Entry& e = at(name);
    Product p = e.build(options, std::forward<Args>(args)...);
    options.check_all_used(name);
    return p;
  }

  /// The options `name` reads and their defaults, in reading order: the builder runs once on no
  /// options (a builder that needs a required option may stop early; what it read is listed).
  std::vector<std::pair<std::string, OptionValue>> option_defaults(const std::string& name, Args... args) const {
    const Entry& e = at(name);
    OptionMap probe;
    try {
      e.build(probe, std::forward<Args>(args)...);
    } catch (const std::invalid_argument&) {  // osteonet's ValueError/TypeError: a required option
    }
    return probe.defaults();
  }

 private:
  std::string what_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

}  // namespace osteonet::core
