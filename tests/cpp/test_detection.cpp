// Detection parts: NMS, RoIAlign, box coder, anchors, and the Faster R-CNN (shapes, losses, errors).
// Parity with torchvision (values, gradients, detections) is tested in tests/python/test_detection_*.py.
#include "testing.hpp"
#include <torch/torch.h>

#include <osteonet/detection/faster_rcnn.hpp>

#include <cmath>

namespace det = osteonet::detection;

TEST_CASE("nms keeps the best of overlapping boxes, in score order") {
  auto boxes = torch::tensor({0.f, 0.f, 10.f, 10.f, 1.f, 1.f, 11.f, 11.f, 20.f, 20.f, 30.f, 30.f}).view({3, 4});
  auto scores = torch::tensor({0.5f, 0.9f, 0.7f});
  auto keep = det::nms(boxes, scores, 0.5);
  REQUIRE(keep.numel() == 2);
  CHECK(keep[0].item<int64_t>() == 1);
  CHECK(keep[1].item<int64_t>() == 2);
  // Another category: nothing suppressed.
  auto kb = det::batched_nms(boxes, scores, torch::tensor({0, 1, 0}, torch::kLong), 0.5);
  CHECK(kb.numel() == 3);
  // The tensor-op path (blocks smaller than the input or not) equals the CPU kernel.
  auto b = torch::rand({300, 2}) * 100;
  auto many = torch::cat({b, b + torch::rand({300, 2}) * 30 + 1}, 1);
  auto s = torch::rand({300});
  auto ref = det::nms(many, s, 0.4);
  CHECK(ref.numel() > 10);
  CHECK(torch::equal(det::nms_blocked(many, s, 0.4, 7), ref));
  CHECK(torch::equal(det::nms_blocked(many, s, 0.4, 1024), ref));
  CHECK(torch::equal(det::nms(many.to(torch::kDouble), s.to(torch::kDouble), 0.4), ref));
}

