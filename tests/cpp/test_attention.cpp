// doctest: attention modules (attention/*.hpp) and their factory.
#include "testing.hpp"

#include <osteonet/attention/attention.hpp>

namespace oa = osteonet::attention;

namespace {
// Max relative error between autograd's input gradient of sum(f(x)·w) and central differences.
template <typename F>
double gradient_error(F f, torch::Tensor x) {
  x = x.clone().requires_grad_(true);
  const torch::Tensor w = torch::randn_like(torch::Tensor(f(x)).detach());
  const torch::Tensor g = torch::autograd::grad({(torch::Tensor(f(x)) * w).sum()}, {x})[0];
  double worst = 0;
  auto flat = x.detach().view(-1);
  for (int64_t i = 0; i < flat.numel(); i += std::max<int64_t>(1, flat.numel() / 25)) {
    auto xp = x.detach().clone(), xm = x.detach().clone();
    xp.view(-1)[i] += 1e-6;
    xm.view(-1)[i] -= 1e-6;
    const torch::Tensor fp = f(xp), fm = f(xm);
    const double num = ((fp * w).sum() - (fm * w).sum()).item<double>() / 2e-6;
    const double ana = g.view(-1)[i].item<double>();
    worst = std::max(worst, std::abs(num - ana) / std::max(1.0, std::abs(num)));
  }
  return worst;
}
}  // namespace

TEST_CASE("factory knows every name and suggests the nearest one") {
  CHECK(oa::attention_names() == std::vector<std::string>{"none", "se", "eca", "sk", "ds"});
  CHECK_FALSE(oa::create_attention("none", 64).has_value());
  for (const char* n : {"se", "eca", "sk", "ds"}) {
    auto m = oa::create_attention(n, 64);
    REQUIRE(m.has_value());
    auto y = m->forward(torch::randn({2, 64, 9, 7}));
    CHECK(y.sizes() == torch::IntArrayRef({2, 64, 9, 7}));
    CHECK(oa::attention_name(oa::attention_options(n)) == n);
  }
  try {
    oa::attention_options("dss");
    FAIL("expected an error");
  } catch (const osteonet::ValueError& e) {
    CHECK(std::string(e.what()).find("did you mean 'ds'") != std::string::npos);
  }
}

TEST_CASE("SE: reduction 16, sigmoid gate, fc1/fc2 names") {
  oa::SqueezeExcite se(oa::SqueezeExciteOptions(256));
  CHECK(se->fc1->weight.size(0) == 16);
  auto p = se->named_parameters();
  CHECK(p.contains("fc1.weight"));
  CHECK(p.contains("fc2.bias"));
  // With zero fc2 weights and bias the gate is sigmoid(0) = 0.5 everywhere.
  torch::NoGradGuard ng;
  se->fc2->weight.zero_();
  se->fc2->bias.zero_();
  auto x = torch::randn({1, 256, 4, 4});
  CHECK(torch::allclose(se(x), x * 0.5));
}

TEST_CASE("ECA: adaptive kernel from the channel count") {
  CHECK(oa::eca_kernel_size(64) == 3);
  CHECK(oa::eca_kernel_size(128) == 5);
  CHECK(oa::eca_kernel_size(256) == 5);
  CHECK(oa::eca_kernel_size(512) == 5);
  CHECK(oa::eca_kernel_size(2048) == 7);
  oa::EfficientChannel eca(oa::EfficientChannelOptions(2048));
  CHECK(eca->conv->weight.sizes() == torch::IntArrayRef({1, 1, 7}));
  CHECK_THROWS_AS(oa::EfficientChannel(oa::EfficientChannelOptions(64).kernel_size(4)), osteonet::ValueError);
}

