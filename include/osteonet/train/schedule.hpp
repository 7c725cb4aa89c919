// Learning-rate schedules (step, halving on plateau as seed 002 trains, cosine, linear warm-up) with state for checkpoints.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/core/options.hpp"
#include "osteonet/core/registry.hpp"

namespace osteonet::train {

/// A schedule's state: plain numbers by name (what a checkpoint stores and Python sees as a dict).
using ScheduleState = std::map<std::string, double>;

/// A learning-rate schedule stepped once per epoch. `attach(base_lrs)` starts it at epoch 0 with one
/// rate per parameter group; `step(metric)` ends an epoch; `lrs()` are the rates for the next one.
/// The closed forms equal torch.optim.lr_scheduler's (StepLR, CosineAnnealingLR, ReduceLROnPlateau;
/// warm-up as ChainedScheduler(LinearLR, inner)), so the C++ and Python trainers train alike.
class Schedule {
 public:
  virtual ~Schedule() = default;

  /// Starts the schedule at epoch 0 for parameter groups with these base rates.
  virtual void attach(std::vector<double> base_lrs) {
    OSTEONET_CHECK(!base_lrs.empty(), name(), ": attach needs at least one parameter group, got 0");
    for (double lr : base_lrs) OSTEONET_CHECK(std::isfinite(lr) && lr >= 0, name(), ": base rates must be finite and >= 0, got lr=", lr);
    base_ = std::move(base_lrs);
    epoch_ = 0;
    lrs_ = base_;
    recompute(std::numeric_limits<double>::quiet_NaN());
  }
  /// Ends an epoch; `metric` is the monitored value (needed by the plateau schedule only).
  virtual void step(double metric = std::numeric_limits<double>::quiet_NaN()) {
    check_attached("step");
    ++epoch_;
    recompute(metric);
  }
  /// Rates for the coming epoch, one per parameter group.
  const std::vector<double>& lrs() const { return lrs_; }
  /// Epochs stepped since attach.
  int64_t epoch() const { return epoch_; }
  virtual std::string name() const = 0;

  /// Everything needed to continue exactly: epoch, base and current rates, subclass counters.
  virtual ScheduleState state_dict() const {
    ScheduleState s;
    s["epoch"] = static_cast<double>(epoch_);
    s["num_groups"] = static_cast<double>(base_.size());
    for (std::size_t i = 0; i < base_.size(); ++i) {
      s["base_lr." + std::to_string(i)] = base_[i];
      s["lr." + std::to_string(i)] = lrs_[i];
    }
    return s;
  }
  virtual void load_state_dict(const ScheduleState& s) {
    const auto n = static_cast<std::size_t>(get(s, "num_groups"));
    epoch_ = static_cast<int64_t>(get(s, "epoch"));
    base_.assign(n, 0.0);
    lrs_.assign(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      base_[i] = get(s, "base_lr." + std::to_string(i));
      lrs_[i] = get(s, "lr." + std::to_string(i));
    }
  }

 protected:
  /// Sets lrs_ for epoch_ (called by attach with metric NaN, and by step).
  virtual void recompute(double metric) = 0;

  double get(const ScheduleState& s, const std::string& key) const {
    auto it = s.find(key);
    OSTEONET_CHECK(it != s.end(), name(), ": schedule state lacks the key '", key, "'");
    return it->second;
  }
  void check_attached(const char* what) const {
    OSTEONET_CHECK(!base_.empty(), name(), ": ", what, " before attach(base_lrs)");
  }

  std::vector<double> base_, lrs_;
  int64_t epoch_ = 0;
};

/// The base rates throughout.
class ConstantSchedule : public Schedule {
 public:
  std::string name() const override { return "constant"; }

 protected:
  void recompute(double) override { lrs_ = base_; }
};

/// lr = base * gamma^(epoch // step_size)  (torch StepLR).
class StepSchedule : public Schedule {
 public:
  StepSchedule(int64_t step_size, double gamma) : step_size_(step_size), gamma_(gamma) {
    OSTEONET_CHECK(step_size > 0, "step schedule: step_size must be > 0, got step_size=", step_size);
    OSTEONET_CHECK(gamma > 0, "step schedule: gamma must be > 0, got gamma=", gamma);
  }
  std::string name() const override { return "step"; }

 protected:
  void recompute(double) override {
    const double f = std::pow(gamma_, static_cast<double>(epoch_ / step_size_));
    for (std::size_t i = 0; i < base_.size(); ++i) lrs_[i] = base_[i] * f;
  }

 private:
  int64_t step_size_;
  double gamma_;
};

/// lr = eta_min + (base - eta_min) (1 + cos(pi * epoch / t_max)) / 2, held at eta_min after t_max
/// (torch CosineAnnealingLR's closed form).
class CosineSchedule : public Schedule {
 public:
  CosineSchedule(int64_t t_max, double eta_min) : t_max_(t_max), eta_min_(eta_min) {
    OSTEONET_CHECK(t_max > 0, "cosine schedule: t_max must be > 0, got t_max=", t_max);
    OSTEONET_CHECK(eta_min >= 0, "cosine schedule: eta_min must be >= 0, got eta_min=", eta_min);
  }
  std::string name() const override { return "cosine"; }

