// Example: build DSNet's backbone for 3 WHO classes on grey CT, run a batch, list its feature maps.
#include <osteonet/osteonet.hpp>

#include <iostream>

int main() {
  namespace ob = osteonet::backbones;
  // DS options the paper leaves open are typed fields (see attention/dual_selective.hpp).
  auto ds = osteonet::attention::DualSelectiveOptions().reduction(16).gate("sigmoid");
  auto net = ob::dsnet_resnet50(ob::ResNetOptions().num_classes(3).in_chans(1), ds);
  net->eval();
  torch::NoGradGuard no_grad;
  auto probs = torch::softmax(net->forward(torch::randn({4, 1, 224, 224})), 1);
  std::cout << "class probabilities " << probs.sizes() << "\n";
  for (const auto& f : net->feature_info())
    std::cout << "  " << f.name << ": " << f.channels << " channels, stride " << f.stride << "\n";
  // The same model by name, as the Python API builds it.
  osteonet::models::ModelConfig cfg;
  cfg.num_classes = 3;
  cfg.attention = "se";
  auto se = osteonet::models::create_model("resnet50", cfg);
  std::cout << "resnet50+se parameters: " << se->parameters().size() << " tensors\n";
}