TEST_CASE("SK as published: two 3x3 paths (dilation 1, 2), G=32, d=max(C/16, 32), softmax") {
  oa::SelectiveKernel sk(oa::SelectiveKernelOptions(128, 256).stride(2));
  CHECK(sk->paths->size() == 2);
  auto* conv = sk->paths[1]->as<osteonet::detail::Seq>()->ptr(0)->as<torch::nn::Conv2d>();
  CHECK(conv->options.dilation()->at(0) == 2);
  CHECK(conv->options.groups() == 32);
  CHECK(sk->fc_reduce->weight.size(0) == 32);  // max(256 / 16, 32)
  CHECK(sk(torch::randn({2, 128, 16, 16})).sizes() == torch::IntArrayRef({2, 256, 8, 8}));
}

TEST_CASE("DS starts as the identity and follows the paper's structure") {
  oa::DualSelective ds(oa::DualSelectiveOptions(64));
  ds->eval();
  auto x = torch::randn({2, 64, 10, 10});
  CHECK(torch::allclose(ds(x), x));  // zero-initialised fusion norm, residual
  CHECK(ds->branches->size() == 2);
  auto* b5 = ds->branches[1]->as<osteonet::detail::Seq>()->ptr(0)->as<torch::nn::Conv2d>();
  CHECK(b5->options.kernel_size()->at(0) == 5);
  auto* fuse = ds->fuse[0]->as<torch::nn::Conv2d>();
  CHECK(fuse->options.dilation()->at(0) == 2);
  CHECK(ds->fcs[0]->as<torch::nn::Linear>() != nullptr);  // Eq. (2): one FC with bias
  oa::DualSelective dsr(oa::DualSelectiveOptions(64).reduction(4).gate("softmax").dilated_branches(true).residual(false));
  CHECK(dsr->fcs[0]->as<torch::nn::Sequential>() != nullptr);
  CHECK_THROWS_AS(oa::DualSelective(oa::DualSelectiveOptions(64).gate("tanh")), osteonet::ValueError);
}

TEST_CASE("attention gradients match finite differences (double)") {
  torch::manual_seed(0);
  for (const char* n : {"se", "eca", "sk", "ds"}) {
    auto opts = oa::attention_options(n, osteonet::OptionMap({{"attn_zero_init_fuse", false}}));
    if (std::string(n) != "ds") opts = oa::attention_options(n);
    auto m = oa::create_attention(opts, 32);
    m->ptr()->to(torch::kDouble);
    m->ptr()->eval();
    auto x = torch::randn({1, 32, 5, 5}, torch::kDouble);
    CAPTURE(n);
    CHECK(gradient_error([&](const torch::Tensor& t) { return m->forward(t); }, x) < 1e-5);
  }
}

TEST_CASE("DS and SK in CPU inference (channels-last, in place) equal the path as written") {
  torch::manual_seed(0);
  for (const char* n : {"sk", "ds"}) {
    auto opts = oa::attention_options(n, osteonet::OptionMap({{"attn_zero_init_fuse", false}}));
    if (std::string(n) != "ds") opts = oa::attention_options(n);
    auto m = oa::create_attention(opts, 64);
    {
      torch::NoGradGuard ng;  // non-trivial norms, so that every stage matters
      for (auto& p : m->ptr()->named_parameters()) p.value().uniform_(-0.3, 0.3);
      for (auto& b : m->ptr()->named_buffers())
        if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    }
    m->ptr()->eval();
    auto x = torch::randn({2, 64, 12, 10});
    const auto x0 = x.clone();
    const torch::Tensor written = m->forward(x).detach();  // autograd recording: the path as written
    torch::Tensor fast;
    {
      torch::NoGradGuard ng;
      CHECK(osteonet::core::unobserved_cpu_inference(*m->ptr(), x));
      fast = m->forward(x);
    }
    CAPTURE(n);
    CHECK(fast.is_contiguous());
    CHECK(torch::equal(x, x0));  // the input is not written
    CHECK((fast - written).abs().max().item<double>() < 1e-5);
    m->ptr()->train();
    CHECK_FALSE(osteonet::core::unobserved_cpu_inference(*m->ptr(), x));
  }
}
