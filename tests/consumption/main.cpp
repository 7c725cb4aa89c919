// Uses the installed osteonet the way a C++ project would: registry, typed options, feature maps.
#include <osteonet/osteonet.hpp>

#include <iostream>

int main() {
  namespace ob = osteonet::backbones;
  auto net = ob::dsnet_resnet50(ob::ResNetOptions().num_classes(3).in_chans(1));
  net->eval();
  torch::NoGradGuard no_grad;
  auto logits = net->forward(torch::randn({2, 1, 64, 64}));
  auto feats = net->forward_intermediates(torch::randn({1, 1, 64, 64}));
  auto model = osteonet::models::create_model("mobilenet_v2", {});
  auto detector = osteonet::core::models().create("fasterrcnn", osteonet::OptionMap({{"num_classes", int64_t{3}}}));
  const bool ok = logits.sizes() == torch::IntArrayRef({2, 3}) && feats.size() == net->feature_info().size() &&
                  model->feature_info().back().channels == 1280 && detector != nullptr;
  std::cout << "osteonet " << osteonet::version() << " consumer: logits " << logits.sizes() << " features "
            << feats.size() << (ok ? " OK" : " FAILED") << std::endl;
  return ok ? 0 : 1;
}
