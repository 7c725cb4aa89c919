// The training loop for C++ users: epochs over any batch range, clipping, schedules, evaluation every N
// epochs, early stopping, frozen BatchNorm, CSV/JSONL logs and atomic checkpoints that resume exactly.
// Python's osteonet.train.Trainer runs the same loop over torch.optim with these schedules, this early
// stopping and this checkpoint format (docs/training.md).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/train/checkpoint.hpp"
#include "osteonet/train/optim.hpp"
#include "osteonet/train/schedule.hpp"

namespace osteonet::train {

/// Stops training when a monitored metric has not improved by more than `min_delta` for `patience`
/// evaluations (patience 0: never stops).
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

/// Puts every BatchNorm of `m` in eval mode (running statistics fixed) and stops its affine
/// parameters' gradients. Called after each model.train(), since train() would undo the mode.
inline int64_t freeze_batchnorm(torch::nn::Module& m) {
  int64_t n = 0;
  for (auto& sub : m.modules(/*include_self=*/true)) {
    if (dynamic_cast<torch::nn::BatchNorm1dImpl*>(sub.get()) || dynamic_cast<torch::nn::BatchNorm2dImpl*>(sub.get()) ||
        dynamic_cast<torch::nn::BatchNorm3dImpl*>(sub.get())) {
      sub->eval();
      for (auto& p : sub->parameters(false)) p.requires_grad_(false);
      ++n;
    }
  }
  return n;
}

/// Trainer settings (every field has a default; `out_dir` empty writes nothing).
struct TrainerOptions {
  /// Epochs to train in total (a resumed run continues up to this many).
  TORCH_ARG(int64_t, epochs) = 10;
  /// Evaluate after every N-th epoch (and after the last).
  TORCH_ARG(int64_t, eval_every) = 1;
  /// Clip the gradients' global L2 norm to this value (0: no clipping).
  TORCH_ARG(double, clip_grad_norm) = 0.0;
  /// The value early stopping and the plateau schedule watch: "train_loss" or an evaluation metric's name.
  TORCH_ARG(std::string, monitor) = "train_loss";
  /// "min" (losses) or "max" (accuracy, mAP).
  TORCH_ARG(std::string, mode) = "min";
  /// Stop after this many evaluations without improvement (0: never).
  TORCH_ARG(int64_t, patience) = 0;
  /// The improvement early stopping requires.
  TORCH_ARG(double, min_delta) = 0.0;
  /// Folder for log.csv, log.jsonl, last.pt (and best.pt); created if missing.
  TORCH_ARG(std::string, out_dir) = "";
  /// Keep BatchNorm in eval mode with frozen affine parameters (fine-tuning with small batches).
  TORCH_ARG(bool, freeze_bn) = false;
  /// Seed torch's CPU generator before training (negative: leave it).
  TORCH_ARG(int64_t, seed) = 0;
  /// Print a progress line per batch and a summary per epoch to stderr.
  TORCH_ARG(bool, progress) = true;
};

/// A generic loop: `fit(loader, step, eval)` with `loader` any range of batches (e.g. `*torch::data::
/// make_data_loader(...)`), `step(batch) -> loss` (a scalar tensor with a graph) and `eval(epoch) ->
/// {metric: value}` (may be empty). The optimiser and schedule are the caller's; the trainer sets the
/// schedule's rates on the optimiser at the start of each epoch.
class Trainer {
 public:
  Trainer(TrainerOptions options, std::shared_ptr<torch::nn::Module> model, torch::optim::Optimizer& optimizer,
          std::shared_ptr<Schedule> schedule = nullptr)
      : o_(std::move(options)), model_(std::move(model)), opt_(optimizer), schedule_(std::move(schedule)),
        stopper_(o_.patience(), o_.mode(), o_.min_delta()) {
    OSTEONET_CHECK(model_ != nullptr, "Trainer: model is null");
    OSTEONET_CHECK(o_.epochs() >= 0, "Trainer: epochs must be >= 0, got epochs=", o_.epochs());
    OSTEONET_CHECK(o_.eval_every() > 0, "Trainer: eval_every must be > 0, got eval_every=", o_.eval_every());
    OSTEONET_CHECK(o_.clip_grad_norm() >= 0, "Trainer: clip_grad_norm must be >= 0, got clip_grad_norm=", o_.clip_grad_norm());
    if (!schedule_) schedule_ = std::make_shared<ConstantSchedule>();
    schedule_->attach(get_lrs(opt_));
    if (o_.seed() >= 0) torch::manual_seed(static_cast<uint64_t>(o_.seed()));
    if (!o_.out_dir().empty()) ::mkdir(o_.out_dir().c_str(), 0755);
  }

  /// Continues from a checkpoint (model, optimiser, schedule, epoch, RNG, early stopping, log).
  void resume(const std::string& path) {
    auto info = load_checkpoint(path, model_.get(), &opt_, schedule_.get());
    epoch_ = info.epoch;
    if (info.extra.count("early_stopping.best")) stopper_.load_state_dict(info.extra);
    history_ = std::move(info.history);
  }

  /// Epochs completed.
  int64_t epoch() const { return epoch_; }
  const std::vector<EpochLog>& history() const { return history_; }
  const EarlyStopping& early_stopping() const { return stopper_; }
  bool stopped_early() const { return stopped_early_; }