TEST_CASE("roi_align: CPU kernel equals the tensor-op path (values, gradients, second order)") {
  torch::manual_seed(5);
  auto x = torch::randn({2, 3, 13, 17}, torch::kDouble);
  auto xy = torch::rand({25, 2}, torch::kDouble) * 110 - 10;
  auto wh = torch::rand({25, 2}, torch::kDouble) * 50 + 0.2;
  auto batch = torch::randint(0, 2, {25, 1}).to(torch::kDouble);
  auto rois = torch::cat({batch, xy, xy + wh}, 1);
  for (int64_t sr : {2, -1}) {
    for (bool aligned : {false, true}) {
      auto a = x.clone().requires_grad_(), b = x.clone().requires_grad_();
      auto ya = det::roi_align(a, rois, {5, 4}, 0.125, sr, aligned);
      auto yb = det::detail_roi::roi_align_ops(b, rois, {5, 4}, 0.125, sr, aligned);
      CHECK(torch::allclose(ya, yb, 1e-10, 1e-10));
      auto w = torch::randn(ya.sizes(), torch::kDouble);
      auto ga = torch::autograd::grad({(ya * w).sum()}, {a}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
      auto gb = torch::autograd::grad({(yb * w).sum()}, {b}, {}, true, true)[0];
      CHECK(torch::allclose(ga, gb, 1e-10, 1e-10));
      // The output is linear in the input: the gradient w.r.t. w of <grad, v> is roi_align(v).
      auto v = torch::randn(x.sizes(), torch::kDouble);
      auto wa = w.clone().requires_grad_();
      auto gw = torch::autograd::grad({(ya * wa).sum()}, {a}, {}, true, true)[0];
      auto dw = torch::autograd::grad({(gw * v).sum()}, {wa})[0];
      CHECK(torch::allclose(dw, det::roi_align(v, rois, {5, 4}, 0.125, sr, aligned), 1e-10, 1e-10));
    }
  }
  CHECK_THROWS(det::roi_align(x, torch::tensor({{2.0, 0.0, 0.0, 4.0, 4.0}}, torch::kDouble), {2, 2}));
}

TEST_CASE("roi_align: the channels-last kernels equal the NCHW kernels bit for bit") {
  torch::manual_seed(6);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    auto x = torch::randn({2, 16, 13, 17}, dtype);
    auto xy = torch::rand({40, 2}, dtype) * 110 - 10;  // some RoIs partly or wholly outside the map
    auto wh = torch::rand({40, 2}, dtype) * 50 + 0.2;
    auto rois = torch::cat({torch::randint(0, 2, {40, 1}).to(dtype), xy, xy + wh}, 1).contiguous();
    auto grad = torch::randn({40, 16, 5, 4}, dtype);
    for (int64_t sr : {2, -1}) {
      for (bool aligned : {false, true}) {
        auto a = torch::empty({40, 16, 5, 4}, x.options()), b = torch::empty_like(a);
        auto ga = torch::zeros_like(x), gb = torch::zeros_like(x).contiguous(torch::MemoryFormat::ChannelsLast);
        AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "test", [&] {
          const auto s = scalar_t(0.125);
          det::detail_roi::roi_align_forward_cpu<scalar_t>(x, rois, a, s, 5, 4, sr, aligned);
          det::detail_roi::roi_align_forward_cpu<scalar_t>(x.contiguous(torch::MemoryFormat::ChannelsLast), rois, b, s,
                                                           5, 4, sr, aligned, /*channels_last=*/true);
          det::detail_roi::roi_align_backward_cpu<scalar_t>(grad, rois, ga, s, 5, 4, sr, aligned);
          det::detail_roi::roi_align_backward_cpu<scalar_t>(grad, rois, gb, s, 5, 4, sr, aligned, true);
        });
        CHECK(torch::equal(a, b));
        CHECK(torch::equal(ga, gb));
        // The public function (which picks the channels-last kernels for these 40 RoIs) on either layout.
        CHECK(det::detail_roi::roi_align_channels_last(x.sizes(), 40, 5, 4, sr));
        CHECK_FALSE(det::detail_roi::roi_align_channels_last(x.sizes(), 1, 5, 4, sr));
        CHECK(det::detail_roi::roi_align_channels_last(x.sizes(), 1, 5, 4, sr, /*stored_channels_last=*/true));
        auto xc = x.contiguous(torch::MemoryFormat::ChannelsLast).requires_grad_();
        auto y = det::roi_align(xc, rois, {5, 4}, 0.125, sr, aligned);
        CHECK(torch::equal(y, a));
        (y * grad).sum().backward();
        CHECK(torch::equal(xc.grad(), ga));
      }
    }
  }
}

TEST_CASE("roi_align of a constant map is the constant; gradients reach the input") {
  auto x = torch::full({1, 2, 16, 16}, 3.0).requires_grad_();
  auto rois = torch::tensor({0.0, 2.0, 2.0, 10.0, 12.0, 0.0, 0.0, 0.0, 15.0, 15.0}).view({2, 5});
  auto y = det::roi_align(x, rois, {7, 7}, 1.0, 2);
  CHECK(y.sizes() == torch::IntArrayRef({2, 2, 7, 7}));
  CHECK(torch::allclose(y, torch::full_like(y, 3.0)));
  y.sum().backward();
  CHECK(x.grad().sum().item<double>() == doctest::Approx(2 * 2 * 49).epsilon(1e-6));
}

TEST_CASE("box coder round trip and anchors") {
  det::BoxCoder coder({10, 10, 5, 5});
  auto props = torch::tensor({0.f, 0.f, 10.f, 20.f, 5.f, 5.f, 50.f, 40.f}).view({2, 4});
  auto gt = torch::tensor({1.f, 2.f, 12.f, 18.f, 0.f, 8.f, 45.f, 44.f}).view({2, 4});
  auto codes = coder.encode_single(gt, props);
  CHECK(torch::allclose(coder.decode_single(codes, props), gt, 1e-4, 1e-4));
  auto base = det::AnchorGeneratorImpl::generate_anchors({32}, {0.5, 1.0, 2.0});
  CHECK(torch::equal(base.select(0, 1), torch::tensor({-16.f, -16.f, 16.f, 16.f})));
}

