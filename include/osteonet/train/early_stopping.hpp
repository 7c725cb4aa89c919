// Early stopping on a monitored value: what the Python trainer (osteonet.train.Trainer, bound) and a
// C++ training loop (examples/cpp/train_classifier.cpp) use to stop and to pick the best epoch.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "osteonet/core/error.hpp"

namespace osteonet::train {

/// Stops training when a monitored metric has not improved by more than `min_delta` for `patience`
/// evaluations (patience 0: never stops). `update` also says whether a value is the best so far.
class EarlyStopping {
 public:
  EarlyStopping(int64_t patience = 0, const std::string& mode = "min", double min_delta = 0.0)
      : patience_(patience), mode_(mode), min_delta_(min_delta) {
    OSTEONET_CHECK(patience >= 0, "EarlyStopping: patience must be >= 0, got patience=", patience);
    OSTEONET_CHECK(mode == "min" || mode == "max", "EarlyStopping: mode must be 'min' or 'max', got mode='", mode, "'");
    OSTEONET_CHECK(min_delta >= 0, "EarlyStopping: min_delta must be >= 0, got min_delta=", min_delta);
    best_ = mode == "min" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  }
  /// Records one value; true when it is the best so far (an improvement by more than min_delta).
  bool update(double value) {
    OSTEONET_CHECK(std::isfinite(value), "EarlyStopping: the monitored metric must be finite, got value=", value);
    const bool better = mode_ == "min" ? value < best_ - min_delta_ : value > best_ + min_delta_;
    if (better) {
      best_ = value;
      bad_ = 0;
    } else {
      ++bad_;
    }
    return better;
  }
  bool should_stop() const { return patience_ > 0 && bad_ >= patience_; }
  double best() const { return best_; }
  int64_t num_bad() const { return bad_; }
  /// The checkpoint's `extra` entries (early_stopping.best, early_stopping.num_bad).
  std::map<std::string, double> state_dict() const { return {{"early_stopping.best", best_}, {"early_stopping.num_bad", double(bad_)}}; }
  void load_state_dict(const std::map<std::string, double>& s) {
    auto b = s.find("early_stopping.best"), n = s.find("early_stopping.num_bad");
    OSTEONET_CHECK(b != s.end() && n != s.end(), "EarlyStopping: state lacks early_stopping.best/num_bad");
    best_ = b->second;
    bad_ = static_cast<int64_t>(n->second);
  }

 private:
  int64_t patience_;
  std::string mode_;
  double min_delta_;
  double best_;
  int64_t bad_ = 0;
};

}  // namespace osteonet::train
