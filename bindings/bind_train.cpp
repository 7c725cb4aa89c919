// Python bindings of the training engine's C++ core (osteonet._core.train): schedules, early stopping and
// the checkpoint checks, which osteonet.train's loop uses, so a C++ training loop behaves alike.
#include <torch/extension.h>

#include <osteonet/train/checkpoint.hpp>
#include <osteonet/train/optim.hpp>
#include <osteonet/train/schedule.hpp>
#include <osteonet/train/early_stopping.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace ot = osteonet::train;

namespace osteonet::bindings {

void bind_train(py::module_& parent) {
  auto m = parent.def_submodule("train", "osteonet training engine (C++ core; use osteonet.train)");

  py::class_<ot::Schedule, std::shared_ptr<ot::Schedule>>(m, "Schedule")
      .def("attach", &ot::Schedule::attach, py::arg("base_lrs"))
      .def("step", [](ot::Schedule& s, py::object metric) {
        s.step(metric.is_none() ? std::numeric_limits<double>::quiet_NaN() : metric.cast<double>());
      }, py::arg("metric") = py::none())
      .def_property_readonly("lrs", &ot::Schedule::lrs)
      .def_property_readonly("epoch", &ot::Schedule::epoch)
      .def_property_readonly("name", &ot::Schedule::name)
      .def("state_dict", &ot::Schedule::state_dict)
      .def("load_state_dict", &ot::Schedule::load_state_dict, py::arg("state"));

  m.def("make_schedule", [](const std::string& name, const py::kwargs& kw) {
    return ot::make_schedule(name, to_option_map(kw));
  }, py::arg("name"));
  m.def("schedule_names", &ot::schedule_names);
  m.def("optimizer_names", &ot::optimizer_names);

  py::class_<ot::EarlyStopping>(m, "EarlyStopping")
      .def(py::init<int64_t, const std::string&, double>(), py::arg("patience") = 0, py::arg("mode") = "min",
           py::arg("min_delta") = 0.0)
      .def("update", &ot::EarlyStopping::update, py::arg("value"))
      .def_property_readonly("should_stop", &ot::EarlyStopping::should_stop)
      .def_property_readonly("best", &ot::EarlyStopping::best)
      .def_property_readonly("num_bad", &ot::EarlyStopping::num_bad)
      .def("state_dict", &ot::EarlyStopping::state_dict)
      .def("load_state_dict", &ot::EarlyStopping::load_state_dict, py::arg("state"));

  m.def("check_checkpoint_file", [](const std::string& path) {
    py::gil_scoped_release release;
    ot::read_checkpoint_bytes(path);
  }, py::arg("path"));
  m.def("checkpoint_summary", [](const std::string& path) {
    // Read by C++ (torch::pickle_load): a file Python wrote is readable on the C++ side too.
    const auto d = ot::read_checkpoint(path);
    py::dict out;
    out["version"] = d.at("osteonet_checkpoint").toInt();
    out["writer"] = d.contains("writer") ? d.at("writer").toStringRef() : std::string("?");
    out["epoch"] = d.contains("epoch") ? d.at("epoch").toInt() : -1;
    py::list keys;
    for (const auto& kv : d) keys.append(kv.key().toStringRef());
    out["keys"] = keys;
    if (d.contains("model")) {
      py::dict shapes;
      for (const auto& kv : d.at("model").toGenericDict()) shapes[py::str(kv.key().toStringRef())] = kv.value().toTensor().sizes().vec();
      out["model_shapes"] = shapes;
    }
    return out;
  }, py::arg("path"));
  m.def("tensor_sha256", &ot::tensor_sha256, py::arg("tensor"));
  m.def("state_checksums", [](const std::map<std::string, torch::Tensor>& state) {
    py::gil_scoped_release release;
    return ot::state_checksums(state);
  }, py::arg("state"));
  m.def("verify_checksums", [](const std::string& where, const std::map<std::string, torch::Tensor>& state,
                               const std::map<std::string, std::string>& checksums) {
    py::gil_scoped_release release;
    ot::verify_checksums(where, state, checksums);
  }, py::arg("where"), py::arg("state"), py::arg("checksums"));
  m.attr("CHECKPOINT_VERSION") = ot::kCheckpointVersion;
  m.attr("FIRST_VERIFIED_VERSION") = ot::kFirstVerifiedVersion;
}

}  // namespace osteonet::bindings