 protected:
  void recompute(double) override {
    const double e = static_cast<double>(std::min(epoch_, t_max_));
    const double c = (1.0 + std::cos(M_PI * e / static_cast<double>(t_max_))) / 2.0;
    for (std::size_t i = 0; i < base_.size(); ++i) lrs_[i] = eta_min_ + (base_[i] - eta_min_) * c;
  }

 private:
  int64_t t_max_;
  double eta_min_;
};

/// Multiplies the rates by `factor` (0.5: halving, as seed 002 trains) when the monitored metric has
/// not improved for more than `patience` epochs (torch ReduceLROnPlateau, relative threshold).
class PlateauSchedule : public Schedule {
 public:
  PlateauSchedule(double factor, int64_t patience, const std::string& mode, double threshold, int64_t cooldown,
                  double min_lr)
      : factor_(factor), patience_(patience), mode_(mode), threshold_(threshold), cooldown_(cooldown), min_lr_(min_lr) {
    OSTEONET_CHECK(factor > 0 && factor < 1, "plateau schedule: factor must be in (0, 1), got factor=", factor);
    OSTEONET_CHECK(patience >= 0, "plateau schedule: patience must be >= 0, got patience=", patience);
    OSTEONET_CHECK(mode == "min" || mode == "max", "plateau schedule: mode must be 'min' or 'max', got mode='", mode, "'");
    OSTEONET_CHECK(threshold >= 0, "plateau schedule: threshold must be >= 0, got threshold=", threshold);
    OSTEONET_CHECK(cooldown >= 0, "plateau schedule: cooldown must be >= 0, got cooldown=", cooldown);
    OSTEONET_CHECK(min_lr >= 0, "plateau schedule: min_lr must be >= 0, got min_lr=", min_lr);
    reset_best();
  }
  std::string name() const override { return "plateau"; }

  void attach(std::vector<double> base_lrs) override {
    reset_best();
    Schedule::attach(std::move(base_lrs));
  }
  /// Whether the last step counted as an improvement (what early stopping on the same metric sees).
  double best() const { return best_; }
  int64_t num_bad_epochs() const { return bad_; }

  ScheduleState state_dict() const override {
    auto s = Schedule::state_dict();
    s["best"] = best_;
    s["num_bad_epochs"] = static_cast<double>(bad_);
    s["cooldown_counter"] = static_cast<double>(cooldown_counter_);
    return s;
  }
  void load_state_dict(const ScheduleState& s) override {
    Schedule::load_state_dict(s);
    best_ = get(s, "best");
    bad_ = static_cast<int64_t>(get(s, "num_bad_epochs"));
    cooldown_counter_ = static_cast<int64_t>(get(s, "cooldown_counter"));
  }

 protected:
  void recompute(double metric) override {
    if (epoch_ == 0) return;  // attach: keep the base rates
    OSTEONET_CHECK(std::isfinite(metric), "plateau schedule: step needs the monitored metric, got metric=", metric);
    if (better(metric)) {
      best_ = metric;
      bad_ = 0;
    } else {
      ++bad_;
    }
    if (cooldown_counter_ > 0) {
      --cooldown_counter_;
      bad_ = 0;
    }
    if (bad_ > patience_) {
      for (auto& lr : lrs_) {
        const double next = std::max(lr * factor_, min_lr_);
        if (lr - next > 1e-8) lr = next;  // torch's eps: changes below 1e-8 are ignored
      }
      cooldown_counter_ = cooldown_;
      bad_ = 0;
    }
  }

 private:
  bool better(double v) const {
    return mode_ == "min" ? v < best_ * (1.0 - threshold_) : v > best_ * (1.0 + threshold_);
  }
  void reset_best() {
    best_ = mode_ == "min" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
    bad_ = 0;
    cooldown_counter_ = 0;
  }

  double factor_;
  int64_t patience_;
  std::string mode_;
  double threshold_;
  int64_t cooldown_;
  double min_lr_;
  double best_ = 0;
  int64_t bad_ = 0, cooldown_counter_ = 0;
};

/// Linear warm-up over `warmup_epochs` from `start_factor` * rate to the rate, multiplied onto an
/// inner schedule (torch ChainedScheduler(LinearLR(start_factor, total_iters=warmup_epochs), inner)).
class WarmupSchedule : public Schedule {
 public:
  WarmupSchedule(std::unique_ptr<Schedule> inner, int64_t warmup_epochs, double start_factor)
      : inner_(std::move(inner)), warmup_(warmup_epochs), start_(start_factor) {
    OSTEONET_CHECK(inner_ != nullptr, "warm-up schedule: inner schedule is null");
    OSTEONET_CHECK(warmup_epochs > 0, "warm-up schedule: warmup_epochs must be > 0, got warmup_epochs=", warmup_epochs);
    OSTEONET_CHECK(start_factor > 0 && start_factor <= 1, "warm-up schedule: start_factor must be in (0, 1], got start_factor=",
                   start_factor);
  }
  std::string name() const override { return "warmup+" + inner_->name(); }
  const Schedule& inner() const { return *inner_; }