  template <class Loader, class StepFn>
  const std::vector<EpochLog>& fit(Loader&& loader, StepFn&& step,
                                   const std::function<std::map<std::string, double>(int64_t)>& eval = nullptr) {
    while (epoch_ < o_.epochs() && !stopped_early_) {
      const auto t0 = std::chrono::steady_clock::now();
      set_lrs(opt_, schedule_->lrs());
      model_->train();
      if (o_.freeze_bn()) freeze_batchnorm(*model_);
      double total = 0.0;
      int64_t n = 0;
      for (auto&& batch : loader) {
        opt_.zero_grad();
        torch::Tensor loss = step(batch);
        OSTEONET_CHECK(loss.numel() == 1, "Trainer: step must return a scalar loss, got shape ", loss.sizes());
        const double v = loss.item<double>();
        OSTEONET_CHECK(std::isfinite(v), "Trainer: the loss is not finite at epoch ", epoch_ + 1, " batch ", n + 1, ", got loss=", v);
        loss.backward();
        if (o_.clip_grad_norm() > 0) torch::nn::utils::clip_grad_norm_(model_->parameters(), o_.clip_grad_norm());
        opt_.step();
        total += v;
        ++n;
        if (o_.progress()) std::fprintf(stderr, "\repoch %lld/%lld  batch %lld  loss %.4f", (long long)epoch_ + 1,
                                        (long long)o_.epochs(), (long long)n, total / n);
      }
      OSTEONET_CHECK(n > 0, "Trainer: the loader gave no batch in epoch ", epoch_ + 1);
      ++epoch_;
      EpochLog rec{{"epoch", double(epoch_)}, {"train_loss", total / n}, {"lr", opt_.param_groups()[0].options().get_lr()}};
      if (eval && (epoch_ % o_.eval_every() == 0 || epoch_ == o_.epochs())) {
        model_->eval();
        torch::NoGradGuard no_grad;
        for (const auto& kv : eval(epoch_)) rec[kv.first] = kv.second;
      }
      const double monitored = rec.count(o_.monitor()) ? rec.at(o_.monitor()) : std::numeric_limits<double>::quiet_NaN();
      bool improved = false;
      if (std::isfinite(monitored)) {
        improved = stopper_.update(monitored);
        stopped_early_ = stopper_.should_stop();
      }
      schedule_->step(monitored);
      rec["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      history_.push_back(rec);
      if (o_.progress()) std::fprintf(stderr, "\r%s\n", summary(rec).c_str());
      write_logs(rec);
      if (!o_.out_dir().empty()) {
        save_checkpoint(o_.out_dir() + "/last.pt", *model_, &opt_, schedule_.get(), epoch_, stopper_.state_dict(), history_);
        if (improved) save_checkpoint(o_.out_dir() + "/best.pt", *model_, &opt_, schedule_.get(), epoch_, stopper_.state_dict(), history_);
      }
    }
    return history_;
  }

 private:
  static std::string summary(const EpochLog& r) {
    std::ostringstream os;
    os << "epoch " << static_cast<int64_t>(r.at("epoch"));
    for (const auto& kv : r)
      if (kv.first != "epoch") os << "  " << kv.first << " " << std::setprecision(6) << kv.second;
    return os.str();
  }

  void write_logs(const EpochLog& rec) {
    if (o_.out_dir().empty()) return;
    {  // one JSON object per epoch, appended and flushed
      std::ofstream js(o_.out_dir() + "/log.jsonl", std::ios::app);
      js << "{";
      bool first = true;
      for (const auto& kv : rec) {
        js << (first ? "" : ", ") << '"' << kv.first << "\": ";
        if (std::isfinite(kv.second)) js << std::setprecision(17) << kv.second; else js << "null";
        first = false;
      }
      js << "}\n";
      js.flush();
    }
    // The CSV is rewritten whole (atomically) so that its columns cover metrics evaluated later too.
    std::set<std::string> cols;
    for (const auto& r : history_)
      for (const auto& kv : r) cols.insert(kv.first);
    std::vector<std::string> order{"epoch", "train_loss", "lr"};
    for (const auto& c : cols)
      if (c != "epoch" && c != "train_loss" && c != "lr" && c != "seconds") order.push_back(c);
    order.push_back("seconds");
    std::ostringstream csv;
    for (std::size_t i = 0; i < order.size(); ++i) csv << (i ? "," : "") << order[i];
    csv << "\n" << std::setprecision(17);
    for (const auto& r : history_) {
      for (std::size_t i = 0; i < order.size(); ++i) {
        if (i) csv << ",";
        auto it = r.find(order[i]);
        if (it != r.end()) csv << it->second;
      }
      csv << "\n";
    }
    atomic_write(o_.out_dir() + "/log.csv", csv.str());
  }

  TrainerOptions o_;
  std::shared_ptr<torch::nn::Module> model_;
  torch::optim::Optimizer& opt_;
  std::shared_ptr<Schedule> schedule_;
  EarlyStopping stopper_;
  std::vector<EpochLog> history_;
  int64_t epoch_ = 0;
  bool stopped_early_ = false;
};

}  // namespace osteonet::train
