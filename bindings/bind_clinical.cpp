// Python bindings of the clinical categories (osteonet._core.clinical).
#include <torch/extension.h>

#include <osteonet/clinical/categories.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace oc = osteonet::clinical;

namespace osteonet::bindings {

void bind_clinical(py::module_& root) {
  auto m = root.def_submodule("clinical", "WHO (T-score) and ACR (QCT BMD) bone-density classes");
  m.def("class_names", [] { return std::vector<std::string>(oc::class_names().begin(), oc::class_names().end()); });
  m.def("class_index", [](const std::string& n) { return static_cast<int64_t>(oc::class_from_name(n)); }, py::arg("name"));
  m.def("who_class", [](double t) { return static_cast<int64_t>(oc::who_class(t)); }, py::arg("t_score"));
  m.def("who_class_tensor", [](const torch::Tensor& t) { return oc::who_class(t); }, py::arg("t_scores"));
  m.def("acr_class", [](double b) { return static_cast<int64_t>(oc::acr_class(b)); }, py::arg("bmd"));
  m.def("acr_class_tensor", [](const torch::Tensor& b) { return oc::acr_class(b); }, py::arg("bmd"));
  m.def("t_score", &oc::t_score, py::arg("bmd"), py::arg("young_mean"), py::arg("young_sd"));
}

}  // namespace osteonet::bindings
