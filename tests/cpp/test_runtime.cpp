// Inference runtime: Conv+BN folding and InferenceSession (CPU; CUDA graphs need a CUDA build + GPU).
#include "testing.hpp"
#include <torch/torch.h>

#include <thread>

#include <osteonet/backbones/registry.hpp>
#include <osteonet/detection/box_ops.hpp>
#include <osteonet/detection/faster_rcnn.hpp>
#include <osteonet/runtime/detector_session.hpp>
#include <osteonet/runtime/inference_session.hpp>

namespace rt = osteonet::runtime;

namespace {
/// Random BatchNorm statistics and affine parameters, so that folding is not the identity.
void perturb(osteonet::backbones::BackboneImpl& net) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  for (auto& kv : net.module().named_buffers())
    if (kv.key().find("running_var") != std::string::npos) kv.value().copy_(1.0 + torch::rand_like(kv.value()));
    else if (kv.key().find("running_mean") != std::string::npos) kv.value().copy_(0.1 * torch::randn_like(kv.value()));
  for (auto& p : net.module().parameters()) p.add_(0.05 * torch::randn_like(p));
}
/// Probabilities within 1e-4; logits within 1e-3 of their scale.
bool close(const torch::Tensor& got, const torch::Tensor& expected) {
  const double scale = std::max(1.0, expected.abs().max().item<double>());
  return (got.softmax(1) - expected.softmax(1)).abs().max().item<double>() < 1e-4 &&
         (got - expected).abs().max().item<double>() <= 1e-3 * scale;
}
}  // namespace

TEST_CASE("fold_batchnorm keeps the eval output and makes the norms identities") {
  auto net = osteonet::models::create_model("resnet18", {/*num_classes=*/10});
  perturb(*net);
  net->eval();
  auto x = torch::randn({2, 3, 64, 64});
  torch::NoGradGuard no_grad;
  auto expected = net->forward(x);
  auto copy = std::dynamic_pointer_cast<osteonet::backbones::BackboneImpl>(net->module().clone());
  REQUIRE(copy != nullptr);
  copy->eval();
  CHECK(rt::fold_batchnorm(copy->module()) == 20);  // stem + 16 block convs + 3 downsamples
  CHECK(close(copy->forward(x), expected));
  // The original is untouched.
  CHECK(torch::equal(net->forward(x), expected));
}

TEST_CASE("InferenceSession float32 equals eager, leaves the model unchanged, caches shapes") {
  auto net = osteonet::models::create_model("resnet18", {/*num_classes=*/5});
  perturb(*net);
  net->train();
  std::vector<torch::Tensor> before;
  for (auto& t : net->module().parameters()) before.push_back(t.clone());
  auto x = torch::randn({2, 3, 64, 64});
  rt::InferenceSession session(*net, x, rt::InferenceSessionOptions().warmup(1));
  CHECK(session.dtype() == "float32");
  CHECK(session.mode() == "frozen");
  CHECK(session.accuracy() < 1e-4);
  CHECK(net->is_training());
  auto params = net->module().parameters();
  for (size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(params[i], before[i]));

  net->eval();
  torch::NoGradGuard no_grad;
  auto y = torch::randn({3, 3, 72, 64});
  CHECK(close(session(y), net->forward(y)));
  CHECK(close(session(x), net->forward(x)));
  CHECK(session.cached_shapes().size() == 2);

  // Several threads at once.
  std::vector<torch::Tensor> outs(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { outs[i] = session(x); });
  for (auto& t : threads) t.join();
  for (auto& o : outs) CHECK(close(o, net->forward(x)));
}

TEST_CASE("InferenceSession bfloat16 probabilities are within 1e-2 of float32") {
  auto net = osteonet::models::create_model("mobilenet_v2", {/*num_classes=*/4});
  perturb(*net);
  auto x = torch::randn({1, 3, 64, 64});
  rt::InferenceSession session(*net, x, rt::InferenceSessionOptions().dtype("bfloat16").warmup(0));
  CHECK(session.dtype() == "bfloat16");
  CHECK(session.accuracy() < 1e-2);
  net->eval();
  torch::NoGradGuard no_grad;
  auto out = session(x);
  CHECK((out.scalar_type() == torch::kFloat));
  CHECK((out.softmax(1) - net->forward(x).softmax(1)).abs().max().item<double>() < 1e-2);
}

