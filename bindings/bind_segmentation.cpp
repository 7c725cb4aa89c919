// Python bindings of the segmentation models, losses, sliding window and matting (osteonet._core.segmentation).
#include <torch/extension.h>

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <osteonet/segmentation/segmentation.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace os = osteonet::segmentation;

namespace osteonet::bindings {

void bind_segmentation(py::module_& root) {
  auto m = root.def_submodule("segmentation", "U-Net, U-Net++, losses, sliding-window inference, matting");
  py::class_<os::SegmenterImpl, std::shared_ptr<os::SegmenterImpl>>(m, "Segmenter")
      .def("forward", [](os::SegmenterImpl& self, const torch::Tensor& x) { return self.forward(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("forward_all", [](os::SegmenterImpl& self, const torch::Tensor& x) { return self.forward_all(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("train", [](os::SegmenterImpl& self, bool mode) { self.module().train(mode); }, py::arg("mode") = true)
      .def("train_submodule",
           [](os::SegmenterImpl& self, const std::string& q, bool mode) {
             find_submodule(self.module(), q, self.model_name())->train(mode);
           })
      .def("named_parameters", [](os::SegmenterImpl& self) { return to_pairs(self.module().named_parameters(true)); })
      .def("named_buffers", [](os::SegmenterImpl& self) { return to_pairs(self.module().named_buffers(true)); })
      .def("module_tree", [](os::SegmenterImpl& self) { return module_tree(self.module()); })
      .def_property_readonly("name", &os::SegmenterImpl::model_name)
      .def_property_readonly("in_chans", &os::SegmenterImpl::in_chans)
      .def_property_readonly("num_classes", &os::SegmenterImpl::num_classes);
  m.def("list_segmenters", &os::list_segmenters);
  m.def(
      "create_segmenter",
      [](const std::string& name, int64_t in_chans, int64_t num_classes, const py::dict& kw) {
        return os::create_segmenter(name, in_chans, num_classes, to_option_map(kw));
      },
      py::arg("name"), py::arg("in_chans") = 1, py::arg("num_classes") = 2, py::arg("options") = py::dict());
  m.def("dice_loss", &os::dice_loss, py::arg("logits"), py::arg("target"), py::arg("include_background") = true,
        py::arg("eps") = 1e-5);
  m.def("cross_entropy_loss", &os::cross_entropy_loss, py::arg("logits"), py::arg("target"));
  m.def("combined_loss", &os::combined_loss, py::arg("logits"), py::arg("target"), py::arg("ce_weight") = 1.0,
        py::arg("dice_weight") = 1.0);
  m.def(
      "sliding_window_segmenter",
      [](os::SegmenterImpl& model, const torch::Tensor& image, std::vector<int64_t> window, double overlap,
         const std::string& blend) {
        return os::sliding_window_inference([&](const torch::Tensor& t) { return model.forward(t); }, image,
                                            os::SlidingWindowOptions().window(window).overlap(overlap).blend(blend));
      },
      py::arg("model"), py::arg("image"), py::arg("window"), py::arg("overlap") = 0.5, py::arg("blend") = "gaussian",
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "sliding_window_callable",
      [](const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& image,
         std::vector<int64_t> window, double overlap, const std::string& blend) {
        return os::sliding_window_inference(fn, image, os::SlidingWindowOptions().window(window).overlap(overlap).blend(blend));
      },
      py::arg("fn"), py::arg("image"), py::arg("window"), py::arg("overlap") = 0.5, py::arg("blend") = "gaussian");
  m.def("mat_region", &os::mat_region, py::arg("image"), py::arg("mask"), py::arg("size") = 224, py::arg("margin") = 0.1);
}

}  // namespace osteonet::bindings
