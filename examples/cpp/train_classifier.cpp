// A complete C++ training loop on osteonet's training core: a ResNet-18 (grey input, 2 classes) learns
// a toy image task with AdamW, a cosine schedule with warm-up, gradient clipping, evaluation every
// epoch, early stopping, frozen BatchNorm for a fine-tuning epoch, atomic checkpoints (last.pt,
// best.pt) and an exact resume. Python's osteonet.train.Trainer runs the same loop; both read each
// other's checkpoints (docs/training.md).
//
//   example_train_classifier [OUT_DIR]
//
// Exit status 0 only if training reached 90 % test accuracy and a run interrupted after 2 epochs and
// resumed from its last.pt ended with the same weights as the uninterrupted run (ctest runs it).
#include <osteonet/osteonet.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <sys/stat.h>

namespace ob = osteonet::backbones;
namespace ot = osteonet::train;

namespace {

// Class 1: a bright disc; class 0: a bright ring of the same size; noise and random positions.
std::pair<torch::Tensor, torch::Tensor> make_images(int64_t n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t s = 32;
  auto yy = torch::arange(s).view({s, 1}).to(torch::kFloat32), xx = torch::arange(s).view({1, s}).to(torch::kFloat32);
  auto x = torch::empty({n, 1, s, s}), y = torch::empty({n}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) {
    const auto c = torch::rand({2}, gen) * 12 + 10;
    const auto r = torch::sqrt((yy - c[0]).pow(2) + (xx - c[1]).pow(2));
    const bool disc = i % 2 == 1;
    auto img = disc ? (r < 6).to(torch::kFloat32) : ((r < 7) & (r > 4)).to(torch::kFloat32);
    x[i][0] = img + 0.3 * torch::randn({s, s}, gen);
    y[i] = static_cast<int64_t>(disc);
  }
  return {x, y};
}

double accuracy(ob::ResNetBasic& model, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(x).argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
}

struct Run {
  ob::ResNetBasic model;
  double best_accuracy = 0.0;
};

// Trains up to `epochs` epochs in `out`; with `resume`, continues from out/last.pt.
Run train(const std::string& out, int64_t epochs, bool resume, const std::pair<torch::Tensor, torch::Tensor>& tr,
          const std::pair<torch::Tensor, torch::Tensor>& te) {
  torch::manual_seed(0);
  Run run{ob::resnet18(ob::ResNetOptions().num_classes(2).in_chans(1))};
  auto& model = run.model;
  auto opt = ot::make_optimizer("adamw", *model, ot::OptimizerOptions().lr(2e-3).weight_decay(1e-4));
  auto schedule = ot::make_schedule("cosine", osteonet::OptionMap({{"t_max", int64_t(6)}, {"warmup_epochs", int64_t(1)}}));
  schedule->attach(ot::get_lrs(*opt));
  ot::EarlyStopping stopper(/*patience=*/3, "max");
  std::vector<ot::EpochLog> history;
  int64_t epoch = 0;
  if (resume) {  // model, optimiser, schedule, RNG (the shuffling draws from it), early stopping, log
    auto info = ot::load_checkpoint(out + "/last.pt", model.get(), opt.get(), schedule.get());
    epoch = info.epoch;
    stopper.load_state_dict(info.extra);
    history = info.history;
  }
  // small batches: many BatchNorm updates, so the running statistics evaluation uses settle on 128 images
  const int64_t n = tr.first.size(0), batch = 8;
  for (; epoch < epochs && !stopper.should_stop(); ++epoch) {
    ot::set_lrs(*opt, schedule->lrs());
    model->train();
    if (epoch == 5) ot::freeze_batchnorm(*model);  // the last epoch fine-tunes with fixed statistics
    double total = 0.0;
    int64_t batches = 0;
    const auto perm = torch::randperm(n);
    for (int64_t i = 0; i + batch <= n; i += batch) {
      const auto idx = perm.slice(0, i, i + batch);
      opt->zero_grad();
      auto loss = torch::cross_entropy_loss(model->forward(tr.first.index_select(0, idx)), tr.second.index_select(0, idx));
      loss.backward();
      torch::nn::utils::clip_grad_norm_(model->parameters(), 5.0);
      opt->step();
      total += loss.item<double>();
      ++batches;
    }
    const double acc = accuracy(model, te.first, te.second);
    const bool improved = stopper.update(acc);
    schedule->step(acc);
    history.push_back({{"epoch", double(epoch + 1)}, {"train_loss", total / batches}, {"test_accuracy", acc}});
    std::printf("epoch %lld  train_loss %.4f  test_accuracy %.3f  lr %.2e\n", (long long)epoch + 1, total / batches, acc,
                ot::get_lrs(*opt)[0]);
    ot::save_checkpoint(out + "/last.pt", *model, opt.get(), schedule.get(), epoch + 1, stopper.state_dict(), history);
    if (improved) ot::save_checkpoint(out + "/best.pt", *model, opt.get(), schedule.get(), epoch + 1, stopper.state_dict(), history);
  }
  run.best_accuracy = stopper.best();
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "train_classifier_run";
  for (const auto& d : {out, out + "/straight", out + "/interrupted"}) ::mkdir(d.c_str(), 0755);
  torch::set_num_threads(2);
  const auto tr = make_images(128, 1), te = make_images(48, 2);
  try {
    auto straight = train(out + "/straight", 6, false, tr, te);
    train(out + "/interrupted", 2, false, tr, te);  // "interrupted" after 2 epochs
    auto resumed = train(out + "/interrupted", 6, true, tr, te);
    bool same = true;
    const auto a = straight.model->named_parameters(), b = resumed.model->named_parameters();
    for (const auto& kv : a) same = same && kv.value().equal(b[kv.key()]);
    std::printf("best test accuracy %.3f; resumed run equals the uninterrupted one: %s\n", straight.best_accuracy,
                same ? "yes" : "NO");
    // The best epoch's weights, as evaluation or export would load them.
    auto best = ob::resnet18(ob::ResNetOptions().num_classes(2).in_chans(1));
    const auto info = ot::load_checkpoint(out + "/straight/best.pt", best.get(), nullptr, nullptr, /*restore_rng=*/false);
    const double best_acc = accuracy(best, te.first, te.second);
    std::printf("best.pt (epoch %lld): test accuracy %.3f\n", (long long)info.epoch, best_acc);
    return same && best_acc >= 0.9 && best_acc == straight.best_accuracy ? EXIT_SUCCESS : EXIT_FAILURE;
  } catch (const std::exception& e) {
    std::cerr << "train_classifier: " << e.what() << "\n";
    return EXIT_FAILURE;
  }
}