TEST_CASE("InferenceSession bfloat16 with float32 ends: every backbone's stem and classifier run in float32") {
  for (const auto& name : osteonet::models::list_models()) {
    CAPTURE(name);
    for (const bool features : {false, true}) {
      CAPTURE(features);
      auto net = osteonet::models::create_model(name, {/*num_classes=*/4});
      perturb(*net);
      const int64_t s = name == "inception_v3" ? 96 : 64;
      auto x = torch::randn({1, 3, s, s});
      rt::InferenceSession session(
          *net, x,
          rt::InferenceSessionOptions().dtype("bfloat16").float32_ends(true).features(features).warmup(0)
              .tolerance_bfloat16(5e-2));  // random weights; what matters here is where float32 runs
      CHECK(session.dtype() == "bfloat16");
      std::vector<std::string> ends{net->stem_path()};
      if (!features) ends.push_back(net->head_path());
      CHECK(session.float32_modules() == ends);
      CHECK(session.accuracy() < 5e-2);
      torch::NoGradGuard no_grad;
      for (const auto& out : {session(x), session.forward_eager(x)}) {
        CHECK((out.scalar_type() == torch::kFloat));
        // float32 logits are not bfloat16 values (a bfloat16 classifier's are, cast to float32).
        const bool rounded = torch::equal(out, out.to(torch::kBFloat16).to(torch::kFloat));
        CHECK(rounded == features);
      }
      // The float32 stem sees the input unrounded: rounding it to bfloat16 first changes the result.
      const auto xr = x.to(torch::kBFloat16).to(torch::kFloat);
      CHECK_FALSE(torch::equal(session(x), session(xr)));
    }
  }
}

TEST_CASE("InferenceSession: bfloat16 rounds the input and the logits; float32 ends is refused in float32") {
  auto net = osteonet::models::create_model("resnet18", {/*num_classes=*/3});
  perturb(*net);
  auto x = torch::randn({1, 3, 64, 64});
  rt::InferenceSession full(*net, x, rt::InferenceSessionOptions().dtype("bfloat16").warmup(0));
  CHECK(full.float32_modules().empty());
  torch::NoGradGuard no_grad;
  const auto out = full(x);
  CHECK(torch::equal(out, out.to(torch::kBFloat16).to(torch::kFloat)));
  CHECK(torch::equal(out, full(x.to(torch::kBFloat16).to(torch::kFloat))));
  CHECK_THROWS_WITH_AS(rt::InferenceSession(*net, x, rt::InferenceSessionOptions().float32_ends(true)),
                       doctest::Contains("float32_ends"), osteonet::ValueError);
}

TEST_CASE("InferenceSession errors") {
  auto net = osteonet::models::create_model("resnet18", {/*num_classes=*/3});
  auto x = torch::randn({1, 3, 64, 64});
  CHECK_THROWS_AS(rt::InferenceSession(*net, x, rt::InferenceSessionOptions().dtype("float16")), osteonet::ValueError);
  if (!torch::cuda::is_available())
    CHECK_THROWS_AS(rt::InferenceSession(*net, x, rt::InferenceSessionOptions().device("cuda")), osteonet::ValueError);
  CHECK_THROWS_AS(rt::InferenceSession(*net, torch::ones({1, 3, 64, 64}, torch::kLong)), osteonet::TypeError);
  rt::InferenceSession session(*net, x, rt::InferenceSessionOptions().warmup(0).freeze(false));
  CHECK(session.mode() == "eager");
  CHECK_THROWS_AS(session(torch::randn({1, 1, 64, 64})), osteonet::ValueError);
  CHECK_THROWS_AS(session(torch::randn({1, 3, 64, 64}, torch::kDouble)), osteonet::TypeError);
}

