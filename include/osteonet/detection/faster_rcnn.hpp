// Faster R-CNN (Ren et al., NeurIPS 2015) assembled from replaceable parts as torchvision 0.14's
// GeneralizedRCNN: transform -> backbone (+FPN) -> RPN -> RoI heads -> postprocess; and its builders
// for DSNet (seed 000, Tables 1-2: ResNet-50 with none/SE/SK/DS, VGG16 and MobileNets with/without DS)
// and torchvision's fasterrcnn_resnet50_fpn / fasterrcnn_mobilenet_v3_large_fpn.
#pragma once

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "osteonet/backbones/registry.hpp"
#include "osteonet/core/options.hpp"
#include "osteonet/detection/anchors.hpp"
#include "osteonet/detection/detector_backbone.hpp"
#include "osteonet/detection/roi_heads.hpp"
#include "osteonet/detection/rpn.hpp"
#include "osteonet/detection/transform.hpp"

namespace osteonet::detection {

/// What the detector returns: losses in training, detections in evaluation.
struct DetectorOutput {
  LossMap losses;
  std::vector<Detection> detections;
};

/// Everything the builders read: backbone choice and torchvision's keyword options by name.
struct FasterRCNNConfig {
  /// resnet18/34/50/101, dsnet_resnet50, vgg16(_bn), mobilenet_v2, mobilenet_v3_large.
  std::string backbone = "resnet50";
  /// "none", "se", "eca", "sk", "ds" (placement via the option attention_placement).
  std::string attention = "none";
  int64_t num_classes = 91;
  bool fpn = true;
  /// torchvision's FasterRCNN keywords (min_size, max_size, rpn_*, box_*), backbone keywords
  /// (attention_placement, attn_*) and fpn_channels / representation_size.
  OptionMap options;
};

class FasterRCNNImpl : public torch::nn::Cloneable<FasterRCNNImpl>, public core::Invocable {
 public:
  /// `config`: what the builder (fasterrcnn()) was given, kept so that the model can be rebuilt
  /// (runtime::DetectorSession copies a detector this way).
  FasterRCNNImpl(GeneralizedRCNNTransform transform, DetectorBackbone backbone, RegionProposalNetwork rpn,
                 RoIHeads roi_heads, int64_t num_classes, std::string name = "fasterrcnn",
                 FasterRCNNConfig config = {})
      : transform(std::move(transform)),
        backbone(std::move(backbone)),
        rpn(std::move(rpn)),
        roi_heads(std::move(roi_heads)),
        num_classes_(num_classes),
        name_(std::move(name)),
        config_(std::move(config)) {
    reset();
  }
  void reset() override {
    register_module("transform", transform);
    register_module("backbone", backbone);
    register_module("rpn", rpn);
    register_module("roi_heads", roi_heads);
  }

  /// The backbone (+FPN) maps of a padded image batch.
  using FeatureFn = std::function<std::vector<torch::Tensor>(const torch::Tensor&)>;

  /// Images: list of C x H x W float tensors (values in [0, 1]). Targets are required in training.
  DetectorOutput forward(const std::vector<torch::Tensor>& images, const std::vector<Target>* targets = nullptr) {
    return run(images, targets, nullptr);
  }

  /// Evaluation with the backbone (+FPN) maps computed by `features` instead of `backbone` (which
  /// must compute the same maps): runtime::DetectorSession passes its prepared per-shape programs.
  std::vector<Detection> detect(const std::vector<torch::Tensor>& images, const FeatureFn& features) {
    OSTEONET_CHECK(!is_training(), name_, ": detect() is for evaluation; call eval() first");
    return run(images, nullptr, &features).detections;
  }

  /// The parts take images, targets and lists of maps; their tensor-in, tensor-out submodules (the
  /// body's stages, the FPN's blocks, the RPN head's convolutions, the box head and predictor) are
  /// the overridable ones.
  std::vector<std::string> opaque_children() const override { return {"transform", "backbone", "rpn", "roi_heads"}; }

