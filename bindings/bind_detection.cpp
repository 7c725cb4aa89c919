// Python bindings of the detection ops (NMS, RoIAlign, boxes, anchors) and of Faster R-CNN
// (osteonet._core.Detector; wrapped as a torch.nn.Module by osteonet.detection).
#include <torch/extension.h>

#include <osteonet/detection/faster_rcnn.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace det = osteonet::detection;

namespace osteonet::bindings {

namespace {

std::vector<det::Target> to_targets(const py::object& targets, const std::string& where) {
  OSTEONET_CHECK_TYPE(py::isinstance<py::list>(targets) || py::isinstance<py::tuple>(targets), where,
                      ": targets must be a list of dicts (one per image), got ",
                      py::str(py::type::handle_of(targets).attr("__name__")).cast<std::string>());
  std::vector<det::Target> out;
  size_t i = 0;
  for (const auto& t : py::reinterpret_borrow<py::sequence>(targets)) {
    OSTEONET_CHECK_TYPE(py::isinstance<py::dict>(t), where, ": target ", i, " must be a dict with 'boxes' and 'labels'");
    auto d = t.cast<py::dict>();
    OSTEONET_CHECK(d.contains("boxes") && d.contains("labels"), where, ": target ", i,
                   " must have keys 'boxes' and 'labels'");
    const std::string at = "target " + std::to_string(i);
    out.push_back({tensor_arg(d["boxes"], where, at + " boxes (K x 4)"), tensor_arg(d["labels"], where, at + " labels (K)")});
    ++i;
  }
  return out;
}

}  // namespace

void bind_detection(py::module_& m) {
  m.def("nms", &det::nms, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"), py::arg("block") = 256,
        py::call_guard<py::gil_scoped_release>());
  m.def("batched_nms", &det::batched_nms, py::arg("boxes"), py::arg("scores"), py::arg("idxs"),
        py::arg("iou_threshold"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "roi_align",
      [](const torch::Tensor& input, const torch::Tensor& rois, std::array<int64_t, 2> output_size,
         double spatial_scale, int64_t sampling_ratio, bool aligned) {
        return det::roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned);
      },
      py::arg("input"), py::arg("rois"), py::arg("output_size"), py::arg("spatial_scale") = 1.0,
      py::arg("sampling_ratio") = -1, py::arg("aligned") = false, py::call_guard<py::gil_scoped_release>());
  m.def("box_iou", &det::box_iou);
  m.def("box_encode",
        [](const torch::Tensor& reference, const torch::Tensor& proposals, std::array<double, 4> weights) {
          return det::BoxCoder(weights).encode_single(reference, proposals);
        });
  m.def("box_decode", [](const torch::Tensor& codes, const torch::Tensor& boxes, std::array<double, 4> weights) {
    return det::BoxCoder(weights).decode_single(codes, boxes);
  });
  m.def(
      "grid_anchors",
      [](const std::vector<std::vector<double>>& sizes, const std::vector<std::vector<double>>& ratios,
         std::array<int64_t, 2> batch_hw, const std::vector<torch::Tensor>& features) {
        det::AnchorGenerator g(det::AnchorGeneratorOptions().sizes(sizes).aspect_ratios(ratios));
        return g->forward(batch_hw, features);
      },
      py::arg("sizes"), py::arg("aspect_ratios"), py::arg("batch_hw"), py::arg("features"));
  m.def(
      "multiscale_roi_align",
      [](const std::vector<torch::Tensor>& features, const std::vector<torch::Tensor>& boxes,
         const std::vector<std::array<int64_t, 2>>& image_sizes, int64_t output_size, int64_t sampling_ratio) {
        return det::multiscale_roi_align(features, boxes, image_sizes, output_size, sampling_ratio);
      },
      py::arg("features"), py::arg("boxes"), py::arg("image_sizes"), py::arg("output_size") = 7,
      py::arg("sampling_ratio") = 2);

  // A registered subclass of osteonet._core.Module: a detector returned as a Module is this type.
  py::class_<det::FasterRCNNImpl, torch::nn::Module, std::shared_ptr<det::FasterRCNNImpl>>(
      m, "Detector", "A C++ osteonet Faster R-CNN.", py::module_local(), py::multiple_inheritance())
      .def("forward",
           [](det::FasterRCNNImpl& self, const py::object& image_list, const py::object& targets) {
             const auto images = tensor_list_arg(image_list, self.name(), "images");
             std::vector<det::Target> t;
             const bool has_t = !targets.is_none();
             if (has_t) t = to_targets(targets, self.name());
             det::DetectorOutput out;
             {
               py::gil_scoped_release release;
               out = self.forward(images, has_t ? &t : nullptr);
             }
             if (self.is_training()) {
               py::dict losses;
               for (const auto& kv : out.losses) losses[py::str(kv.first)] = kv.second;
               return py::object(losses);
             }
             return py::object(detections_to_list(out.detections));
           },
           py::arg("images"), py::arg("targets") = py::none())
      .def_property_readonly("name", &det::FasterRCNNImpl::name)
      .def_property_readonly("num_classes", &det::FasterRCNNImpl::num_classes);
  m.def("as_detector", [](const std::shared_ptr<torch::nn::Module>& self) {
    return as_family<det::FasterRCNNImpl>(self, "detector");
  });
}

}  // namespace osteonet::bindings
