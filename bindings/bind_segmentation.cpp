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
  py::class_<os::SegmenterImpl, std::shared_ptr<os::SegmenterImpl>>(m, "Segmenter", py::module_local())
      .def("forward", [](os::SegmenterImpl& self, const torch::Tensor& x) { return self.forward(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("forward_all", [](os::SegmenterImpl& self, const torch::Tensor& x) { return self.forward_all(x); },
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("name", &os::SegmenterImpl::model_name)
      .def_property_readonly("in_chans", &os::SegmenterImpl::in_chans)
      .def_property_readonly("num_classes", &os::SegmenterImpl::num_classes);
  m.def("as_segmenter", [](const std::shared_ptr<torch::nn::Module>& self) {
    return as_family<os::SegmenterImpl>(self, "segmenter");
  });
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
