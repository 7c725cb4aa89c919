// Python bindings of the inference runtime (osteonet._core.InferenceSession, issue 8).
#include <torch/extension.h>

#include <osteonet/runtime/detector_session.hpp>
#include <osteonet/runtime/inference_session.hpp>

#include "common.hpp"

namespace py = pybind11;
using osteonet::backbones::BackboneImpl;
using osteonet::runtime::DetectorSession;
using osteonet::runtime::InferenceSession;
using osteonet::runtime::InferenceSessionOptions;

namespace osteonet::bindings {

void bind_runtime(py::module_& m) {
  py::class_<InferenceSession, std::shared_ptr<InferenceSession>>(m, "InferenceSession",
                                                                  "A prepared copy of a backbone for inference.")
      .def(py::init([](const BackboneImpl& model, int64_t num_classes, const std::string& attention, int64_t in_chans,
                       const py::dict& model_options, const torch::Tensor& example, const std::string& dtype,
                       const std::string& device, bool cuda_graph, bool freeze, int64_t num_threads, int64_t warmup,
                       int64_t max_shapes, bool features, bool float32_ends) {
             osteonet::models::ModelConfig cfg;
             cfg.num_classes = num_classes;
             cfg.in_chans = in_chans;
             cfg.attention = attention;
             cfg.options = to_option_map(model_options);
             py::gil_scoped_release release;  // tracing and freezing take a while
             InferenceSessionOptions o;
             o.dtype(dtype).device(device).cuda_graph(cuda_graph).freeze(freeze).num_threads(num_threads)
                 .warmup(warmup).max_shapes(max_shapes).features(features).float32_ends(float32_ends);
             return std::make_shared<InferenceSession>(model, cfg, example, o);
           }),
           py::arg("model"), py::arg("num_classes"), py::arg("attention"), py::arg("in_chans"), py::arg("model_options"),
           py::arg("example"), py::arg("dtype") = "float32", py::arg("device") = "cpu",
           py::arg("cuda_graph") = true, py::arg("freeze") = true, py::arg("num_threads") = 0, py::arg("warmup") = 2,
           py::arg("max_shapes") = 8, py::arg("features") = false, py::arg("float32_ends") = false)
      .def("__call__", [](InferenceSession& s, const torch::Tensor& x) { return s.forward(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("forward_eager", &InferenceSession::forward_eager, py::arg("x"), py::call_guard<py::gil_scoped_release>(),
           "The folded copy run eagerly, past the per-shape programs.")
      .def_property_readonly("accuracy", &InferenceSession::accuracy)
      .def("accuracy_of", &InferenceSession::accuracy_of, py::arg("outputs"),
           "The accuracy measure of another program's float32 outputs for the example input.")
      .def_property_readonly("tolerance", &InferenceSession::tolerance)
      .def_property_readonly("dtype", &InferenceSession::dtype)
      .def_property_readonly("float32_modules", &InferenceSession::float32_modules)
      .def_property_readonly("device", [](const InferenceSession& s) { return s.device().str(); })
      .def_property_readonly("folded", &InferenceSession::folded)
      .def_property_readonly("mode", &InferenceSession::mode)
      .def_property_readonly("cached_shapes", &InferenceSession::cached_shapes)
      .def_property_readonly("model_name", &InferenceSession::model_name)
      .def_property_readonly("features", [](const InferenceSession& s) { return s.options().features(); });
  py::class_<DetectorSession, std::shared_ptr<DetectorSession>>(m, "DetectorSession",
                                                                "A prepared copy of a Faster R-CNN for inference.")
      .def(py::init([](const osteonet::detection::FasterRCNNImpl& model, const std::vector<torch::Tensor>& example,
                       const std::string& dtype, const std::string& device, bool cuda_graph, bool freeze,
                       int64_t num_threads, int64_t warmup, int64_t max_shapes) {
             py::gil_scoped_release release;  // tracing and freezing take a while
             InferenceSessionOptions o;
             o.dtype(dtype).device(device).cuda_graph(cuda_graph).freeze(freeze).num_threads(num_threads)
                 .warmup(warmup).max_shapes(max_shapes);
             return std::make_shared<DetectorSession>(model, example, o);
           }),
           py::arg("model"), py::arg("example"), py::arg("dtype") = "float32", py::arg("device") = "cpu",
           py::arg("cuda_graph") = true, py::arg("freeze") = true, py::arg("num_threads") = 0, py::arg("warmup") = 2,
           py::arg("max_shapes") = 8)
      .def("__call__",
           [](DetectorSession& s, const std::vector<torch::Tensor>& images) {
             std::vector<osteonet::detection::Detection> dets;
             {
               py::gil_scoped_release release;
               dets = s(images);
             }
             return detections_to_list(dets);
           })
      .def("backbone_maps",
           [](DetectorSession& s, const torch::Tensor& batch) {
             py::gil_scoped_release release;
             return s.backbone_maps(batch);
           },
           py::arg("batch"), "backbone + FPN maps of a padded, normalised batch through the prepared program")
      .def_property_readonly("accuracy", &DetectorSession::accuracy)
      .def_property_readonly("dtype", &DetectorSession::dtype)
      .def_property_readonly("device", [](const DetectorSession& s) { return s.device().str(); })
      .def_property_readonly("folded", &DetectorSession::folded)
      .def_property_readonly("mode", &DetectorSession::mode)
      .def_property_readonly("cached_shapes", &DetectorSession::cached_shapes)
      .def_property_readonly("model_name", &DetectorSession::model_name);
  m.def("runtime_built_with_cuda", &osteonet::runtime::built_with_cuda);
  m.def("cpu_has_bf16", &osteonet::runtime::cpu_has_bf16);
}

}  // namespace osteonet::bindings
