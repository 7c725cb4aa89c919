// Slice aggregators of seed 002 (Table 1): max pooling, mean pooling, voting and the CNN/LSTM
// aggregator (one LSTM layer, 256 hidden units, dropout 0.2, FC, sigmoid), over padded batches.
#pragma once

#include <torch/torch.h>

#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/core/model_registry.hpp"
#include "osteonet/core/options.hpp"

namespace osteonet::sequence {

/// Checks a padded batch `x` (B x T x D) and its `lengths` (B, int64, 1 <= length <= T). Returns the
/// lengths as an int64 CPU-or-device tensor; an undefined `lengths` means every sequence is T long and
/// comes back undefined: the aggregators then reduce over all T steps without a mask, so that a traced
/// or exported program is plain reductions with B and T free (OpenCV's ONNX importer cannot read a mask
/// computed from the input's shape).
inline torch::Tensor check_padded(const std::string& where, const torch::Tensor& x, const torch::Tensor& lengths,
                                  int64_t feature_dim) {
  OSTEONET_CHECK(x.defined(), where, ": expected an input tensor, got an undefined tensor");
  OSTEONET_CHECK_TYPE(x.is_floating_point(), where, ": expected a floating-point input, got dtype=", x.dtype());
  OSTEONET_CHECK(x.dim() == 3, where, ": expected a padded batch B x T x D, got shape ", x.sizes());
  OSTEONET_CHECK(x.size(0) > 0 && x.size(1) > 0, where, ": expected at least one sequence of one slice, got shape ",
                 x.sizes());
  OSTEONET_CHECK(feature_dim <= 0 || x.size(2) == feature_dim, where, ": expected D=", feature_dim,
                 " features per slice, got shape ", x.sizes());
  if (!lengths.defined()) return {};
  OSTEONET_CHECK_TYPE(!lengths.is_floating_point() && lengths.scalar_type() != torch::kBool, where,
                      ": lengths must be integers, got dtype=", lengths.dtype());
  OSTEONET_CHECK(lengths.dim() == 1 && lengths.size(0) == x.size(0), where, ": expected ", x.size(0),
                 " lengths (one per sequence), got shape ", lengths.sizes());
  auto len = lengths.to(x.device(), torch::kLong);
  const int64_t lo = len.min().item<int64_t>(), hi = len.max().item<int64_t>();
  OSTEONET_CHECK(lo >= 1 && hi <= x.size(1), where, ": lengths must lie in [1, T=", x.size(1), "], got min=", lo,
                 " max=", hi);
  return len;
}

/// B x T boolean mask, true on the first lengths[b] steps of sequence b.
inline torch::Tensor length_mask(const torch::Tensor& lengths, int64_t steps) {
  return torch::arange(steps, lengths.options()).unsqueeze(0) < lengths.unsqueeze(1);
}

/// The same mask for a B x T batch `like`, built from `like` itself (a traced program keeps B and T
/// free instead of recording the example's sizes).
inline torch::Tensor length_mask_like(const torch::Tensor& lengths, const torch::Tensor& like) {
  auto steps = torch::ones_like(like, lengths.options()).cumsum(1) - 1;  // 0..T-1 in every row
  return steps < lengths.unsqueeze(1);
}

/// Lengths from a B x T mask of valid steps, which must be a prefix of each row (padding at the end).
inline torch::Tensor lengths_from_mask(const torch::Tensor& mask) {
  OSTEONET_CHECK(mask.dim() == 2, "lengths_from_mask: expected a B x T mask, got shape ", mask.sizes());
  auto m = mask.to(torch::kBool);
  auto len = m.sum(1);
  OSTEONET_CHECK(torch::equal(m, length_mask(len, m.size(1))),
                 "lengths_from_mask: valid steps must come first in each row (padding at the end)");
  return len;
}

/// Every aggregator: a padded batch of per-slice inputs (B x T x D) + lengths -> scan probability (B).
///
/// Rule aggregators (max, mean, vote) take slice probabilities (D = 1, values in [0, 1]); the LSTM takes
/// the encoder's 32-d features. An interface, not a Module (see backbones::BackboneImpl for why);
/// module() reaches the Module.
class AggregatorImpl : public core::Invocable {
 public:
  ~AggregatorImpl() override = default;
  /// Scan probabilities (B), padding ignored.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths) = 0;
  /// Features per slice the aggregator expects; 1 for the rule aggregators (a slice probability).
  virtual int64_t input_dim() const = 0;
  /// True when the input is slice probabilities rather than features.
  virtual bool takes_probabilities() const = 0;
  virtual const std::string& name() const = 0;
  virtual torch::nn::Module& module() = 0;
  virtual const torch::nn::Module& module() const = 0;

