// Python bindings of the model registry and the backbone contract (osteonet._core).
#include <torch/extension.h>

#include <chrono>

#include <osteonet/backbones/registry.hpp>

#include "common.hpp"

namespace py = pybind11;
using osteonet::backbones::BackboneImpl;

namespace osteonet::bindings {


void bind_models(py::module_& m) {
  py::class_<BackboneImpl, std::shared_ptr<BackboneImpl>>(m, "Backbone",
                                                          "A C++ osteonet backbone (wrap it with osteonet.models).")
      .def("forward", [](BackboneImpl& self, const torch::Tensor& x) { return self.forward(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("forward_heads", [](BackboneImpl& self, const torch::Tensor& x) { return self.forward_heads(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("forward_features", [](BackboneImpl& self, const torch::Tensor& x) { return self.forward_features(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("check_input", &BackboneImpl::check_input)
      .def("train", [](BackboneImpl& self, bool mode) { self.train(mode); }, py::arg("mode") = true)
      .def("train_submodule",
           [](BackboneImpl& self, const std::string& qualname, bool mode) { find_submodule(self.module(), qualname, "Backbone")->train(mode); })
      .def_property_readonly("training", [](const BackboneImpl& self) { return self.is_training(); })
      .def("named_parameters", [](const BackboneImpl& self) { return to_pairs(self.named_parameters(true)); })
      .def("named_buffers", [](const BackboneImpl& self) { return to_pairs(self.named_buffers(true)); })
      .def("module_tree", [](BackboneImpl& self) { return module_tree(self.module()); })
      .def_property_readonly("feature_info",
                             [](const BackboneImpl& self) {
                               py::list out;
                               for (const auto& f : self.feature_info())
                                 out.append(py::dict(py::arg("name") = f.name, py::arg("channels") = f.channels,
                                                     py::arg("stride") = f.stride));
                               return out;
                             })
      .def_property_readonly("name", &BackboneImpl::model_name)
      .def_property_readonly("in_chans", &BackboneImpl::in_chans)
      .def_property_readonly("num_classes", &BackboneImpl::num_classes)
      .def_property_readonly("min_input_size", &BackboneImpl::min_input_size);

  m.def("list_models", &osteonet::models::list_models, "Names of every registered model.");
  m.def(
      "model_info",
      [](const std::string& name) {
        const auto& e = osteonet::models::model_entry(name);
        return py::dict(py::arg("name") = e.name, py::arg("description") = e.description,
                        py::arg("torchvision") = e.torchvision);
      },
      py::arg("name"));
  m.def(
      "create_model",
      [](const std::string& name, int64_t num_classes, const std::string& attention, int64_t in_chans,
         const py::dict& options) {
        osteonet::models::ModelConfig cfg;
        cfg.num_classes = num_classes;
        cfg.in_chans = in_chans;
        cfg.attention = attention;
        cfg.options = to_option_map(options);
        return osteonet::models::create_model(name, cfg);
      },
      py::arg("name"), py::arg("num_classes") = 1000, py::arg("attention") = "none", py::arg("in_chans") = 3,
      py::arg("options") = py::dict());
  m.def(
      "time_forward",
      [](BackboneImpl& self, const torch::Tensor& x, int64_t repeats) {
        // Milliseconds of each of `repeats` inference forwards run back to back in C++ (no Python in
        // the loop): the "from C++" column of the benchmarks.
        OSTEONET_CHECK(repeats > 0, "time_forward: repeats must be positive, got repeats=", repeats);
        torch::NoGradGuard no_grad;
        std::vector<double> ms;
        for (int64_t r = 0; r < repeats; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          self.forward(x);
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        return ms;
      },
      py::arg("model"), py::arg("x"), py::arg("repeats") = 1, py::call_guard<py::gil_scoped_release>());
  m.def("attention_names", &osteonet::attention::attention_names);
  m.def("eca_kernel_size", &osteonet::attention::eca_kernel_size, py::arg("channels"), py::arg("gamma") = 2.0,
        py::arg("beta") = 1.0);
}

}  // namespace osteonet::bindings