namespace {
/// A ResNet-18-FPN Faster R-CNN at 160 px with random BatchNorm statistics and peaked heads, so that
/// it detects boxes whose scores are well apart.
osteonet::detection::FasterRCNN small_detector() {
  torch::manual_seed(3);
  osteonet::detection::FasterRCNNConfig c;
  c.backbone = "resnet18";
  c.num_classes = 3;
  c.options = osteonet::OptionMap({{"min_size", int64_t{160}}, {"max_size", int64_t{160}}});
  auto det = osteonet::detection::fasterrcnn(c);
  torch::NoGradGuard no_grad;
  for (auto& kv : det->named_buffers())
    if (kv.key().find("running_var") != std::string::npos) kv.value().copy_(0.5 + torch::rand_like(kv.value()));
    else if (kv.key().find("running_mean") != std::string::npos) kv.value().copy_(0.1 * torch::randn_like(kv.value()));
  auto& cls = det->roi_heads->box_predictor->cls_score;
  cls->weight.mul_(20);
  cls->bias.copy_(2 * torch::randn_like(cls->bias));
  for (auto& kv : det->rpn->named_parameters())
    if (kv.key() == "head.cls_logits.weight") kv.value().mul_(20);
  det->eval();
  return det;
}
/// Every reference detection has one of `got` with the same label, IoU > 0.99 and score within 1e-3.
bool same_detections(const osteonet::detection::Detection& got, const osteonet::detection::Detection& ref) {
  if (got.boxes.size(0) != ref.boxes.size(0) || ref.boxes.size(0) == 0) return false;
  auto iou = osteonet::detection::box_iou(ref.boxes, got.boxes);
  auto label = ref.labels.unsqueeze(1) == got.labels.unsqueeze(0);
  auto score = (ref.scores.unsqueeze(1) - got.scores.unsqueeze(0)).abs() < 1e-3;
  return ((iou > 0.99) & label & score).any(1).all().item<bool>();
}
}  // namespace

TEST_CASE("DetectorSession float32 equals the detector's eval forward and caches padded shapes") {
  auto det = small_detector();
  torch::manual_seed(4);
  std::vector<torch::Tensor> images{torch::rand({3, 160, 160}), torch::rand({3, 128, 160})};
  rt::DetectorSession session(*det, images, rt::InferenceSessionOptions().warmup(0));
  CHECK(session.mode() == "frozen");
  CHECK(session.dtype() == "float32");
  CHECK(session.accuracy() < 1e-4);
  CHECK(session.folded() == 20);
  CHECK((session.cached_shapes() == std::vector<std::vector<int64_t>>{{2, 3, 160, 160}}));
  torch::NoGradGuard no_grad;
  auto expected = det->forward(images).detections;
  auto got = session(images);
  REQUIRE(got.size() == 2);
  CHECK(same_detections(got[0], expected[0]));
  CHECK(same_detections(got[1], expected[1]));
  CHECK_THROWS_AS(session({}), osteonet::ValueError);
  CHECK_THROWS_AS(session({torch::rand({3, 64, 64}, torch::kDouble)}), osteonet::TypeError);
  CHECK_THROWS_AS(rt::DetectorSession(*det, images, rt::InferenceSessionOptions().features(true)), osteonet::ValueError);
  CHECK_THROWS_WITH_AS(
      rt::DetectorSession(*det, images, rt::InferenceSessionOptions().dtype("bfloat16").float32_ends(true)),
      doctest::Contains("float32_ends applies to backbones"), osteonet::ValueError);
  // The default options run backbone + FPN eagerly on the CPU (docs/runtime.md, "Detectors").
  rt::DetectorSession eager(*det, images);
  CHECK(eager.mode() == "eager");
  CHECK(eager.cached_shapes().empty());
  auto again = eager(images);
  CHECK(same_detections(again[0], expected[0]));
  CHECK(same_detections(again[1], expected[1]));
}

#if defined(OSTEONET_WITH_CUDA)
TEST_CASE("CUDA graph replay equals eager within 1e-6 (CUDA builds with a GPU only)") {
  if (!torch::cuda::is_available()) return;
  auto net = osteonet::models::create_model("resnet18", {/*num_classes=*/7});
  perturb(*net);
  auto x = torch::randn({2, 3, 64, 64}).cuda();
  rt::InferenceSession graphed(*net, x, rt::InferenceSessionOptions().device("cuda"));
  rt::InferenceSession eager(*net, x, rt::InferenceSessionOptions().device("cuda").cuda_graph(false));
  CHECK(graphed.mode() == "cuda_graph");
  for (int i = 0; i < 3; ++i) {
    auto y = torch::randn({2, 3, 64, 64}).cuda();
    CHECK((graphed(y) - eager(y)).abs().max().item<double>() <= 1e-6);
  }
}
#endif