TEST_CASE("Faster R-CNN: torchvision's parameter names, eval detections and training losses") {
  torch::manual_seed(0);
  osteonet::OptionMap o({{"min_size", int64_t{96}}, {"max_size", int64_t{128}}});
  auto model = det::fasterrcnn_mobilenet_v3_large_fpn(3, o);
  auto params = model->named_parameters();
  CHECK(params.contains("backbone.body.0.0.weight"));
  CHECK(params.contains("backbone.fpn.inner_blocks.0.0.weight"));
  CHECK(params.contains("rpn.head.conv.0.0.weight"));
  CHECK(params.contains("roi_heads.box_predictor.bbox_pred.weight"));
  std::vector<torch::Tensor> images{torch::rand({3, 100, 120}), torch::rand({3, 90, 80})};
  model->eval();
  {
    torch::NoGradGuard g;
    auto out = model->forward(images);
    REQUIRE(out.detections.size() == 2);
    CHECK(out.detections[0].boxes.size(1) == 4);
    CHECK(out.detections[0].boxes.size(0) == out.detections[0].scores.size(0));
  }
  model->train();
  std::vector<det::Target> targets{{torch::tensor({10.f, 10.f, 60.f, 50.f}).view({1, 4}), torch::tensor({1}, torch::kLong)},
                                   {torch::tensor({5.f, 5.f, 40.f, 70.f}).view({1, 4}), torch::tensor({2}, torch::kLong)}};
  auto losses = model->forward(images, &targets).losses;
  CHECK(losses.size() == 4);
  torch::Tensor total = torch::zeros({});
  for (auto& kv : losses) total = total + kv.second;
  total.backward();
  CHECK(model->roi_heads->box_predictor->cls_score->weight.grad().defined());

  targets[1].boxes = torch::tensor({5.f, 5.f, 5.f, 70.f}).view({1, 4});
  CHECK_THROWS_WITH_AS(model->forward(images, &targets),
                       doctest::Contains("target 1, box 0"), osteonet::ValueError);
  // Integer pixels have no agreed scale, bool labels no class: both refused (issue 17).
  targets[1].boxes = torch::tensor({5.f, 5.f, 40.f, 70.f}).view({1, 4});
  targets[0].labels = torch::tensor({true});
  CHECK_THROWS_WITH_AS(model->forward(images, &targets), doctest::Contains("labels must be integers"), osteonet::TypeError);
  model->eval();
  CHECK_THROWS_WITH_AS(model->forward({torch::zeros({3, 64, 64}, torch::kUInt8)}),
                       doctest::Contains("images must be floating point"), osteonet::TypeError);
}

TEST_CASE("every attention trains inside a detector at one image per batch") {
  for (const char* attn : {"se", "eca", "sk", "ds"}) {
    CAPTURE(attn);
    torch::manual_seed(0);
    auto model = osteonet::core::create<det::FasterRCNNImpl>(
        "fasterrcnn", osteonet::OptionMap({{"backbone", std::string("resnet18")}, {"attention", std::string(attn)},
                                           {"num_classes", int64_t{3}}, {"min_size", int64_t{64}},
                                           {"max_size", int64_t{64}}}));
    model->train();
    std::vector<det::Target> t{{torch::tensor({8.f, 8.f, 40.f, 40.f}).view({1, 4}), torch::tensor({1}, torch::kLong)}};
    torch::Tensor total = torch::zeros({});
    for (auto& kv : model->forward({torch::rand({3, 64, 64})}, &t).losses) total = total + kv.second;
    CHECK(std::isfinite(total.item<double>()));
    total.backward();
  }
}

TEST_CASE("DSNet detectors build on every supported backbone") {
  for (const std::string bb : {"resnet50", "dsnet_resnet50", "vgg16", "mobilenet_v2"}) {
    det::FasterRCNNConfig c;
    c.backbone = bb;
    c.attention = bb == "dsnet_resnet50" ? "ds" : "none";
    c.num_classes = 2;
    c.fpn = bb != "vgg16";
    c.options = osteonet::OptionMap({{"min_size", int64_t{64}}, {"max_size", int64_t{64}}});
    auto m = det::fasterrcnn(c);
    m->eval();
    torch::NoGradGuard g;
    auto out = m->forward({torch::rand({3, 64, 64})});
    CHECK(out.detections.size() == 1);
  }
}
