// Optimisers by name (SGD with momentum/Nesterov, Adam, AdamW) over parameter groups, and rate access.
#pragma once

#include <torch/torch.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/core/options.hpp"
#include "osteonet/core/registry.hpp"

namespace osteonet::train {

/// Hyper-parameters shared by the optimisers (each reads the ones it has; defaults are torch.optim's,
/// except momentum 0.9, the value every paper of the mission trains SGD with).
struct OptimizerOptions {
  /// Base learning rate (a group may scale it with ParamGroup::lr_scale).
  TORCH_ARG(double, lr) = 0.01;
  /// SGD momentum.
  TORCH_ARG(double, momentum) = 0.9;
  /// SGD Nesterov momentum (needs momentum > 0).
  TORCH_ARG(bool, nesterov) = false;
  /// L2 penalty added to the gradient (SGD, Adam); decoupled decay for AdamW (set it: 0 here, torch.optim.AdamW defaults to 0.01).
  TORCH_ARG(double, weight_decay) = 0.0;
  /// Adam/AdamW moment coefficients and epsilon.
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-8;
};

/// Parameters trained with `lr_scale` times the base rate (e.g. 0.1 for a pre-trained backbone).
struct ParamGroup {
  std::vector<torch::Tensor> params;
  double lr_scale = 1.0;
};

/// Optimisers by name (core::Registry): keyword options lr, momentum, nesterov, weight_decay, beta1,
/// beta2, eps (defaults from OptimizerOptions) over parameter groups.
using OptimizerRegistry =
    core::Registry<std::shared_ptr<torch::optim::Optimizer>, const std::vector<ParamGroup>&>;

inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, const std::vector<ParamGroup>& groups,
                                                        const OptimizerOptions& o);

inline OptimizerRegistry& optimizers() {
  static OptimizerRegistry registry("optimizer");
  static const bool filled = [] {
    auto& r = registry;
    auto from = [](const OptionMap& kw) {
      OptimizerOptions d;
      return d.lr(kw.get_double("lr", d.lr()))
          .momentum(kw.get_double("momentum", d.momentum()))
          .nesterov(kw.get_bool("nesterov", d.nesterov()))
          .weight_decay(kw.get_double("weight_decay", d.weight_decay()))
          .beta1(kw.get_double("beta1", d.beta1()))
          .beta2(kw.get_double("beta2", d.beta2()))
          .eps(kw.get_double("eps", d.eps()));
    };
    const std::vector<std::array<std::string, 3>> kinds{
        {"sgd", "SGD with momentum (0.9) and optional Nesterov", "torch.optim.SGD"},
        {"adam", "Adam", "torch.optim.Adam"},
        {"adamw", "AdamW (decoupled weight decay)", "torch.optim.AdamW"}};
    for (const auto& k : kinds) {
      const std::string name = k[0];
      r.add({name, "optimizer", k[1], k[2], [name, from](const OptionMap& kw, const std::vector<ParamGroup>& groups) {
               return std::shared_ptr<torch::optim::Optimizer>(make_optimizer(name, groups, from(kw)));
             }});
    }
    return true;
  }();
  (void)filled;
  return registry;
}

/// Names make_optimizer accepts.
inline std::vector<std::string> optimizer_names() { return optimizers().names(); }

/// An optimiser by name over parameter groups. Parameters with requires_grad false are left out (so
/// frozen parts cost no state); a group left empty by that is dropped.
inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, const std::vector<ParamGroup>& groups,
                                                               const OptimizerOptions& o) {
  optimizers().at(name);  // unknown names: "did you mean"
  OSTEONET_CHECK(o.lr() >= 0, "make_optimizer: lr must be >= 0, got lr=", o.lr());
  OSTEONET_CHECK(o.weight_decay() >= 0, "make_optimizer: weight_decay must be >= 0, got weight_decay=", o.weight_decay());
  std::vector<torch::optim::OptimizerParamGroup> pg;
  for (const auto& g : groups) {
    OSTEONET_CHECK(g.lr_scale >= 0, "make_optimizer: lr_scale must be >= 0, got lr_scale=", g.lr_scale);
    std::vector<torch::Tensor> ps;
    for (const auto& p : g.params)
      if (p.requires_grad()) ps.push_back(p);
    if (ps.empty()) continue;
    const double lr = o.lr() * g.lr_scale;
    if (name == "sgd") {
      OSTEONET_CHECK(!o.nesterov() || o.momentum() > 0, "make_optimizer: Nesterov needs momentum > 0, got momentum=", o.momentum());
      pg.emplace_back(ps, std::make_unique<torch::optim::SGDOptions>(
                              torch::optim::SGDOptions(lr).momentum(o.momentum()).nesterov(o.nesterov()).weight_decay(o.weight_decay())));
    } else if (name == "adam") {
      pg.emplace_back(ps, std::make_unique<torch::optim::AdamOptions>(
                              torch::optim::AdamOptions(lr).betas({o.beta1(), o.beta2()}).eps(o.eps()).weight_decay(o.weight_decay())));
    } else if (name == "adamw") {
      pg.emplace_back(ps, std::make_unique<torch::optim::AdamWOptions>(
                              torch::optim::AdamWOptions(lr).betas({o.beta1(), o.beta2()}).eps(o.eps()).weight_decay(o.weight_decay())));
    }
  }
  OSTEONET_CHECK(!pg.empty(), "make_optimizer: no parameter requires a gradient, got ", groups.size(), " group(s)");
  if (name == "sgd") return std::make_unique<torch::optim::SGD>(pg, torch::optim::SGDOptions(o.lr()));
  if (name == "adam") return std::make_unique<torch::optim::Adam>(pg, torch::optim::AdamOptions(o.lr()));
  return std::make_unique<torch::optim::AdamW>(pg, torch::optim::AdamWOptions(o.lr()));
}

/// One group of every parameter of `module` at the base rate.
inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, torch::nn::Module& module,
                                                               const OptimizerOptions& o = {}) {
  return make_optimizer(name, std::vector<ParamGroup>{{module.parameters(), 1.0}}, o);
}

/// The current rate of every parameter group.
inline std::vector<double> get_lrs(const torch::optim::Optimizer& opt) {
  std::vector<double> out;
  for (const auto& g : opt.param_groups()) out.push_back(g.options().get_lr());
  return out;
}

/// Sets the rate of every parameter group (one value per group).
inline void set_lrs(torch::optim::Optimizer& opt, const std::vector<double>& lrs) {
  OSTEONET_CHECK(lrs.size() == opt.param_groups().size(), "set_lrs: one rate per parameter group, got ", lrs.size(),
                 " rates for ", opt.param_groups().size(), " groups");
  for (std::size_t i = 0; i < lrs.size(); ++i) opt.param_groups()[i].options().set_lr(lrs[i]);
}

}  // namespace osteonet::train
