// doctest: train/*.hpp: schedules (hand-worked values), checkpoint round trip and errors, resume equals an uninterrupted run.
#include "testing.hpp"

#include <osteonet/train/checkpoint.hpp>
#include <osteonet/train/optim.hpp>
#include <osteonet/train/schedule.hpp>
#include <osteonet/train/trainer.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace ot = osteonet::train;

namespace {

std::string temp_dir() {
  char tmpl[] = "/tmp/osteonet_train_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  REQUIRE(d != nullptr);
  return d;
}

std::vector<double> run(ot::Schedule& s, const std::vector<double>& metrics) {
  std::vector<double> out{s.lrs()[0]};
  for (double m : metrics) {
    s.step(m);
    out.push_back(s.lrs()[0]);
  }
  return out;
}

struct Batches {  // a fixed list of (x, y) batches: what a data loader gives
  std::vector<std::pair<torch::Tensor, torch::Tensor>> b;
  auto begin() const { return b.begin(); }
  auto end() const { return b.end(); }
};

Batches toy_batches() {
  torch::manual_seed(42);
  Batches out;
  for (int i = 0; i < 4; ++i) {
    auto x = torch::randn({8, 5});
    out.b.emplace_back(x, x.sum(1, true) * 0.5 + 1.0);
  }
  return out;
}

}  // namespace

TEST_CASE("step, cosine and warm-up schedules: hand-worked rates") {
  ot::StepSchedule step(2, 0.1);
  step.attach({1.0});
  const auto r = run(step, {0, 0, 0, 0});
  CHECK(r[0] == doctest::Approx(1.0));
  CHECK(r[1] == doctest::Approx(1.0));
  CHECK(r[2] == doctest::Approx(0.1));
  CHECK(r[4] == doctest::Approx(0.01));

  ot::CosineSchedule cos(4, 0.0);
  cos.attach({2.0});
  const auto c = run(cos, {0, 0, 0, 0, 0});
  CHECK(c[2] == doctest::Approx(1.0));   // half-way: (1 + cos(pi/2)) / 2 * 2
  CHECK(c[4] == doctest::Approx(0.0));
  CHECK(c[5] == doctest::Approx(0.0));   // held after t_max

  auto w = ot::make_schedule("step", osteonet::OptionMap({{"step_size", int64_t(10)}, {"warmup_epochs", int64_t(4)},
                                                          {"warmup_start_factor", 0.2}}));
  w->attach({1.0, 0.1});
  const auto wr = run(*w, {0, 0, 0, 0, 0});
  CHECK(wr[0] == doctest::Approx(0.2));
  CHECK(wr[2] == doctest::Approx(0.6));
  CHECK(wr[4] == doctest::Approx(1.0));
  CHECK(w->lrs()[1] == doctest::Approx(0.1));
  CHECK_THROWS_AS(ot::make_schedule("cosin"), osteonet::ValueError);
  CHECK_THROWS_AS(ot::make_schedule("step", osteonet::OptionMap({{"step_sise", int64_t(3)}})), osteonet::ValueError);
}

TEST_CASE("plateau halving: patience, mode and state round trip") {
  ot::PlateauSchedule p(0.5, 1, "max", 0.0, 0, 0.0);
  p.attach({0.8});
  // improves, flat, flat (2 bad > patience 1 -> halve), improves, flat, flat (halve)
  const auto r = run(p, {0.5, 0.5, 0.5, 0.6, 0.6, 0.6});
  CHECK(r == std::vector<double>{0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2});
  ot::PlateauSchedule q(0.5, 1, "max", 0.0, 0, 0.0);
  q.attach({0.8});
  q.load_state_dict(p.state_dict());
  p.step(0.6);
  q.step(0.6);
  CHECK(p.lrs() == q.lrs());
  CHECK(q.epoch() == 7);
  CHECK_THROWS_AS(q.step(), osteonet::ValueError);  // the plateau schedule needs the metric
}

