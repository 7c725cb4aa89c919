// doctest: train/*.hpp: schedules (hand-worked values), checkpoint round trip and errors, the atomic writer,
// early stopping, frozen BatchNorm. The full loop with an exact resume is examples/cpp/train_classifier.cpp (a ctest).
#include "testing.hpp"

#include <osteonet/train/checkpoint.hpp>
#include <osteonet/train/optim.hpp>
#include <osteonet/train/schedule.hpp>
#include <osteonet/train/batchnorm.hpp>
#include <osteonet/train/early_stopping.hpp>

#include <algorithm>
#include <cstdio>
#include <dirent.h>
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

TEST_CASE("sha256: FIPS 180-4 test vectors, any split of the input") {
  CHECK(osteonet::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(osteonet::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 56 bytes: padding spills
  CHECK(osteonet::sha256_hex(two_blocks) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  osteonet::Sha256 h;
  for (std::size_t i = 0; i < million.size(); i += 999) h.update(million.data() + i, std::min<std::size_t>(999, million.size() - i));
  CHECK(h.hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("checkpoint integrity: a flipped byte in a stored tensor is refused and the model untouched") {
  const auto dir = temp_dir();
  const auto path = dir + "/ck.pt";
  auto a = torch::nn::Linear(4, 2);
  {
    torch::NoGradGuard g;
    a->weight.fill_(1234.5678f);
  }
  ot::save_checkpoint(path, *a, nullptr, nullptr, 3);
  const auto d = ot::read_checkpoint(path);
  REQUIRE(d.contains("checksums"));
  CHECK(d.at("checksums").toGenericDict().at("model").toGenericDict().at("weight").toStringRef() ==
        ot::tensor_sha256(a->weight));

  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const float v = 1234.5678f;
  const auto at = bytes.find(std::string(reinterpret_cast<const char*>(&v), 4));
  REQUIRE(at != std::string::npos);
  bytes[at + 1] ^= 0x10;  // one bit of the weight's payload: the zip archive stays valid
  ot::atomic_write(dir + "/flipped.pt", bytes);
  auto b = torch::nn::Linear(4, 2);
  const auto before = b->weight.clone();
  CHECK_THROWS_WITH_AS(ot::load_checkpoint(dir + "/flipped.pt", b.get(), nullptr, nullptr),
                       doctest::Contains("flipped.pt: corrupted, tensor 'weight' does not match its SHA-256"),
                       osteonet::ValueError);
  CHECK(b->weight.equal(before));

  // A format-2 checkpoint without checksums (stripped) is refused; format 1 (before checksums) loads.
  auto strip = [&](int64_t version) {
    auto e = d.copy();
    CHECK(e.erase("checksums") == 1);
    e.insert_or_assign("osteonet_checkpoint", version);
    const auto out = torch::pickle_save(e);
    ot::atomic_write(dir + "/v" + std::to_string(version) + ".pt", out.data(), out.size());
    return dir + "/v" + std::to_string(version) + ".pt";
  };
  CHECK_THROWS_WITH_AS(ot::load_checkpoint(strip(2), b.get(), nullptr, nullptr),
                       doctest::Contains("requires checksums and none are stored"), osteonet::ValueError);
  CHECK(ot::load_checkpoint(strip(1), b.get(), nullptr, nullptr, false).epoch == 3);
  CHECK(b->weight.equal(a->weight));

  // A tensor renamed in the pickle has no checksum.
  auto renamed = d.copy();
  auto model = renamed.at("model").toGenericDict().copy();
  model.insert("weight2", model.at("weight"));
  CHECK(model.erase("weight") == 1);
  renamed.insert_or_assign("model", model);
  const auto out = torch::pickle_save(renamed);
  ot::atomic_write(dir + "/renamed.pt", out.data(), out.size());
  CHECK_THROWS_WITH_AS(ot::read_checkpoint(dir + "/renamed.pt"), doctest::Contains("tensor 'weight2' has no checksum"),
                       osteonet::ValueError);
}

TEST_CASE("check_pickle: hand-made pickles; a damaged length or memo index is refused before unpickling") {
  using osteonet::train::detail::check_pickle;
  auto check = [](const std::string& s) {
    check_pickle("p", reinterpret_cast<const unsigned char*>(s.data()), s.size());
  };
  // PROTO 2, EMPTY_DICT, BINPUT 0, SHORT_BINUNICODE "ab", BININT1 7, SETITEM, STOP: {"ab": 7}
  const std::string ok("\x80\x02}q\x00\x8c\x02" "abK\x07s.", 13);
  CHECK_NOTHROW(check(ok));
  CHECK_NOTHROW(check(std::string("\x80\x02X\x02\x00\x00\x00" "ab.", 10)));  // BINUNICODE
  CHECK_NOTHROW(check("cbuiltins\nset\n)\x85R."));                                // GLOBAL's two lines
  CHECK_THROWS_WITH_AS(check(std::string("\x80\x02X\xf0\xff\xff\x7f" "ab.", 10)),
                       doctest::Contains("a length of 2147483632 bytes past the end at byte 2 of 10"), osteonet::ValueError);
  CHECK_THROWS_WITH_AS(check(std::string("\x80\x02}r\xff\xff\xff\x0f.", 9)), doctest::Contains("memo index 268435455"),
                       osteonet::ValueError);
  CHECK_THROWS_WITH_AS(check(std::string("\x80\x02}\xff.", 5)), doctest::Contains("unknown opcode 0xff at byte 3"),
                       osteonet::ValueError);
  CHECK_THROWS_WITH_AS(check(ok.substr(0, 12)), doctest::Contains("no STOP opcode"), osteonet::ValueError);
  CHECK_THROWS_WITH_AS(check(std::string("\x80\x02J\x01\x00", 5)), doctest::Contains("an argument past the end"),
                       osteonet::ValueError);
  CHECK_THROWS_WITH_AS(check("cbuiltins\nset"), doctest::Contains("an unterminated argument"), osteonet::ValueError);
}

TEST_CASE("verify_checksums: a tensor reaching past its storage is refused before hashing (libFuzzer's overflow)") {
  // LibTorch's unpickler sets a stored tensor's offset, sizes and strides without checking them against its
  // storage; hashing such a view read past the buffer (AddressSanitizer: heap-buffer-overflow).
  auto view = [](int64_t offset, std::vector<int64_t> sizes, std::vector<int64_t> strides) {
    auto base = torch::zeros({4});
    auto t = torch::empty({0});
    t.unsafeGetTensorImpl()->set_storage_keep_dtype(base.storage());
    t.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, strides);
    t.unsafeGetTensorImpl()->set_storage_offset(offset);
    return t;
  };
  const std::map<std::string, std::string> sums{{"x", "00"}};
  CHECK_THROWS_WITH_AS(ot::verify_checksums("w", {{"x", view(2, {4}, {1})}}, sums),
                       doctest::Contains("tensor 'x' (sizes [4], strides [1], offset 2) needs more than its storage's 16 bytes"),
                       osteonet::ValueError);
  CHECK_THROWS_WITH_AS(ot::verify_checksums("w", {{"x", view(0, {2, 2}, {3, 1})}}, sums),
                       doctest::Contains("needs more than its storage's 16 bytes"), osteonet::ValueError);
  CHECK_THROWS_WITH_AS(ot::verify_checksums("w", {{"x", view(0, {int64_t(1) << 40}, {0})}}, sums),  // 4 TB of values
                       doctest::Contains("needs more than"), osteonet::ValueError);
  // inside its storage: hashed, and here refused only for the (made-up) digest
  CHECK_THROWS_WITH_AS(ot::verify_checksums("w", {{"x", view(2, {2}, {1})}}, sums), doctest::Contains("does not match its SHA-256"),
                       osteonet::ValueError);
}

TEST_CASE("parse_checkpoint: libFuzzer's findings (tests/fuzz/cpp/regressions) are refused in one line") {
  // Under AddressSanitizer (make test-asan) these read past their buffers before the fixes.
  const std::string dir = std::string(__FILE__).substr(0, std::string(__FILE__).rfind('/')) + "/../fuzz/cpp/regressions/";
  const std::vector<std::pair<std::string, std::string>> cases{
      {"zip-offset-past-buffer.pt", "not an osteonet checkpoint"},
      {"storage-larger-than-record.pt", "not an osteonet checkpoint"}};
  for (const auto& [file, expected] : cases) {
    CAPTURE(file);
    std::ifstream in(dir + file, std::ios::binary);
    REQUIRE(in.good());
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK_THROWS_WITH_AS(ot::parse_checkpoint(file, bytes), doctest::Contains(expected.c_str()), osteonet::ValueError);
  }
}

TEST_CASE("atomic_write: the next write of a file removes the temporaries a killed writer left beside it") {
  const auto dir = temp_dir();
  const auto path = dir + "/ck.pt";
  for (const char* stale : {"/.ck.pt.Ab12Cd.tmp", "/.ck.pt.x_9y8z7w.tmp.pt"}) std::ofstream(dir + stale) << "half";
  std::ofstream(dir + "/.other.pt.Ab12Cd.tmp") << "another file's";
  ot::atomic_write(path, std::string("whole"));
  std::vector<std::string> left;
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d != nullptr);
  while (auto* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") left.push_back(n);
  }
  ::closedir(d);
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{".other.pt.Ab12Cd.tmp", "ck.pt"});
}

TEST_CASE("early stopping: best value, patience, state round trip; errors") {
  ot::EarlyStopping s(2, "max");
  CHECK(s.update(0.5));
  CHECK_FALSE(s.update(0.5));  // equal is not better
  CHECK_FALSE(s.should_stop());
  CHECK_FALSE(s.update(0.4));
  CHECK(s.should_stop());  // 2 evaluations without improvement
  ot::EarlyStopping t(2, "max");
  t.load_state_dict(s.state_dict());
  CHECK(t.best() == 0.5);
  CHECK(t.should_stop());
  CHECK(t.update(0.7));
  CHECK_FALSE(t.should_stop());
  ot::EarlyStopping never(0, "min", 0.1);
  for (int i = 0; i < 20; ++i) never.update(1.0);
  CHECK_FALSE(never.should_stop());
  CHECK_FALSE(never.update(0.95));  // not better by more than min_delta
  CHECK_THROWS_AS(ot::EarlyStopping(1, "maximum"), osteonet::ValueError);
  CHECK_THROWS_AS(s.update(std::nan("")), osteonet::ValueError);
}

TEST_CASE("freeze_batchnorm: eval mode, no gradients, statistics kept") {
  torch::nn::Sequential net(torch::nn::Linear(4, 6), torch::nn::BatchNorm1d(6), torch::nn::ReLU(), torch::nn::Linear(6, 1));
  net->train();
  CHECK(ot::freeze_batchnorm(*net) == 1);
  auto bn = net[1]->as<torch::nn::BatchNorm1d>();
  const auto mean = bn->running_mean.clone();
  net->forward(torch::randn({8, 4})).sum().backward();
  CHECK_FALSE(bn->is_training());
  CHECK(bn->running_mean.equal(mean));
  CHECK_FALSE(bn->weight.requires_grad());
  CHECK(net[0]->as<torch::nn::Linear>()->weight.grad().defined());
}

TEST_CASE("atomic_write: whole files, no temporary left, a failed write keeps the old file") {
  const auto dir = temp_dir();
  const auto path = dir + "/a.bin";
  ot::atomic_write(path, std::string("first"));
  ot::atomic_write(path, std::string("second version"));
  std::ifstream in(path, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(got == "second version");
  int entries = 0;
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d != nullptr);
  while (auto* e = ::readdir(d)) entries += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
  ::closedir(d);
  CHECK(entries == 1);  // no temporary file beside it
  CHECK_THROWS_AS(ot::atomic_write(dir + "/no/such/folder/x.bin", std::string("x")), std::runtime_error);
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
