// doctest: backbones (backbones/*.hpp) and the registry.
#include "testing.hpp"

#include <osteonet/backbones/registry.hpp>
#include <osteonet/detail/norm.hpp>

#include <cmath>
#include <limits>

namespace ob = osteonet::backbones;
namespace om = osteonet::models;

TEST_CASE("registry lists every model and builds each with described feature maps") {
  const auto names = om::list_models();
  CHECK(names.size() == 15);
  for (const auto& n : names) {
    CAPTURE(n);
    om::ModelConfig cfg;
    cfg.num_classes = 3;
    cfg.in_chans = 1;
    auto m = om::create_model(n, cfg);
    m->eval();
    torch::NoGradGuard ng;
    const int64_t s = n == "inception_v3" ? 96 : 64;
    auto x = torch::randn({2, 1, s, s});
    CHECK(m->forward(x).sizes() == torch::IntArrayRef({2, 3}));
    auto feats = m->forward_intermediates(x);
    REQUIRE(feats.size() == m->feature_info().size());
    for (size_t i = 0; i < feats.size(); ++i) CHECK(feats[i].size(1) == m->feature_info()[i].channels);
    // timm's contract: forward == forward_head(forward_features), features = the last intermediate.
    auto last = m->forward_features(x);
    CHECK(torch::equal(m->forward_head(last), m->forward(x)));
    CHECK(last.size(1) == m->feature_info().back().channels);
  }
}

TEST_CASE("attention placement: blocks (timm slots) and DSNet stages") {
  auto se = ob::resnet50(ob::ResNetOptions().attention(osteonet::attention::attention_options("se")));
  auto params = se->named_parameters();
  CHECK(params.contains("layer1.0.attn.fc1.weight"));
  CHECK(params.contains("layer4.2.attn.fc2.bias"));
  auto sk = ob::resnet18(ob::ResNetOptions().attention(osteonet::attention::attention_options("sk")));
  CHECK(sk->named_parameters().contains("layer2.0.conv1.paths.0.0.weight"));  // SK replaces the strided conv
  CHECK_FALSE(sk->named_parameters().contains("layer2.0.bn1.weight"));
  auto ds = ob::dsnet_resnet50();
  auto dsp = ds->named_parameters();
  CHECK(dsp.contains("attn_stem.branches.0.0.weight"));
  CHECK(dsp.contains("attn_last.fuse.0.weight"));
  CHECK(dsp["attn_stem.fcs.0.weight"].size(0) == 64);
  CHECK(dsp["attn_last.fcs.1.weight"].size(0) == 2048);
  CHECK_FALSE(dsp.contains("layer1.0.attn.fcs.0.weight"));
  // DS starts as the identity, so dsnet_resnet50 equals resnet50 with the same shared weights.
  auto plain = ob::resnet50();
  torch::NoGradGuard ng;
  for (auto& kv : plain->named_parameters()) dsp[kv.key()].copy_(kv.value());
  for (auto& kv : plain->named_buffers()) ds->named_buffers()[kv.key()].copy_(kv.value());
  ds->eval();
  plain->eval();
  auto x = torch::randn({1, 3, 64, 64});
  CHECK(torch::allclose(ds->forward(x), plain->forward(x), 1e-5, 1e-5));
}

TEST_CASE("VGG and MobileNet with DS keep torchvision's names") {
  auto plain = ob::vgg16();
  auto with_ds = ob::vgg16(ob::VGGOptions().attention(osteonet::attention::attention_options("ds")));
  for (auto& kv : plain->named_parameters()) CHECK(with_ds->named_parameters().contains(kv.key()));
  CHECK(with_ds->named_parameters().contains("attn_stem.fuse.0.weight"));
  auto mv3 = ob::mobilenet_v3_large(ob::MobileNetOptions().attention(osteonet::attention::attention_options("ds")));
  CHECK(mv3->named_parameters()["attn_last.fcs.0.weight"].size(0) == 960);
}

TEST_CASE("inception heads and dxa_cnn21 layer count") {
  auto inc = ob::inception_v3(ob::InceptionV3Options().num_classes(4));
  inc->train();
  CHECK_THROWS_AS(inc->forward_heads(torch::randn({2, 3, 80, 80})), osteonet::ValueError);
  auto heads = inc->forward_heads(torch::randn({2, 3, 299, 299}));
  REQUIRE(heads.size() == 2);
  CHECK(heads[1].sizes() == torch::IntArrayRef({2, 4}));
  inc->eval();
  CHECK(inc->forward_heads(torch::randn({1, 3, 80, 80})).size() == 1);
  auto noaux = ob::inception_v3(ob::InceptionV3Options().aux_logits(false));
  CHECK_FALSE(noaux->named_parameters().contains("AuxLogits.fc.weight"));
  auto dxa = ob::dxa_cnn21();
  // 4 conv + 4 BN + 4 ReLU + 3 pools in `features`, dropout + linear in `classifier` (+ input,
  // global pool, softmax, classification output outside) = 21 layers.
  CHECK(dxa->features->size() == 15);
  CHECK(dxa->classifier->size() == 2);
}

