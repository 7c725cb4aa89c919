// The one registry (core/registry.hpp): every registered name builds, families, unknown names and
// unused options, option defaults; and core::call overrides (core/call.hpp).
#include <osteonet/osteonet.hpp>

#include "testing.hpp"

namespace oc = osteonet::core;

namespace {
std::string what(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// Small options that make every family's model cheap to build and run.
osteonet::OptionMap small(const std::string& family) {
  if (family == "attention") return osteonet::OptionMap({{"channels", int64_t{16}}});
  if (family == "detector") return osteonet::OptionMap({{"num_classes", int64_t{3}}, {"min_size", int64_t{64}},
                                                        {"max_size", int64_t{96}}});
  if (family == "segmenter") return osteonet::OptionMap({{"base_channels", int64_t{4}}, {"depth", int64_t{2}}});
  if (family == "aggregator") return {};
  return osteonet::OptionMap({{"num_classes", int64_t{3}}});
}
}  // namespace

TEST_CASE("registry: every name of every family builds from its options") {
  const auto entries = oc::models().entries();
  std::map<std::string, int> per_family;
  for (const auto& e : entries) {
    CAPTURE(e.name);
    CHECK(!e.description.empty());
    auto m = oc::models().create(e.name, small(e.family));
    REQUIRE(m != nullptr);
    CHECK(dynamic_cast<oc::Invocable*>(m.get()) != nullptr);
    ++per_family[e.family];
  }
  CHECK(per_family["backbone"] == 15);
  CHECK(per_family["detector"] == 3);
  CHECK(per_family["segmenter"] == 2);
  CHECK(per_family["aggregator"] == 4);
  CHECK(per_family["attention"] == 4);
  // Typed access by family.
  CHECK(oc::create<osteonet::backbones::BackboneImpl>("resnet18")->num_classes() == 1000);
  CHECK(oc::create<osteonet::detection::FasterRCNNImpl>("fasterrcnn", small("detector"))->num_classes() == 3);
  CHECK_THROWS_AS(oc::create<osteonet::backbones::BackboneImpl>("lstm"), osteonet::TypeError);
}

TEST_CASE("registry: unknown names and unused options raise with the nearest valid name") {
  CHECK(what([] { oc::models().create("resnt50", {}); }).find("did you mean 'resnet50'") != std::string::npos);
  CHECK(what([] { oc::models().create("fasterrcn", {}); }).find("did you mean 'fasterrcnn'") != std::string::npos);
  CHECK(what([] { oc::models().create("unet", osteonet::OptionMap({{"dept", int64_t{2}}})); })
            .find("did you mean 'depth'") != std::string::npos);
  CHECK(what([] { oc::models().create("fasterrcnn", osteonet::OptionMap({{"min_sise", int64_t{64}}})); })
            .find("did you mean 'min_size'") != std::string::npos);
  // A fixed-backbone detector does not read `backbone`: reported, not ignored.
  CHECK(what([] {
          oc::models().create("fasterrcnn_resnet50_fpn", osteonet::OptionMap({{"backbone", std::string("vgg16")}}));
        }).find("backbone") != std::string::npos);
  CHECK_THROWS_AS(osteonet::train::make_schedule("cosin"), osteonet::ValueError);
  CHECK_THROWS_AS(osteonet::sequence::create_aggregator("lstn"), osteonet::ValueError);
  CHECK(osteonet::attention::attention_names() == std::vector<std::string>{"none", "se", "eca", "sk", "ds"});
  // A 5,000-character name is cut in the message.
  const auto long_name = what([] { oc::models().create(std::string(5000, 'x'), {}); });
  CHECK(long_name.find(std::string(80, 'x') + "... (5000 characters)") != std::string::npos);
  CHECK(long_name.size() < 1000);
}

TEST_CASE("registry: size and probability options outside their documented bounds are refused before building") {
  using osteonet::OptionMap;
  CHECK(what([] { oc::models().create("mobilenet_v2", OptionMap({{"width_mult", 1e6}})); })
            .find("option 'width_mult' must be in (0, 4], got width_mult=1e+06") != std::string::npos);
  CHECK(what([] { oc::models().create("vgg16", OptionMap({{"dropout", std::nan("")}})); })
            .find("option 'dropout' must be in [0, 1)") != std::string::npos);
  CHECK(what([] { oc::models().create("vgg16", OptionMap({{"dropout", -1.0}})); })
            .find("option 'dropout' must be in [0, 1)") != std::string::npos);
  CHECK(what([] { oc::models().create("resnet18", OptionMap({{"num_classes", int64_t{1000000000}}})); })
            .find("num_classes") != std::string::npos);
  CHECK(what([] { oc::models().create("fasterrcnn", OptionMap({{"box_nms_thresh", 1.5}})); })
            .find("box_nms_thresh") != std::string::npos);
  CHECK_NOTHROW(oc::models().create("mobilenet_v2", OptionMap({{"width_mult", 4.0}, {"num_classes", int64_t{2}}})));
}

TEST_CASE("registry: option defaults come from the Options structs") {
  auto d = oc::models().option_defaults("vgg16");
  auto find = [&](const std::string& k) {
    for (const auto& kv : d)
      if (kv.first == k) return kv.second;
    FAIL("no option " << k);
    return osteonet::OptionValue{false};
  };
  CHECK(std::get<double>(find("dropout")) == osteonet::backbones::VGGOptions().dropout());
  CHECK(std::get<int64_t>(find("num_classes")) == osteonet::backbones::VGGOptions().num_classes());
  auto det = oc::models().option_defaults("fasterrcnn");
  bool has_min_size = false;
  for (const auto& kv : det) has_min_size |= kv.first == "min_size";
  CHECK(has_min_size);
  // A required option (channels) stops the builder; what it read is still listed.
  auto se = oc::models().option_defaults("se");
  CHECK(!se.empty());
}

TEST_CASE("core::call: an override runs in place of a submodule, and removing it restores the C++ path") {
  auto net = osteonet::models::create_model("resnet18", {/*num_classes=*/4});
  auto& m = net->module();
  m.eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 3, 64, 64});
  const auto reference = net->forward(x);
  auto fc = m.named_modules()["fc"];
  int calls = 0;
  oc::CallOverrides::instance().set(fc, [&](const std::vector<torch::Tensor>& in) {
    ++calls;
    return std::vector<torch::Tensor>{torch::zeros({in[0].size(0), 7})};
  });
  CHECK(net->forward(x).sizes() == torch::IntArrayRef({2, 7}));
  CHECK(calls == 1);
  // Inside a Sequential: found by walking the container.
  auto conv = m.named_modules()["layer3.1.conv2"];
  int conv_calls = 0;
  oc::CallOverrides::instance().set(conv, [&](const std::vector<torch::Tensor>& in) {
    ++conv_calls;
    return std::vector<torch::Tensor>{conv->as<torch::nn::Conv2d>()->forward(in[0])};
  });
  oc::CallOverrides::instance().erase(fc.get());
  CHECK(torch::equal(net->forward(x), reference));  // same ops through the override, the same numbers
  CHECK(conv_calls == 1);
  oc::CallOverrides::instance().erase(conv.get());
  CHECK(oc::CallOverrides::instance().empty());
  CHECK(torch::equal(net->forward(x), reference));
  // A stale entry never applies to a module that reuses a freed address.
  {
    auto tmp = std::make_shared<torch::nn::LinearImpl>(2, 2);
    oc::CallOverrides::instance().set(tmp, [](const std::vector<torch::Tensor>&) { return std::vector<torch::Tensor>{}; });
    const auto* raw = tmp.get();
    tmp.reset();
    CHECK_FALSE(oc::overridden(raw));
    oc::CallOverrides::instance().erase(raw);
  }
  // A replacement returning the wrong number of tensors is one clear error.
  oc::CallOverrides::instance().set(fc, [](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{in[0], in[0]}; });
  CHECK(what([&] { net->forward(x); }).find("returned 2 tensors") != std::string::npos);
  oc::CallOverrides::instance().erase(fc.get());
}

TEST_CASE("backbones: reset_classifier and the stem/head paths") {
  for (const std::string name : {"resnet18", "vgg16", "mobilenet_v2", "densenet121", "dxa_cnn21", "inception_v3"}) {
    CAPTURE(name);
    auto net = osteonet::models::create_model(name, {/*num_classes=*/5});
    net->eval();
    torch::NoGradGuard ng;
    const int64_t s = name == "inception_v3" ? 80 : 64;
    auto x = torch::randn({1, 3, s, s});
    CHECK(net->forward(x).size(1) == 5);
    net->reset_classifier(2);
    CHECK(net->num_classes() == 2);
    CHECK(net->forward(x).size(1) == 2);
    CHECK(net->module().named_modules().contains(net->head_path()));
    CHECK(net->module().named_modules().contains(net->stem_path()));
    net->reset_classifier(0);
    CHECK(net->head_path().empty());
    CHECK(net->forward(x).dim() == 2);
  }
}
