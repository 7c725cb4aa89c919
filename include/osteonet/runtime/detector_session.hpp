// DetectorSession: a prepared, callable copy of an osteonet Faster R-CNN for inference (issue 8).
// The backbone and FPN, the bulk of the work at a fixed padded size, run through per-shape programs
// (TorchScript-frozen on the CPU, CUDA graphs on CUDA builds) after Conv+BN folding, optionally in
// bfloat16 channels-last; the data-dependent parts (resizing, RPN proposals, NMS, RoIAlign, box head,
// post-processing) stay eager in float32.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/detection/faster_rcnn.hpp"
#include "osteonet/runtime/fold_batchnorm.hpp"
#include "osteonet/runtime/session_base.hpp"

namespace osteonet::runtime {

/// A prepared, thread-safe callable copy of a Faster R-CNN (detection::fasterrcnn and the torchvision
/// builders) for inference.
///
/// Construction rebuilds the detector from its config() and copies the model's current parameters
/// and buffers (the caller's model is never changed), puts the copy in eval mode, folds BatchNorm into
/// the body's convolutions, converts backbone + FPN to the session dtype (bfloat16: channels-last
/// weights) and prepares the program of the example batch's padded shape. Options are
/// InferenceSession's; features(true) is refused (a detector returns detections).
///
/// On the CPU the default options (`cpu_defaults()`, freeze(false)) run backbone + FPN as the folded copy,
/// eagerly: a frozen backbone + FPN program measured 1.01-1.11x the eager detector at 512 and 800 px, short of
/// what is worth its build time and memory (docs/runtime.md, "Detectors"). Options with freeze(true) still
/// build it (e.g. `InferenceSessionOptions()`, whose freeze defaults to true for backbones).
///
/// Accuracy is measured at construction on the example images, as probabilities: the heads of the
/// session and of the float32 eager model score the same (eager) proposals, and `accuracy()` is the
/// largest |difference| of the RPN objectness probabilities (every anchor) and of the box class
/// probabilities. A bfloat16 session above tolerance_bfloat16 falls back to float32, a float32
/// session above tolerance_float32 to the unfolded eager copy (warnings).
class DetectorSession : public SessionBase {
 public:
  /// The default options: InferenceSessionOptions with freeze(false) (see above; CUDA graphs unchanged).
  static InferenceSessionOptions cpu_defaults() { return InferenceSessionOptions().freeze(false); }

  DetectorSession(const detection::FasterRCNNImpl& model, const std::vector<torch::Tensor>& example,
                  InferenceSessionOptions options = cpu_defaults())
      : SessionBase("DetectorSession", model.name(), std::move(options)) {
    OSTEONET_CHECK(!options_.features(), where(),
                   ": features=true applies to backbones; a detector returns detections");
    OSTEONET_CHECK(!options_.float32_ends(), where(),
                   ": float32_ends applies to backbones (stem and classifier); a detector's heads run in float32 ",
                   "already, got float32_ends=true");
    check_images(example, "example");
    torch::NoGradGuard no_grad;
    // The reference: the float32 eager copy's head probabilities on the example, with its proposals.
    auto ref = copy_model(model);
    const auto list = ref->transform->forward(to_device(example), nullptr);
    const auto maps = ref->backbone->forward(list.tensors);
    const auto proposals = ref->rpn->forward(list, maps).first;
    const auto expected = head_probabilities(*ref, maps, proposals, list.image_sizes);
    build([&](bool bf16, bool, bool fold) { return prepare(copy_model(model), bf16, fold); },
          [&] { return measure(list, proposals, expected); }, "probabilities", /*ends=*/false);
  }

  /// Detections per image (boxes x1, y1, x2, y2 in the input image's pixels, labels, scores), as the
  /// detector's eval forward returns them.
  std::vector<detection::Detection> operator()(const std::vector<torch::Tensor>& images) {
    check_images(images, "images");
    torch::NoGradGuard no_grad;
    auto* programs = programs_.get();
    return net_->detect(to_device(images), [programs](const torch::Tensor& x) { return (*programs)(x); });
  }

  /// The backbone + FPN maps (float32) of a padded, normalised N x C x H x W batch (what the detector's
  /// transform makes of its images) through the prepared per-shape program: the part the session
  /// freezes (CPU) or graphs (CUDA). For feature extraction, and to time that part alone.
  std::vector<torch::Tensor> backbone_maps(const torch::Tensor& batch) {
    OSTEONET_CHECK_TYPE(batch.defined() && batch.scalar_type() == torch::kFloat, where(),
                        ": backbone_maps() takes a float32 N x C x H x W batch, got dtype=",
                        batch.defined() ? c10::toString(batch.scalar_type()) : "undefined");
    OSTEONET_CHECK(batch.dim() == 4, where(), ": backbone_maps() takes an N x C x H x W batch, got shape ", batch.sizes());
    torch::NoGradGuard no_grad;
    return (*programs_)(batch.detach().to(device_));
  }

