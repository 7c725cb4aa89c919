// osteonet._core: the compiled extension (one bind_<area> function per include/osteonet folder).
#include <torch/extension.h>

#include <osteonet/core/version.hpp>

#include "common.hpp"

namespace osteonet::bindings {
void bind_models(pybind11::module_& m);
void bind_metrics(pybind11::module_& m);
void bind_detection(pybind11::module_& m);
void bind_clinical(pybind11::module_& m);
void bind_segmentation(pybind11::module_& m);
void bind_train(pybind11::module_& m);
void bind_sequence(pybind11::module_& m);
void bind_runtime(pybind11::module_& m);
void bind_screen(pybind11::module_& m);
}  // namespace osteonet::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "osteonet C++ core (LibTorch)";
  m.attr("__version__") = osteonet::version();
  osteonet::bindings::register_error_translation();
  osteonet::bindings::bind_models(m);
  osteonet::bindings::bind_metrics(m);
  osteonet::bindings::bind_detection(m);
  osteonet::bindings::bind_clinical(m);
  osteonet::bindings::bind_segmentation(m);
  osteonet::bindings::bind_train(m);
  osteonet::bindings::bind_sequence(m);
  osteonet::bindings::bind_runtime(m);
  osteonet::bindings::bind_screen(m);
}
