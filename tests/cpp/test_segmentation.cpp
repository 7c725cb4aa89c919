// doctest: segmentation (segmentation/*.hpp).
#include "testing.hpp"

#include <osteonet/segmentation/segmentation.hpp>

namespace sg = osteonet::segmentation;

TEST_CASE("U-Net and U-Net++ keep odd input sizes") {
  sg::UNet unet(sg::UNetOptions().in_chans(1).num_classes(4).base_channels(4).depth(3));
  sg::UNetPlusPlus upp(sg::UNetPlusPlusOptions().in_chans(1).num_classes(4).channels({4, 8, 16}).deep_supervision(true));
  unet->eval();
  upp->eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({1, 1, 37, 29});
  CHECK(unet->forward(x).sizes() == torch::IntArrayRef({1, 4, 37, 29}));
  CHECK(upp->forward(x).sizes() == torch::IntArrayRef({1, 4, 37, 29}));
  CHECK(upp->forward_all(x).size() == 2);
  auto r18 = sg::create_segmenter("unet", osteonet::OptionMap({{"encoder", std::string("resnet18")}}));
  r18->module().eval();
  CHECK(r18->forward(torch::randn({1, 1, 65, 70})).sizes() == torch::IntArrayRef({1, 2, 65, 70}));
}

TEST_CASE("segmentation errors") {
  CHECK_THROWS_AS(sg::create_segmenter("unet++"), osteonet::ValueError);
  CHECK_THROWS_AS(sg::dice_loss(torch::randn({1, 3, 4, 4}), torch::full({1, 4, 4}, 3, torch::kLong)), osteonet::ValueError);
  sg::UNet unet(sg::UNetOptions().base_channels(4).depth(2));
  CHECK_THROWS_AS(unet->forward(torch::randn({1, 2, 16, 16})), osteonet::ValueError);
  CHECK_THROWS_AS(sg::mat_region(torch::randn({1, 4, 4}), torch::zeros({4, 4})), osteonet::ValueError);
}

TEST_CASE("sliding window with one window equals the model") {
  sg::UNet unet(sg::UNetOptions().base_channels(4).depth(2));
  unet->eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({1, 1, 24, 20});
  auto fn = [&](const torch::Tensor& t) { return unet->forward(t); };
  CHECK(torch::equal(sg::sliding_window_inference(fn, x, sg::SlidingWindowOptions().window({32, 32})), unet->forward(x)));
  auto tiled = sg::sliding_window_inference(fn, x, sg::SlidingWindowOptions().window({16, 16}).overlap(0.5));
  CHECK(tiled.sizes() == torch::IntArrayRef({1, 2, 24, 20}));
}