TEST_CASE("checkpoint: round trip of model, SGD momentum, schedule and RNG; errors for garbage and truncation") {
  const auto dir = temp_dir();
  const auto path = dir + "/ck.pt";
  torch::manual_seed(1);
  auto a = torch::nn::Linear(5, 3);
  auto opt = ot::make_optimizer("sgd", *a, ot::OptimizerOptions().lr(0.1).momentum(0.9).nesterov(true));
  a(torch::randn({4, 5})).sum().backward();
  opt->step();
  ot::StepSchedule s(3, 0.5);
  s.attach(ot::get_lrs(*opt));
  s.step();
  ot::save_checkpoint(path, *a, opt.get(), &s, 7, {{"best", 0.25}});
  const auto expected_draw = torch::rand({3});

  torch::manual_seed(99);
  auto b = torch::nn::Linear(5, 3);
  auto opt_b = ot::make_optimizer("sgd", *b, ot::OptimizerOptions().lr(0.1).momentum(0.9).nesterov(true));
  ot::StepSchedule sb(3, 0.5);
  sb.attach({0.1});
  const auto info = ot::load_checkpoint(path, b.get(), opt_b.get(), &sb);
  CHECK(info.epoch == 7);
  CHECK(info.writer == "c++");
  CHECK(info.extra.at("best") == doctest::Approx(0.25));
  CHECK(b->weight.equal(a->weight));
  CHECK(sb.epoch() == 1);
  CHECK(torch::rand({3}).equal(expected_draw));  // RNG restored
  // Same momentum buffers: one more identical step gives identical weights.
  const auto x = torch::randn({4, 5});
  opt->zero_grad(); a(x).sum().backward(); opt->step();
  opt_b->zero_grad(); b(x).sum().backward(); opt_b->step();
  CHECK(b->weight.equal(a->weight));

  // Truncated: the first half of the file.
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ot::atomic_write(dir + "/half.pt", bytes.substr(0, bytes.size() / 2));
  CHECK_THROWS_WITH_AS(ot::load_checkpoint(dir + "/half.pt", b.get(), nullptr, nullptr),
                       doctest::Contains("truncated"), osteonet::ValueError);
  ot::atomic_write(dir + "/text.pt", std::string("hello, not a checkpoint\n"));
  CHECK_THROWS_WITH_AS(ot::load_checkpoint(dir + "/text.pt", b.get(), nullptr, nullptr),
                       doctest::Contains("not an osteonet checkpoint"), osteonet::ValueError);
  // A PyTorch archive without the osteonet key.
  const auto plain = torch::pickle_save(c10::IValue(torch::ones({2})));
  ot::atomic_write(dir + "/plain.pt", plain.data(), plain.size());
  CHECK_THROWS_WITH_AS(ot::load_checkpoint(dir + "/plain.pt", b.get(), nullptr, nullptr),
                       doctest::Contains("not an osteonet checkpoint"), osteonet::ValueError);
  // A stale .tmp (a crash mid-write) does not affect the checkpoint beside it.
  ot::atomic_write(path + ".tmp.x", bytes.substr(0, 10));
  { std::ofstream crash(path + ".tmp", std::ios::binary); crash << bytes.substr(0, 100); }
  CHECK(ot::load_checkpoint(path, b.get(), nullptr, nullptr).epoch == 7);
  ot::save_checkpoint(path, *a, opt.get(), &s, 8);
  CHECK(ot::load_checkpoint(path, b.get(), nullptr, nullptr).epoch == 8);
}

TEST_CASE("Trainer: resume from the middle equals an uninterrupted run; early stopping stops") {
  const auto data = toy_batches();
  auto train = [&](int64_t epochs, const std::string& out, const std::string& resume_from) {
    torch::manual_seed(3);
    auto model = std::make_shared<torch::nn::LinearImpl>(5, 1);
    auto opt = ot::make_optimizer("adam", *model, ot::OptimizerOptions().lr(0.05));
    auto sched = std::shared_ptr<ot::Schedule>(ot::make_schedule("cosine", osteonet::OptionMap({{"t_max", int64_t(6)}})));
    ot::Trainer t(ot::TrainerOptions().epochs(epochs).out_dir(out).progress(false).clip_grad_norm(1.0), model, *opt, sched);
    if (!resume_from.empty()) t.resume(resume_from);
    t.fit(data, [&](const std::pair<torch::Tensor, torch::Tensor>& b) {
      auto pred = model->forward(b.first);
      return torch::mse_loss(pred + 0.01 * torch::randn_like(pred), b.second);  // RNG in the loss: resume must restore it
    }, [&](int64_t) { return std::map<std::string, double>{{"w0", model->weight[0][0].item<double>()}}; });
    return std::make_pair(model, t.history());
  };
  const auto d1 = temp_dir(), d2 = temp_dir();
  const auto straight = train(6, d1, "");
  train(3, d2, "");
  const auto resumed = train(6, d2, d2 + "/last.pt");
  CHECK(resumed.first->weight.equal(straight.first->weight));
  CHECK(resumed.first->bias.equal(straight.first->bias));
  REQUIRE(resumed.second.size() == 6);
  CHECK(resumed.second[5].at("train_loss") == straight.second[5].at("train_loss"));
  std::ifstream csv(d2 + "/log.csv");
  std::string header;
  std::getline(csv, header);
  CHECK(header == "epoch,train_loss,lr,w0,seconds");

  auto model = std::make_shared<torch::nn::LinearImpl>(5, 1);
  auto opt = ot::make_optimizer("sgd", *model, ot::OptimizerOptions().lr(0.0));  // lr 0: the loss never improves
  ot::Trainer t(ot::TrainerOptions().epochs(20).patience(2).progress(false), model, *opt);
  t.fit(data, [&](const std::pair<torch::Tensor, torch::Tensor>& b) { return torch::mse_loss(model->forward(b.first), b.second); });
  CHECK(t.stopped_early());
  CHECK(t.epoch() == 3);  // best at epoch 1, then 2 epochs without improvement
}

TEST_CASE("make_optimizer: groups with scaled rates, frozen parameters left out, unknown names") {
  auto a = torch::nn::Linear(3, 3), b = torch::nn::Linear(3, 1);
  b->bias.requires_grad_(false);
  auto opt = ot::make_optimizer("adamw", {{a->parameters(), 0.1}, {b->parameters(), 1.0}}, ot::OptimizerOptions().lr(0.01));
  CHECK(ot::get_lrs(*opt) == std::vector<double>{0.01 * 0.1, 0.01});
  CHECK(opt->param_groups()[1].params().size() == 1);
  ot::set_lrs(*opt, {0.5, 0.25});
  CHECK(ot::get_lrs(*opt)[1] == 0.25);
  CHECK_THROWS_AS(ot::make_optimizer("sdg", *a), osteonet::ValueError);
  CHECK_THROWS_AS(ot::make_optimizer("sgd", *a, ot::OptimizerOptions().momentum(0).nesterov(true)), osteonet::ValueError);
}