  /// {x} or {x, lengths} -> {scan probabilities}.
  std::vector<torch::Tensor> invoke(const std::vector<torch::Tensor>& args) override {
    OSTEONET_CHECK(args.size() == 1 || args.size() == 2, name(), ": forward takes x and optional lengths, got ",
                   args.size(), " tensors");
    return {forward(args[0], args.size() == 2 ? args[1] : torch::Tensor())};
  }

  void train(bool on = true) { module().train(on); }
  void eval() { module().eval(); }
  bool is_training() const { return module().is_training(); }
  torch::OrderedDict<std::string, torch::Tensor> named_parameters(bool recurse = true) const {
    return module().named_parameters(recurse);
  }
  torch::OrderedDict<std::string, torch::Tensor> named_buffers(bool recurse = true) const {
    return module().named_buffers(recurse);
  }
};

using AggregatorPtr = std::shared_ptr<AggregatorImpl>;

/// Base of the concrete aggregators: the one Module (Cloneable<Derived>) plus the interface.
template <typename Derived>
class Aggregator : public torch::nn::Cloneable<Derived>, public AggregatorImpl {
 public:
  using torch::nn::Module::eval;
  using torch::nn::Module::is_training;
  using torch::nn::Module::named_buffers;
  using torch::nn::Module::named_parameters;
  using torch::nn::Module::train;
  torch::nn::Module& module() override { return *this; }
  const torch::nn::Module& module() const override { return *this; }
};

namespace detail_agg {
/// B x T slice probabilities from a B x T x 1 (or B x T) input, checked.
inline std::pair<torch::Tensor, torch::Tensor> probabilities(const std::string& where, torch::Tensor x,
                                                             const torch::Tensor& lengths) {
  if (x.defined() && x.dim() == 2) x = x.unsqueeze(2);
  auto len = check_padded(where, x, lengths, 1);
  return {x.select(2, 0), len};  // not squeeze(2): PyTorch exports that as an ONNX `If`, which OpenCV cannot read
}

/// The mean of B x T values over each sequence's valid steps (all T without lengths).
inline torch::Tensor masked_mean(const torch::Tensor& v, const torch::Tensor& len) {
  if (!len.defined()) return v.mean(1);
  return torch::where(length_mask_like(len, v), v, torch::zeros_like(v)).sum(1) / len.to(v.scalar_type());
}
}  // namespace detail_agg

/// Scan probability = the largest slice probability (Table 1, "CNN/max pooling").
class MaxAggregatorImpl : public Aggregator<MaxAggregatorImpl> {
 public:
  MaxAggregatorImpl() { reset(); }
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths = {}) override {
    auto [p, len] = detail_agg::probabilities(name_, x, lengths);
    if (!len.defined()) return p.amax(1);
    return p.masked_fill(~length_mask_like(len, p), -std::numeric_limits<double>::infinity()).amax(1);
  }
  int64_t input_dim() const override { return 1; }
  bool takes_probabilities() const override { return true; }
  const std::string& name() const override { return name_; }

 private:
  std::string name_ = "max";
};
TORCH_MODULE(MaxAggregator);

/// Scan probability = the mean slice probability over the valid slices ("CNN/mean pooling").
class MeanAggregatorImpl : public Aggregator<MeanAggregatorImpl> {
 public:
  MeanAggregatorImpl() { reset(); }
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths = {}) override {
    auto [p, len] = detail_agg::probabilities(name_, x, lengths);
    return detail_agg::masked_mean(p, len);
  }
  int64_t input_dim() const override { return 1; }
  bool takes_probabilities() const override { return true; }
  const std::string& name() const override { return name_; }

 private:
  std::string name_ = "mean";
};
TORCH_MODULE(MeanAggregator);