TEST_CASE("input checks name what was expected and what came") {
  auto net = ob::resnet18(ob::ResNetOptions().in_chans(1));
  auto msg = [&](const torch::Tensor& x) {
    try {
      net->forward(x);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(msg(torch::randn({1, 3, 32, 32})).find("expected 1 input channels, got 3") != std::string::npos);
  CHECK(msg(torch::randn({3, 32, 32})).find("expected a 4-D input") != std::string::npos);
  CHECK_THROWS_AS(net->forward(torch::ones({1, 1, 32, 32}, torch::kLong)), osteonet::TypeError);
  CHECK_THROWS_AS(net->forward(torch::ones({1, 1, 32, 32}, torch::kDouble)), osteonet::TypeError);
  CHECK(msg(torch::randn({1, 1, 8, 8})).find("height and width >= 32") != std::string::npos);
}

TEST_CASE("registry errors: unknown model, attention, option, wrong option type") {
  auto what = [](auto f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(what([] { om::create_model("resnet05"); }).find("did you mean 'resnet50'") != std::string::npos);
  om::ModelConfig bad_attn;
  bad_attn.attention = "sek";
  CHECK(what([&] { om::create_model("resnet18", bad_attn); }).find("did you mean 'se'") != std::string::npos);
  om::ModelConfig bad_opt;
  bad_opt.options.set("dropuot", 0.1);
  CHECK(what([&] { om::create_model("vgg16", bad_opt); }).find("did you mean 'dropout'") != std::string::npos);
  om::ModelConfig bad_type;
  bad_type.options.set("aux_logits", std::string("yes"));
  CHECK_THROWS_AS(om::create_model("inception_v3", bad_type), osteonet::TypeError);
  om::ModelConfig bad_place;
  bad_place.attention = "se";
  bad_place.options.set("attention_placement", std::string("everywhere"));
  CHECK_THROWS_AS(om::create_model("resnet18", bad_place), osteonet::ValueError);
}

TEST_CASE("fused eval-mode norm (+ residual) (+ ReLU) is bit-identical to the ATen ops, and only at inference") {
  namespace d = osteonet::detail;
  torch::manual_seed(5);
  auto bn = torch::nn::BatchNorm2d(16);
  auto frozen = d::FrozenBatchNorm2d(16);
  {
    torch::NoGradGuard g;
    for (auto* t : {&bn->running_mean, &frozen->running_mean, &bn->bias, &frozen->bias}) t->normal_(0, 1);
    for (auto* t : {&bn->running_var, &frozen->running_var}) t->uniform_(0.3, 2.0);
    for (auto* t : {&bn->weight, &frozen->weight}) t->uniform_(0.5, 2.0);
  }
  bn->eval();
  auto x = torch::randn({2, 16, 13, 11});  // odd sizes: vector body and scalar tail
  auto r = torch::randn({2, 16, 13, 11});
  x.index_put_({0, 0, 0, 0}, std::numeric_limits<float>::quiet_NaN());
  for (bool use_frozen : {false, true}) {
    torch::nn::Module& m = use_frozen ? static_cast<torch::nn::Module&>(*frozen) : static_cast<torch::nn::Module&>(*bn);
    auto aten = [&](const torch::Tensor& in, const torch::Tensor& res, bool relu) {
      auto y = use_frozen ? frozen(in) : bn(in);
      if (res.defined()) y += res;
      return relu ? y.relu_() : y;
    };
    for (bool relu : {false, true})
      for (bool with_res : {false, true}) {
        CAPTURE(use_frozen);
        CAPTURE(relu);
        CAPTURE(with_res);
        const torch::Tensor res = with_res ? r : torch::Tensor();
        torch::NoGradGuard g;
        auto y = x.clone();
        const bool fused = d::fused_norm_act_(y, m, res, relu);
        CHECK(fused == d::fused_norm_supported());
        auto expected = aten(x, res, relu);
        if (!fused) y = aten(y, res, relu);  // a CPU without AVX2 + FMA: the caller runs the ATen ops
        CHECK(torch::equal(y.nan_to_num(7.0), expected.nan_to_num(7.0)));  // bit-identical, NaN kept
        CHECK(std::isnan(y[0][0][0][0].item<float>()));
      }
  }
  // Not applied with gradients on, in training mode, or to non-contiguous input: x is left untouched.
  auto y = x.clone();
  CHECK_FALSE(d::fused_norm_act_(y, *bn, {}, true));  // gradient mode is on here
  torch::NoGradGuard g;
  bn->train();
  CHECK_FALSE(d::fused_norm_act_(y, *bn, {}, true));
  bn->eval();
  auto t = x.transpose(2, 3);
  CHECK_FALSE(d::fused_norm_act_(t, *bn, {}, true));
  CHECK(torch::equal(y.nan_to_num(7.0), x.nan_to_num(7.0)));
}