  int64_t num_classes() const { return num_classes_; }
  const std::string& name() const { return name_; }
  const FasterRCNNConfig& config() const { return config_; }

 private:
  DetectorOutput run(const std::vector<torch::Tensor>& images, const std::vector<Target>* targets,
                     const FeatureFn* features_fn) {
    OSTEONET_CHECK(!images.empty(), name_, ": expected a non-empty list of images");
    if (is_training()) {
      OSTEONET_CHECK(targets != nullptr, name_, ": targets are required in training mode");
      check_targets(images, *targets);
    }
    std::vector<std::array<int64_t, 2>> original;
    for (const auto& img : images) {
      OSTEONET_CHECK(img.dim() == 3, name_, ": expected images of shape C x H x W, got shape ", img.sizes());
      // uint8 or int64 pixels would be normalised as if in [0, 1]: refuse them rather than guess a scale
      OSTEONET_CHECK_TYPE(img.is_floating_point(), name_, ": images must be floating point (scaled to [0, 1]), got dtype=",
                          img.dtype());
      original.push_back({img.size(-2), img.size(-1)});
    }
    std::vector<Target> t;
    if (targets) t = *targets;
    // Each stage is a user scope of torch.profiler ("osteonet::detector.<stage>"); free when not profiling.
    auto list = [&] {
      RECORD_USER_SCOPE("osteonet::detector.transform");
      return transform->forward(images, targets ? &t : nullptr);
    }();
    auto features = features_fn ? (*features_fn)(list.tensors) : backbone->forward(list.tensors);
    // (a named pair, not a structured binding: C++17 lambdas cannot capture one, and clang refuses it)
    const auto rpn_out = [&] {
      RECORD_USER_SCOPE("osteonet::detector.rpn");
      return rpn->forward(list, features, targets ? &t : nullptr);
    }();
    const auto& rpn_losses = rpn_out.second;
    auto [dets, det_losses] = [&] {
      RECORD_USER_SCOPE("osteonet::detector.roi_heads");
      return roi_heads->forward(features, rpn_out.first, list.image_sizes, targets ? &t : nullptr);
    }();
    DetectorOutput out;
    if (is_training()) {
      out.losses = det_losses;
      out.losses.insert(rpn_losses.begin(), rpn_losses.end());
    } else {
      RECORD_USER_SCOPE("osteonet::detector.postprocess");
      transform->postprocess(dets, list.image_sizes, original);
      out.detections = std::move(dets);
    }
    return out;
  }

 public:
  /// One ValueError naming the image and box for degenerate, out-of-image or non-finite boxes and
  /// labels outside 1..num_classes-1 (0 is the background).
  void check_targets(const std::vector<torch::Tensor>& images, const std::vector<Target>& targets) const {
    OSTEONET_CHECK(targets.size() == images.size(), name_, ": expected one target per image, got ", targets.size(),
                   " targets for ", images.size(), " images");
    for (size_t i = 0; i < targets.size(); ++i) {
      const auto& b = targets[i].boxes;
      const auto& l = targets[i].labels;
      OSTEONET_CHECK(b.defined() && b.dim() == 2 && b.size(1) == 4, name_, ": target ", i,
                     ": boxes must be a K x 4 tensor (x1, y1, x2, y2), got shape ",
                     b.defined() ? b.sizes() : torch::IntArrayRef{});
      OSTEONET_CHECK_TYPE(b.is_floating_point(), name_, ": target ", i, ": boxes must be floating point, got dtype=",
                          b.dtype());
      OSTEONET_CHECK(l.defined() && l.dim() == 1 && l.size(0) == b.size(0), name_, ": target ", i,
                     ": labels must be a K tensor matching ", b.size(0), " boxes, got shape ",
                     l.defined() ? l.sizes() : torch::IntArrayRef{});
      OSTEONET_CHECK_TYPE(!l.is_floating_point() && !l.is_complex() && l.scalar_type() != torch::kBool, name_, ": target ", i,
                          ": labels must be integers (int64), got dtype=", l.dtype());
      if (b.size(0) == 0) continue;
      auto bc = b.detach().to(torch::kCPU, torch::kDouble).contiguous();
      auto lc = l.detach().to(torch::kCPU, torch::kLong).contiguous();
      const double H = static_cast<double>(images[i].size(-2)), W = static_cast<double>(images[i].size(-1));
      const double* p = bc.data_ptr<double>();
      const int64_t* q = lc.data_ptr<int64_t>();
      for (int64_t k = 0; k < b.size(0); ++k) {
        const double x1 = p[4 * k], y1 = p[4 * k + 1], x2 = p[4 * k + 2], y2 = p[4 * k + 3];
        const auto where = detail::str_cat(name_, ": target ", i, ", box ", k, " [", x1, ", ", y1, ", ", x2, ", ", y2, "]");
        OSTEONET_CHECK(std::isfinite(x1) && std::isfinite(y1) && std::isfinite(x2) && std::isfinite(y2), where,
                       ": coordinates must be finite");
        OSTEONET_CHECK(x2 > x1 && y2 > y1, where, ": degenerate box, needs x2 > x1 and y2 > y1");
        OSTEONET_CHECK(x1 >= 0 && y1 >= 0 && x2 <= W && y2 <= H, where, ": box outside the image of size ", W, "x",
                       H, " (W x H)");
        OSTEONET_CHECK(q[k] >= 1 && q[k] < num_classes_, where, ": label must be in 1..", num_classes_ - 1,
                       " (0 is the background), got label=", q[k]);
      }
    }
  }

