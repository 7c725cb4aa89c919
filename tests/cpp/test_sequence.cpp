// Seed 002's sequence parts: aggregators on hand-made sequences, padding invariance, the slice
// encoder's head, preprocessing, the scan pipeline and occlusion on an image with a known answer.
// Parity of the LSTM with torch.nn.LSTM and gradient checks are in tests/python/test_sequence.py.
#include "testing.hpp"
#include <torch/torch.h>

#include <osteonet/backbones/registry.hpp>
#include <osteonet/sequence/aggregators.hpp>
#include <osteonet/sequence/occlusion.hpp>
#include <osteonet/sequence/pipeline.hpp>
#include <osteonet/sequence/slice_encoder.hpp>

namespace seq = osteonet::sequence;

TEST_CASE("rule aggregators: exact values on hand-made sequences, padding ignored") {
  // Two scans: 4 slices, and 2 slices followed by padding that would change every answer.
  auto p = torch::tensor({0.1, 0.7, 0.5, 0.2, 0.3, 0.4, 0.99, 0.99}, torch::kDouble).view({2, 4, 1});
  auto len = torch::tensor({4, 2}, torch::kLong);
  auto mx = seq::MaxAggregator()->forward(p, len);
  CHECK(mx[0].item<double>() == doctest::Approx(0.7));
  CHECK(mx[1].item<double>() == doctest::Approx(0.4));
  auto mean = seq::MeanAggregator()->forward(p, len);
  CHECK(mean[0].item<double>() == doctest::Approx(1.5 / 4));
  CHECK(mean[1].item<double>() == doctest::Approx(0.35));
  // 0.5 is a tie with the threshold and votes positive: 2 of 4.
  auto vote = seq::VotingAggregator()->forward(p, len);
  CHECK(vote[0].item<double>() == doctest::Approx(0.5));
  CHECK(vote[1].item<double>() == doctest::Approx(0.0));
  auto vote3 = seq::VotingAggregator(seq::VotingAggregatorOptions().threshold(0.3))->forward(p, len);
  CHECK(vote3[1].item<double>() == doctest::Approx(1.0));
  // Without lengths every step counts.
  CHECK(seq::MaxAggregator()->forward(p, {})[1].item<double>() == doctest::Approx(0.99));
  CHECK_THROWS_AS(seq::MaxAggregator()->forward(p, torch::tensor({5, 2}, torch::kLong)), osteonet::ValueError);
  CHECK_THROWS_AS(seq::MaxAggregator()->forward(torch::rand({2, 4, 3}), len), osteonet::ValueError);
  CHECK_THROWS_AS(seq::create_aggregator("lstn"), osteonet::ValueError);
  CHECK_THROWS_AS(seq::create_aggregator("vote", osteonet::OptionMap({{"treshold", 0.4}})), osteonet::ValueError);
}

TEST_CASE("lengths from a mask") {
  auto mask = torch::tensor({1, 1, 1, 0, 1, 0, 0, 0}).view({2, 4}).to(torch::kBool);
  CHECK(torch::equal(seq::lengths_from_mask(mask), torch::tensor({3, 1}, torch::kLong)));
  CHECK_THROWS_AS(seq::lengths_from_mask(torch::tensor({0, 1}).view({1, 2})), osteonet::ValueError);
}

TEST_CASE("LSTM aggregator: padded batch equals each sequence alone, order matters") {
  torch::manual_seed(0);
  seq::LstmAggregator agg(seq::LstmAggregatorOptions().input_size(5).hidden_size(7));
  agg->eval();
  auto a = torch::randn({6, 5}), b = torch::randn({3, 5});
  auto batch = torch::zeros({2, 6, 5});
  batch[0].copy_(a);
  batch[1].narrow(0, 0, 3).copy_(b);
  batch[1].narrow(0, 3, 3).fill_(100.0);  // padding that would dominate if it were read
  auto out = agg->forward(batch, torch::tensor({6, 3}, torch::kLong));
  auto alone_a = agg->forward(a.unsqueeze(0), {});
  auto alone_b = agg->forward(b.unsqueeze(0), {});
  CHECK(std::abs(out[0].item<double>() - alone_a[0].item<double>()) < 1e-6);
  CHECK(std::abs(out[1].item<double>() - alone_b[0].item<double>()) < 1e-6);
  auto reversed = agg->forward(a.flip(0).unsqueeze(0), {});
  CHECK(std::abs(reversed[0].item<double>() - alone_a[0].item<double>()) > 1e-6);
  auto names = agg->named_parameters();
  CHECK(names.contains("lstm.weight_ih_l0"));
  CHECK(names.contains("lstm.bias_hh_l0"));
  CHECK(names.contains("fc.weight"));
}