  void attach(std::vector<double> base_lrs) override {
    inner_->attach(base_lrs);
    Schedule::attach(std::move(base_lrs));
  }
  void step(double metric = std::numeric_limits<double>::quiet_NaN()) override {
    check_attached("step");
    inner_->step(metric);
    ++epoch_;
    recompute(metric);
  }
  ScheduleState state_dict() const override {
    auto s = Schedule::state_dict();
    for (const auto& kv : inner_->state_dict()) s["inner." + kv.first] = kv.second;
    return s;
  }
  void load_state_dict(const ScheduleState& s) override {
    Schedule::load_state_dict(s);
    ScheduleState in;
    for (const auto& kv : s)
      if (kv.first.rfind("inner.", 0) == 0) in[kv.first.substr(6)] = kv.second;
    inner_->load_state_dict(in);
  }

 protected:
  void recompute(double) override {
    const double t = static_cast<double>(std::min(epoch_, warmup_)) / static_cast<double>(warmup_);
    const double f = start_ + (1.0 - start_) * t;
    for (std::size_t i = 0; i < base_.size(); ++i) lrs_[i] = inner_->lrs()[i] * f;
  }

 private:
  std::unique_ptr<Schedule> inner_;
  int64_t warmup_;
  double start_;
};

/// Schedules by name (core::Registry): each entry reads its keyword options, defaults from the
/// schedule classes' own constructors' documented values. Any of them takes warmup_epochs > 0 (and
/// warmup_start_factor, default 0.1) to be wrapped in a linear warm-up.
using ScheduleRegistry = core::Registry<std::shared_ptr<Schedule>>;

namespace detail_schedule {
/// Wraps `s` in the warm-up the keyword options ask for.
inline std::shared_ptr<Schedule> with_warmup(std::unique_ptr<Schedule> s, const OptionMap& o) {
  const int64_t warmup = o.get_int("warmup_epochs", 0);
  const double start = o.get_double("warmup_start_factor", 0.1);
  if (warmup > 0) return std::make_shared<WarmupSchedule>(std::move(s), warmup, start);
  OSTEONET_CHECK(warmup == 0, "make_schedule: warmup_epochs must be >= 0, got warmup_epochs=", warmup);
  return std::shared_ptr<Schedule>(std::move(s));
}
}  // namespace detail_schedule

inline ScheduleRegistry& schedules() {
  static ScheduleRegistry registry("schedule");
  static const bool filled = [] {
    auto& r = registry;
    using detail_schedule::with_warmup;
    r.add({"constant", "schedule", "the base rate throughout", "torch.optim.lr_scheduler.ConstantLR(factor=1)",
           [](const OptionMap& o) { return with_warmup(std::make_unique<ConstantSchedule>(), o); }});
    r.add({"step", "schedule", "rate x gamma every step_size epochs (step_size=30, gamma=0.1)",
           "torch.optim.lr_scheduler.StepLR", [](const OptionMap& o) {
             return with_warmup(std::make_unique<StepSchedule>(o.get_int("step_size", 30), o.get_double("gamma", 0.1)), o);
           }});
    r.add({"cosine", "schedule", "cosine annealing to eta_min over t_max epochs (t_max required, eta_min=0)",
           "torch.optim.lr_scheduler.CosineAnnealingLR", [](const OptionMap& o) {
             OSTEONET_CHECK(o.has("t_max"), "make_schedule: cosine needs t_max (epochs of one half-period)");
             return with_warmup(std::make_unique<CosineSchedule>(o.get_int("t_max", 1), o.get_double("eta_min", 0.0)), o);
           }});
    r.add({"plateau", "schedule",
           "rate x factor after `patience` epochs without improvement (factor=0.5, patience=10, mode='min', "
           "threshold=1e-4, cooldown=0, min_lr=0)",
           "torch.optim.lr_scheduler.ReduceLROnPlateau", [](const OptionMap& o) {
             return with_warmup(std::make_unique<PlateauSchedule>(o.get_double("factor", 0.5), o.get_int("patience", 10),
                                                                  o.get_string("mode", "min"), o.get_double("threshold", 1e-4),
                                                                  o.get_int("cooldown", 0), o.get_double("min_lr", 0.0)),
                                o);
           }});
    return true;
  }();
  (void)filled;
  return registry;
}

/// Names make_schedule accepts.
inline std::vector<std::string> schedule_names() { return schedules().names(); }

/// A schedule by name with keyword options (unknown names and keywords are reported with "did you
/// mean"): step(step_size=30, gamma=0.1), cosine(t_max, eta_min=0), plateau(factor=0.5, patience=10,
/// mode="min", threshold=1e-4, cooldown=0, min_lr=0), constant; any of them with warmup_epochs > 0
/// (and warmup_start_factor=0.1) wrapped in a linear warm-up.
inline std::shared_ptr<Schedule> make_schedule(const std::string& name, const OptionMap& o = {}) {
  return schedules().create(name, o);
}

}  // namespace osteonet::train
