// C++ latency of every registered backbone (eval, no grad): median and p90 over repeated runs.
// Usage: bench_backbones [batch=1] [repeats=10] [model ...]
#include <osteonet/osteonet.hpp>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>

int main(int argc, char** argv) {
  const int64_t batch = argc > 1 ? std::stoll(argv[1]) : 1;
  const int repeats = argc > 2 ? std::stoi(argv[2]) : 10;
  std::vector<std::string> names;
  for (int i = 3; i < argc; ++i) names.emplace_back(argv[i]);
  if (names.empty()) names = osteonet::models::list_models();
  torch::NoGradGuard no_grad;
  std::cout << "model,batch,median_ms,p90_ms,threads=" << torch::get_num_threads() << "\n";
  for (const auto& n : names) {
    auto m = osteonet::models::create_model(n);
    m->eval();
    const int64_t s = n == "inception_v3" ? 299 : 224;
    auto x = torch::randn({batch, 3, s, s});
    m->forward(x);  // warm-up
    std::vector<double> t;
    for (int r = 0; r < repeats; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      m->forward(x);
      t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    std::cout << n << "," << batch << "," << std::fixed << std::setprecision(2) << t[t.size() / 2] << ","
              << t[std::min(t.size() - 1, t.size() * 9 / 10)] << std::endl;
  }
}