TEST_CASE("ovf_resnet34: 512 -> 32 -> 1 head, registry entry, frozen BatchNorm") {
  torch::manual_seed(0);
  auto enc = std::dynamic_pointer_cast<seq::OvfResNet34Impl>(osteonet::models::create_model("ovf_resnet34", {1, 3}));
  REQUIRE(enc);
  auto x = torch::randn({3, 3, 64, 64});
  enc->eval();
  auto logits = enc->forward(x);
  CHECK(logits.sizes() == torch::IntArrayRef({3, 1}));
  auto f = enc->features(x);
  CHECK(f.sizes() == torch::IntArrayRef({3, 32}));
  CHECK(f.min().item<double>() >= 0.0);  // after the ReLU
  CHECK(torch::allclose(enc->head(f), logits));
  CHECK(enc->named_parameters().contains("backbone.layer4.2.conv2.weight"));
  CHECK(enc->named_parameters().contains("bn1.running_mean") == false);
  CHECK(enc->named_buffers().contains("bn1.running_mean"));
  enc->set_batchnorm_frozen(true);
  enc->train();
  CHECK(enc->is_training());
  CHECK_FALSE(enc->bn1->is_training());
  CHECK_FALSE(enc->backbone->bn1.ptr()->is_training());  // bn1 is a Norm2d handle (BatchNorm2d or frozen)
  CHECK_FALSE(enc->bn1->weight.requires_grad());
  CHECK(enc->fc1->is_training());
  auto before = enc->bn1->running_mean.clone();
  enc->forward(x);
  CHECK(torch::equal(before, enc->bn1->running_mean));
  auto headless = osteonet::models::create_model("ovf_resnet34", {0, 1});
  headless->eval();
  CHECK(headless->forward(torch::randn({2, 1, 64, 64})).sizes() == torch::IntArrayRef({2, 32}));
}

TEST_CASE("preprocessing: centre slices, resize, 3 channels, mean subtraction, augmentation") {
  auto r = seq::center_slice_range(100, 0.05);
  CHECK(r.first == 47);
  CHECK(r.second == 5);
  CHECK(seq::center_slice_range(10, 0.05).second == 1);
  CHECK(seq::center_slice_range(10, 0.05, 3).first == 3);
  auto vol = torch::arange(20).to(torch::kFloat).view({20, 1, 1}).expand({20, 8, 8});
  auto sel = seq::select_center_slices(vol, 0.2);
  CHECK(sel.size(0) == 4);
  CHECK(sel[0][0][0].item<float>() == 8.0f);
  auto x = torch::rand({2, 1, 64, 64});
  auto y = seq::resize_slices(x, 32);
  CHECK(y.sizes() == torch::IntArrayRef({2, 1, 32, 32}));
  CHECK(y.mean().item<double>() == doctest::Approx(x.mean().item<double>()).epsilon(1e-3));
  auto rgb = seq::grey_to_rgb(y);
  CHECK(torch::equal(rgb.select(1, 2), y.select(1, 0)));
  auto mean = seq::pixel_mean(x, 32);
  CHECK(torch::allclose(seq::subtract_pixel_mean(y, mean).mean(0), torch::zeros({1, 32, 32}), 1e-6, 1e-6));
  auto ones = torch::ones({2, 1, 16, 16});
  CHECK(torch::allclose(seq::random_rotate_shift(ones, 0.0, 0.0), ones, 1e-5, 1e-5));
}

TEST_CASE("scan pipeline: rule and LSTM aggregators, slice indices of the centre") {
  torch::manual_seed(0);
  seq::OvfResNet34 enc;
  enc->eval();
  auto vol = torch::rand({40, 48, 48});
  for (const std::string name : {"mean", "lstm"}) {
    auto agg = seq::create_aggregator(name);
    agg->eval();
    seq::ScanPipeline pipe(enc.ptr(), agg, seq::ScanPipelineOptions().center_fraction(0.1).image_size(64).chunk_size(3));
    auto out = pipe.predict_volume(vol);
    CHECK(out.slice_probabilities.size(0) == 4);
    CHECK(torch::equal(out.slice_indices, torch::arange(18, 22, torch::kLong)));
    const double p = out.probability.item<double>();
    CHECK((p >= 0.0 && p <= 1.0));
    CHECK(out.positive == (p >= 0.5));
    if (name == "mean")
      CHECK(p == doctest::Approx(out.slice_probabilities.mean().item<double>()));
  }
}

TEST_CASE("occlusion: a model that sees only a bright square gets heat there only") {
  // Probability = mean brightness inside [20, 30) x [40, 50); the patch fills with 0.
  auto model = [](const torch::Tensor& x) {
    return x.narrow(2, 20, 10).narrow(3, 40, 10).mean({1, 2, 3});
  };
  auto img = torch::zeros({1, 64, 64});
  img.narrow(1, 20, 10).narrow(2, 40, 10).fill_(1.0);
  auto r = seq::occlusion_sensitivity(model, img, seq::OcclusionOptions().patch_size(8).stride(4).batch_size(7));
  CHECK(r.base_probability == doctest::Approx(1.0));
  CHECK(r.grid.sizes() == torch::IntArrayRef({15, 15}));
  auto heat = r.heatmap;
  CHECK(heat.narrow(0, 20, 10).narrow(1, 40, 10).min().item<double>() > 0.0);
  auto outside = heat.clone();
  outside.narrow(0, 13, 24).narrow(1, 33, 24).zero_();  // everything a patch over the square can reach
  CHECK(outside.abs().max().item<double>() == 0.0);
  auto peak = heat.argmax().item<int64_t>();
  CHECK((peak / 64 >= 20 && peak / 64 < 30 && peak % 64 >= 40 && peak % 64 < 50));
}