/// Options for VotingAggregator.
struct VotingAggregatorOptions {
  /// A slice votes "fracture" when its probability is >= this value (ties vote positive).
  TORCH_ARG(double, threshold) = 0.5;
};

/// Scan score = the fraction of valid slices whose probability is >= threshold ("CNN/voting").
/// With the paper's 0.5 decision threshold on that fraction (>= 0.5 positive), a tied vote (exactly
/// half the slices) is a positive scan. Not differentiable (a count); use it at evaluation.
class VotingAggregatorImpl : public Aggregator<VotingAggregatorImpl> {
 public:
  explicit VotingAggregatorImpl(VotingAggregatorOptions options = {}) : options(options) { reset(); }
  void reset() override {
    OSTEONET_CHECK(options.threshold() >= 0.0 && options.threshold() <= 1.0,
                   "vote: threshold must lie in [0, 1], got threshold=", options.threshold());
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths = {}) override {
    auto [p, len] = detail_agg::probabilities(name_, x, lengths);
    // p >= threshold as arithmetic (exact for p and the threshold in [0, 1]), so that the exported graph has no
    // boolean ops: OpenCV 4.6 cannot run the Less -> Not -> Cast that a comparison exports to. A NaN
    // probability votes NaN (a comparison would have voted "no fracture" silently).
    return detail_agg::masked_mean(torch::clamp(torch::floor(p - options.threshold()) + 1.0, 0.0, 1.0), len);
  }
  int64_t input_dim() const override { return 1; }
  bool takes_probabilities() const override { return true; }
  const std::string& name() const override { return name_; }

  VotingAggregatorOptions options;

 private:
  std::string name_ = "vote";
};
TORCH_MODULE(VotingAggregator);

/// Options for LstmAggregator (§2.2, §3.3.2).
struct LstmAggregatorOptions {
  /// Features per slice (the encoder's 32-d embedding).
  TORCH_ARG(int64_t, input_size) = 32;
  TORCH_ARG(int64_t, hidden_size) = 256;
  TORCH_ARG(int64_t, num_layers) = 1;
  /// Dropout on the last hidden state, before the FC layer.
  TORCH_ARG(double, dropout) = 0.2;
};

/// CNN/LSTM: the slices' features enter an LSTM from the first slice to the last; the hidden state
/// after the last valid slice goes through dropout, `fc` (256 -> 1) and a sigmoid.
///
/// Padding: the LSTM runs over the padded batch once and the output at step lengths[b] - 1 is
/// gathered; a unidirectional LSTM's output there depends on steps 0..lengths[b]-1 only, so this is
/// exactly what running each sequence alone (or packing) gives. Parameter names are torch.nn.LSTM's
/// under `lstm.` (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0) and `fc.`.
class LstmAggregatorImpl : public Aggregator<LstmAggregatorImpl> {
 public:
  explicit LstmAggregatorImpl(LstmAggregatorOptions options = {}) : options(options) { reset(); }