 private:
  void check_images(const std::vector<torch::Tensor>& images, const char* what) const {
    OSTEONET_CHECK(!images.empty(), where(), ": expected a non-empty list of ", what, ", got an empty list");
    for (size_t i = 0; i < images.size(); ++i) {
      const auto& im = images[i];
      OSTEONET_CHECK_TYPE(im.defined(), where(), ": ", what, "[", i, "] is an undefined tensor");
      OSTEONET_CHECK_TYPE(im.scalar_type() == torch::kFloat, where(), ": ", what, "[", i,
                          "] must be a float32 C x H x W tensor, got dtype=", im.dtype());
      OSTEONET_CHECK(im.dim() == 3, where(), ": ", what, "[", i, "] must be a C x H x W tensor, got shape ",
                     im.sizes());
    }
  }

  std::vector<torch::Tensor> to_device(const std::vector<torch::Tensor>& images) const {
    std::vector<torch::Tensor> out;
    out.reserve(images.size());
    for (const auto& im : images) out.push_back(im.detach().to(device_));
    return out;
  }

  /// An eval-mode float32 copy rebuilt from the model's config, parameters and buffers copied by name.
  std::shared_ptr<detection::FasterRCNNImpl> copy_model(const detection::FasterRCNNImpl& model) const {
    auto net = detection::fasterrcnn(model.config(), model.name()).ptr();
    copy_tensors(model.named_parameters(true), net->named_parameters(true), false, "");
    copy_tensors(model.named_buffers(true), net->named_buffers(true), false, "");
    net->to(device_, torch::kFloat);
    net->eval();
    for (auto& p : net->parameters()) p.set_requires_grad(false);
    return net;
  }

  /// Folds (optionally) and converts backbone + FPN to the session dtype; a new program cache.
  /// Returns the folded pairs.
  int64_t prepare(std::shared_ptr<detection::FasterRCNNImpl> net, bool bf16, bool fold) {
    torch::NoGradGuard no_grad;
    const int64_t folded = fold ? fold_batchnorm(*net->backbone) : 0;
    if (bf16) {
      net->backbone->to(torch::kBFloat16);
      for (auto& p : net->backbone->parameters())
        if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    }
    net_ = std::move(net);
    // Float32 padded batch in, float32 contiguous maps out (the heads run in float32); in bfloat16
    // the casts are part of the program.
    set_program([backbone = net_->backbone, bf16](const torch::Tensor& x) mutable {
      if (!bf16) return backbone->forward(x);
      auto maps = backbone->forward(x.to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast));
      for (auto& m : maps) m = m.to(torch::kFloat).contiguous();
      return maps;
    });
    return folded;
  }

  /// What the heads compute from backbone + FPN maps: RPN objectness probabilities (sigmoid, every
  /// anchor) and box class probabilities (softmax) of the given proposals.
  static std::pair<torch::Tensor, torch::Tensor> head_probabilities(
      detection::FasterRCNNImpl& net, const std::vector<torch::Tensor>& maps, const std::vector<torch::Tensor>& proposals,
      const std::vector<std::array<int64_t, 2>>& image_sizes) {
    std::vector<torch::Tensor> objectness;
    for (const auto& level : net.rpn->head->forward(maps).first) objectness.push_back(level.flatten());
    return {torch::cat(objectness).sigmoid(), net.roi_heads->box_outputs(maps, proposals, image_sizes).first.softmax(-1)};
  }

  /// Largest probability difference of the session from the reference on the example (builds the
  /// program of the example's padded shape): objectness and class probabilities, the same proposals.
  double measure(const detection::ImageList& list, const std::vector<torch::Tensor>& proposals,
                 const std::pair<torch::Tensor, torch::Tensor>& expected) {
    const auto maps = (*programs_)(list.tensors);
    const auto got = head_probabilities(*net_, maps, proposals, list.image_sizes);
    return std::max((got.first - expected.first).abs().max().item<double>(),
                    (got.second - expected.second).abs().max().item<double>());
  }

  std::shared_ptr<detection::FasterRCNNImpl> net_;
};

}  // namespace osteonet::runtime