  GeneralizedRCNNTransform transform;
  DetectorBackbone backbone;
  RegionProposalNetwork rpn;
  RoIHeads roi_heads;

 private:
  int64_t num_classes_;
  std::string name_;
  FasterRCNNConfig config_;
};
TORCH_MODULE(FasterRCNN);

namespace detail_frcnn {

/// One int option as a list (torchvision's min_size takes a tuple; osteonet's keyword one value).
inline std::vector<int64_t> int_list(const OptionMap& o, const std::string& key, std::vector<int64_t> def) {
  const bool given = o.has(key);
  const int64_t v = o.get_int(key, def.front());  // read either way: listed among the options
  return given ? std::vector<int64_t>{v} : def;
}

/// torchvision's trainable_backbone_layers: requires_grad off for the body parameters outside the
/// last `n` stages. ResNets: n of layer4, layer3, layer2, layer1, conv1 (+ bn1 at 5), range 0..5.
/// MobileNets: stages start at block 0, the strided blocks and the last block; n in 0..stages.
/// Default: 3 with frozen_bn (torchvision's pretrained builders), else everything trainable
/// (torchvision without weights). The FPN, RPN and box heads, and the attention modules (new modules,
/// never in pretrained weights), always train.
inline void freeze_backbone_layers(DetectorBackboneImpl& backbone, const std::string& kind, bool is_mobilenet,
                                   const OptionMap& o, const std::string& where) {
  const bool frozen = o.get_bool("frozen_bn", false);
  OSTEONET_CHECK(!frozen || kind.rfind("resnet", 0) == 0 || kind == "dsnet_resnet50", where,
                 ": frozen_bn (FrozenBatchNorm2d) is implemented for ResNet backbones, got backbone=", kind);
  auto body = backbone.named_children()["body"];
  if (is_mobilenet) {
    // Stage starts: 0, every block with stride > 1 (torchvision's _is_cn), the last block.
    auto* mb = body->as<MobileNetBodyImpl>();
    const auto starts = mb->stage_starts();
    const auto num_stages = static_cast<int64_t>(starts.size());
    const int64_t n = o.get_int("trainable_backbone_layers", frozen ? 3 : num_stages);
    OSTEONET_CHECK(n >= 0 && n <= num_stages, where, ": trainable_backbone_layers must be in [0, ", num_stages,
                   "], got trainable_backbone_layers=", n);
    const int64_t freeze_before = n == 0 ? mb->num_blocks() : starts[static_cast<size_t>(num_stages - n)];
    for (const auto& kv : body->named_parameters(true)) {
      const auto dot = kv.key().find('.');
      const std::string head = kv.key().substr(0, dot);
      if (head.empty() || !std::all_of(head.begin(), head.end(), ::isdigit)) continue;  // attention modules train
      if (std::stoll(head) < freeze_before) kv.value().set_requires_grad(false);
    }
    return;
  }
  const int64_t n = o.get_int("trainable_backbone_layers", frozen ? 3 : 5);
  OSTEONET_CHECK(n >= 0 && n <= 5, where, ": trainable_backbone_layers must be in [0, 5], got trainable_backbone_layers=",
                 n);
  OSTEONET_CHECK(kind.rfind("resnet", 0) == 0 || kind == "dsnet_resnet50" || n == 5, where,
                 ": trainable_backbone_layers applies to ResNet and MobileNet backbones, got backbone=", kind);
  std::vector<std::string> train{"layer4", "layer3", "layer2", "layer1", "conv1"};
  train.resize(static_cast<size_t>(n));
  if (n == 5) train.push_back("bn1");
  for (const auto& kv : body->named_parameters(true)) {
    const std::string& key = kv.key();
    const bool keep = std::any_of(train.begin(), train.end(), [&](const std::string& p) { return key.rfind(p, 0) == 0; });
    // Attention modules (attn, attn_stem, attn_last: new, never in pretrained weights) train, as on MobileNets.
    const bool attention = key.rfind("attn", 0) == 0 || key.find(".attn") != std::string::npos;
    if (!keep && !attention) kv.value().set_requires_grad(false);
  }
}

}  // namespace detail_frcnn

/// Builds a Faster R-CNN on an osteonet backbone. Unknown options raise ValueError ("did you mean").
/// `reads_to`: an option map whose record also gets the reads (the registry's builder passes the
/// options it was given).
inline FasterRCNN fasterrcnn(FasterRCNNConfig cfg, const std::string& name = "fasterrcnn",
                             const OptionMap* reads_to = nullptr) {
  using namespace backbones;
  const FasterRCNNConfig given = cfg;
  OSTEONET_CHECK(cfg.num_classes >= 2, name, ": num_classes must be >= 2 (background + classes), got num_classes=",
                 cfg.num_classes);
  auto& o = cfg.options;
  const std::vector<std::string> supported{"resnet18", "resnet34", "resnet50", "resnet101", "dsnet_resnet50",
                                           "vgg16",    "vgg16_bn", "mobilenet_v2", "mobilenet_v3_large"};
  if (std::find(supported.begin(), supported.end(), cfg.backbone) == supported.end())
    throw_unknown_name(name, "backbone", cfg.backbone, supported);
  OptionMap body_options = o;  // the backbone reads its own keywords (attention_placement, attn_*, frozen_bn, ...)
  body_options.set("num_classes", int64_t{0});
  body_options.set("attention", cfg.attention);
  auto net = std::dynamic_pointer_cast<BackboneImpl>(core::models().at(cfg.backbone, "backbone").build(body_options));
  o = body_options;  // keeps the record of the options the backbone read
  const int64_t fpn_channels = o.get_int("fpn_channels", 256);
  DetectorBackbone backbone{nullptr};
  std::vector<std::vector<double>> sizes;
  const bool is_mobilenet = cfg.backbone.rfind("mobilenet", 0) == 0;
  if (is_mobilenet) {
    auto mnet = std::dynamic_pointer_cast<MobileNetImpl>(net);
    // torchvision's _mobilenet_extractor: the strided blocks start the stages; the FPN reads the
    // first block of the last stage and the last layer (both stride 32).
    const auto& fi = mnet->feature_info();
    auto idx = [](const std::string& n) { return std::stoll(n.substr(n.find('.') + 1)); };
    const int64_t last = idx(fi.back().name);
    const int64_t last_stage_start = idx(fi[fi.size() - 2].name) + 1;
    std::vector<int64_t> ret = cfg.fpn ? std::vector<int64_t>{last_stage_start, last} : std::vector<int64_t>{last};
    backbone = DetectorBackbone(mnet, ret, cfg.fpn, fpn_channels);
    const std::vector<double> s{32, 64, 128, 256, 512};
    sizes.assign(static_cast<size_t>(backbone->num_outputs()), s);
  } else {
    const auto& fi = net->feature_info();
    std::vector<int64_t> ret;
    if (cfg.fpn) {
      for (size_t i = 0; i < fi.size(); ++i)
        if (fi[i].stride >= 4) ret.push_back(static_cast<int64_t>(i));
      while (ret.size() > 4) ret.erase(ret.begin());
      for (int64_t l = 0; l <= static_cast<int64_t>(ret.size()); ++l) sizes.push_back({32.0 * std::pow(2.0, l)});
    } else {
      ret = {static_cast<int64_t>(fi.size()) - 1};
      sizes = {{32, 64, 128, 256, 512}};
    }
    backbone = DetectorBackbone(net, ret, cfg.fpn, fpn_channels);
  }
  detail_frcnn::freeze_backbone_layers(*backbone, cfg.backbone, is_mobilenet, o, name);
  std::vector<std::vector<double>> ratios(sizes.size(), std::vector<double>{0.5, 1.0, 2.0});
  auto anchors = AnchorGenerator(AnchorGeneratorOptions().sizes(sizes).aspect_ratios(ratios));
  const int64_t out_ch = backbone->out_channels();
  auto head = RPNHead(out_ch, anchors->num_anchors_per_location()[0]);
  RPNOptions ro;  // torchvision's defaults (rpn_score_thresh 0.05 for MobileNets, as its builder)
  ro.pre_nms_top_n_train(o.get_int("rpn_pre_nms_top_n_train", ro.pre_nms_top_n_train()))
      .pre_nms_top_n_test(o.get_int("rpn_pre_nms_top_n_test", ro.pre_nms_top_n_test()))
      .post_nms_top_n_train(o.get_int("rpn_post_nms_top_n_train", ro.post_nms_top_n_train()))
      .post_nms_top_n_test(o.get_int("rpn_post_nms_top_n_test", ro.post_nms_top_n_test()))
      .nms_thresh(o.get_double("rpn_nms_thresh", ro.nms_thresh()))
      .fg_iou_thresh(o.get_double("rpn_fg_iou_thresh", ro.fg_iou_thresh()))
      .bg_iou_thresh(o.get_double("rpn_bg_iou_thresh", ro.bg_iou_thresh()))
      .batch_size_per_image(o.get_int("rpn_batch_size_per_image", ro.batch_size_per_image()))
      .positive_fraction(o.get_double("rpn_positive_fraction", ro.positive_fraction()))
      .score_thresh(o.get_double("rpn_score_thresh", is_mobilenet ? 0.05 : ro.score_thresh()));
  auto rpn = RegionProposalNetwork(anchors, head, ro);
  const int64_t rep = o.get_int("representation_size", 1024);
  RoIHeadsOptions rh;
  rh.fg_iou_thresh(o.get_double("box_fg_iou_thresh", rh.fg_iou_thresh()))
      .bg_iou_thresh(o.get_double("box_bg_iou_thresh", rh.bg_iou_thresh()))
      .batch_size_per_image(o.get_int("box_batch_size_per_image", rh.batch_size_per_image()))
      .positive_fraction(o.get_double("box_positive_fraction", rh.positive_fraction()))
      .score_thresh(o.get_double("box_score_thresh", rh.score_thresh()))
      .nms_thresh(o.get_double("box_nms_thresh", rh.nms_thresh()))
      .detections_per_img(o.get_int("box_detections_per_img", rh.detections_per_img()))
      .pooled_levels(std::min<int64_t>(rh.pooled_levels(), backbone->num_body_maps()));
  auto box_head = TwoMLPHead(out_ch * 7 * 7, rep);
  auto predictor = FastRCNNPredictor(rep, cfg.num_classes);
  auto roi_heads = RoIHeads(torch::nn::AnyModule(box_head), predictor, rh);
  TransformOptions to;
  to.min_size(detail_frcnn::int_list(o, "min_size", {800})).max_size(o.get_int("max_size", 1333));
  auto transform = GeneralizedRCNNTransform(to);
  if (reads_to) reads_to->record_reads_of(o);
  o.check_all_used(name);
  return FasterRCNN(transform, backbone, rpn, roi_heads, cfg.num_classes, name, given);
}

/// torchvision's fasterrcnn_resnet50_fpn. Default: BatchNorm2d in the body and every layer trainable,
/// as torchvision builds it without weights. With options frozen_bn=true (and
/// trainable_backbone_layers, default 3) the layout of torchvision's pretrained COCO model
/// (FrozenBatchNorm2d), whose state dict then loads strictly.
inline FasterRCNN fasterrcnn_resnet50_fpn(int64_t num_classes = 91, OptionMap options = {}) {
  FasterRCNNConfig c;
  c.backbone = "resnet50";
  c.num_classes = num_classes;
  c.fpn = true;
  c.options = std::move(options);
  return fasterrcnn(c, "fasterrcnn_resnet50_fpn");
}

/// torchvision's fasterrcnn_mobilenet_v3_large_fpn (rpn_score_thresh 0.05 by default).
inline FasterRCNN fasterrcnn_mobilenet_v3_large_fpn(int64_t num_classes = 91, OptionMap options = {}) {
  FasterRCNNConfig c;
  c.backbone = "mobilenet_v3_large";
  c.num_classes = num_classes;
  c.fpn = true;
  c.options = std::move(options);
  return fasterrcnn(c, "fasterrcnn_mobilenet_v3_large_fpn");
}

namespace detail_registry {
/// A FasterRCNNConfig from keyword options (`fixed_backbone`: the builder's own, not an option).
inline FasterRCNNConfig config_from(const OptionMap& o, const std::string& fixed_backbone) {
  FasterRCNNConfig c;
  c.backbone = fixed_backbone.empty() ? o.get_string("backbone", c.backbone) : fixed_backbone;
  c.attention = o.get_string("attention", c.attention);
  c.num_classes = o.get_int("num_classes", c.num_classes);
  if (fixed_backbone.empty()) c.fpn = o.get_bool("fpn", c.fpn);
  c.options = o;
  return c;
}

/// The builder of `name`: fasterrcnn() reads the other keywords from its copy of the options, whose
/// reads count as reads of `o` (so the registry's unused-option check sees them).
inline std::shared_ptr<torch::nn::Module> build(const std::string& name, const std::string& fixed_backbone,
                                                const OptionMap& o) {
  auto c = config_from(o, fixed_backbone);
  auto model = fasterrcnn(c, name, &o);
  return model.ptr();
}

inline const bool registered = [] {
  auto& r = core::models();
  r.add({"fasterrcnn", "detector",
         "Faster R-CNN on any supported backbone with attention (DSNet, seed 000, Tables 1-2)", "",
         [](const OptionMap& o) { return build("fasterrcnn", "", o); }});
  r.add({"fasterrcnn_resnet50_fpn", "detector", "torchvision's Faster R-CNN ResNet-50-FPN", "fasterrcnn_resnet50_fpn",
         [](const OptionMap& o) { return build("fasterrcnn_resnet50_fpn", "resnet50", o); }});
  r.add({"fasterrcnn_mobilenet_v3_large_fpn", "detector", "torchvision's Faster R-CNN MobileNetV3-Large-FPN",
         "fasterrcnn_mobilenet_v3_large_fpn",
         [](const OptionMap& o) { return build("fasterrcnn_mobilenet_v3_large_fpn", "mobilenet_v3_large", o); }});
  return true;
}();
}  // namespace detail_registry

/// Builds a registered detector by name ("fasterrcnn", "fasterrcnn_resnet50_fpn",
/// "fasterrcnn_mobilenet_v3_large_fpn") from keyword options.
inline std::shared_ptr<FasterRCNNImpl> create_detector(const std::string& name, const OptionMap& options = {}) {
  core::models().at(name, "detector");
  return core::create<FasterRCNNImpl>(name, options);
}

}  // namespace osteonet::detection