  void reset() override {
    OSTEONET_CHECK(options.input_size() > 0 && options.hidden_size() > 0 && options.num_layers() > 0,
                   "lstm: input_size, hidden_size and num_layers must be positive, got input_size=",
                   options.input_size(), " hidden_size=", options.hidden_size(), " num_layers=", options.num_layers());
    OSTEONET_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0, "lstm: dropout must lie in [0, 1), got dropout=",
                   options.dropout());
    lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(options.input_size(), options.hidden_size())
                                                       .num_layers(options.num_layers())
                                                       .batch_first(true)));
    dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
    fc = register_module("fc", torch::nn::Linear(options.hidden_size(), 1));
  }

  /// The hidden state after each sequence's last valid slice, B x hidden_size.
  torch::Tensor last_hidden(const torch::Tensor& x, const torch::Tensor& lengths = {}) {
    auto len = check_padded(name_, x, lengths, options.input_size());
    auto outs = core::call_many(lstm, {x}, [&] {  // (Python's nn.LSTM returns (out, (h, c)))
      // Zero initial states shaped after x (zeros_like, not from x's values), so that a traced program keeps
      // the batch free; the ONNX export then drops them for the LSTM operator's own zero default.
      auto zero = torch::zeros_like(x.select(1, 0).narrow(1, 0, 1));  // B x 1
      auto h0 = zero.expand({-1, options.hidden_size()}).unsqueeze(0)
                    .expand({options.num_layers(), -1, options.hidden_size()}).contiguous();
      auto r = lstm->forward(x, std::make_tuple(h0, h0.clone()));
      return std::vector<torch::Tensor>{std::get<0>(r), std::get<0>(std::get<1>(r)), std::get<1>(std::get<1>(r))};
    });
    // Every sequence T long: the last layer's final hidden state, which is the output at the last step (a
    // constant slice of h_n; OpenCV's ONNX importer turns a Gather at index -1 into an empty Slice).
    if (!len.defined()) return outs.at(1).narrow(0, options.num_layers() - 1, 1).squeeze(0);
    const auto& out = outs.at(0);  // B x T x H
    auto idx = (len - 1).view({-1, 1, 1}).expand({-1, 1, out.size(2)});
    return out.gather(1, idx).squeeze(1);
  }

  /// Scan logits (B).
  torch::Tensor forward_logits(const torch::Tensor& x, const torch::Tensor& lengths = {}) {
    return core::call(fc, core::call(dropout, last_hidden(x, lengths))).squeeze(1);
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths = {}) override {
    return torch::sigmoid(forward_logits(x, lengths));
  }
  int64_t input_dim() const override { return options.input_size(); }
  bool takes_probabilities() const override { return false; }
  const std::string& name() const override { return name_; }

  LstmAggregatorOptions options;
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  std::string name_ = "lstm";
};
TORCH_MODULE(LstmAggregator);

namespace detail_registry {
inline const bool registered = [] {
  using Module = std::shared_ptr<torch::nn::Module>;
  auto& r = core::models();
  r.add({"max", "aggregator", "seed 002 Table 1 CNN/max pooling: the largest slice probability", "",
         [](const OptionMap&) -> Module { return MaxAggregator().ptr(); }});
  r.add({"mean", "aggregator", "seed 002 Table 1 CNN/mean pooling: the mean slice probability", "",
         [](const OptionMap&) -> Module { return MeanAggregator().ptr(); }});
  r.add({"vote", "aggregator", "seed 002 Table 1 CNN/voting: the fraction of slices voting fracture", "",
         [](const OptionMap& o) -> Module {
           VotingAggregatorOptions d;
           return VotingAggregator(d.threshold(o.get_double("threshold", d.threshold()))).ptr();
         }});
  r.add({"lstm", "aggregator", "seed 002 Table 1 CNN/LSTM: LSTM(256) + dropout + FC + sigmoid over slice features", "",
         [](const OptionMap& o) -> Module {
           LstmAggregatorOptions d;
           return LstmAggregator(d.input_size(o.get_int("input_size", d.input_size()))
                                     .hidden_size(o.get_int("hidden_size", d.hidden_size()))
                                     .num_layers(o.get_int("num_layers", d.num_layers()))
                                     .dropout(o.get_double("dropout", d.dropout())))
               .ptr();
         }});
  return true;
}();
}  // namespace detail_registry

/// The aggregator names the registry knows (Table 1's rows).
inline std::vector<std::string> aggregator_names() { return core::models().names("aggregator"); }

/// Builds an aggregator by name. Options: vote: `threshold`; lstm: `input_size`, `hidden_size`,
/// `num_layers`, `dropout`. Unknown names and options raise ValueError ("did you mean ...").
inline AggregatorPtr create_aggregator(const std::string& name, const OptionMap& options = {}) {
  core::models().at(name, "aggregator");
  return core::create<AggregatorImpl>(name, options);
}

}  // namespace osteonet::sequence
