// Shared pieces of the bindings: error translation and keyword-option conversion.
#pragma once

#include <torch/extension.h>

#include <string>

#include "osteonet/core/error.hpp"
#include "osteonet/core/options.hpp"

namespace osteonet::bindings {

namespace py = pybind11;

/// The first line of a message (LibTorch messages may carry context lines and backtraces), at most
/// 1,000 characters (a long value echoed in it is cut with "...").
inline std::string first_line(const std::string& s) {
  auto pos = s.find('\n');
  return shorten(pos == std::string::npos ? s : s.substr(0, pos), 1000);
}

/// Maps osteonet's and LibTorch's C++ exceptions to Python exceptions with one-line messages. Module-local:
/// a global translator would also rewrite what other extensions throw (torch._C's own pybind11 cast errors
/// came out as this module's message).
inline void register_error_translation() {
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const osteonet::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, first_line(e.what()).c_str());
    } catch (const osteonet::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, first_line(e.what()).c_str());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, first_line(e.what_without_backtrace()).c_str());
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, first_line(e.what_without_backtrace()).c_str());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, first_line(e.what_without_backtrace()).c_str());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, first_line(e.what_without_backtrace()).c_str());
    } catch (const py::cast_error& e) {
      // pybind's own text names no argument and advertises a debug macro: say what kind of value failed.
      PyErr_SetString(PyExc_TypeError,
                      "a value has the wrong type for this osteonet function (expected a tensor, a number, a string "
                      "or a list/dict of them as documented; nested Python lists are not tensors)");
    }
  });
}

/// `v` as a tensor, or TypeError "<where>: <what> must be a torch.Tensor, got <type>" (a list of boxes is
/// not converted silently: its shape and dtype would be guesses).
inline torch::Tensor tensor_arg(const py::handle& v, const std::string& where, const std::string& what) {
  OSTEONET_CHECK_TYPE(THPVariable_Check(v.ptr()), where, ": ", what, " must be a torch.Tensor, got ",
                      py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>());
  return v.cast<torch::Tensor>();
}

/// A list or tuple of tensors (TypeError naming the item that is not one).
inline std::vector<torch::Tensor> tensor_list_arg(const py::handle& v, const std::string& where, const std::string& what) {
  OSTEONET_CHECK_TYPE(py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v), where, ": ", what,
                      " must be a list of tensors, got ", py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>());
  std::vector<torch::Tensor> out;
  std::size_t i = 0;
  for (const auto& item : py::reinterpret_borrow<py::sequence>(v)) out.push_back(tensor_arg(item, where, what + "[" + std::to_string(i++) + "]"));
  return out;
}

/// Python keyword arguments -> OptionMap (bool, int, float, str values).
inline OptionMap to_option_map(const py::dict& kwargs) {
  OptionMap map;
  for (const auto& kv : kwargs) {
    const auto key = py::str(kv.first).cast<std::string>();
    const py::handle v = kv.second;
    if (py::isinstance<py::bool_>(v)) {
      map.set(key, v.cast<bool>());
    } else if (py::isinstance<py::int_>(v)) {
      map.set(key, v.cast<int64_t>());
    } else if (py::isinstance<py::float_>(v)) {
      map.set(key, v.cast<double>());
    } else if (py::isinstance<py::str>(v)) {
      map.set(key, v.cast<std::string>());
    } else {
      throw osteonet::TypeError("option '" + key + "': expected bool, int, float or str, got " +
                                py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>());
    }
  }
  return map;
}

/// (name, tensor) pairs of a LibTorch OrderedDict (parameters, buffers).
inline std::vector<std::pair<std::string, torch::Tensor>> to_pairs(const torch::OrderedDict<std::string, torch::Tensor>& d) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.reserve(d.size());
  for (const auto& kv : d) out.emplace_back(kv.key(), kv.value());
  return out;
}

/// Detections as torchvision's detectors return them in eval: a list of dicts of boxes, labels, scores.
template <typename Detections>
py::list detections_to_list(const Detections& detections) {
  py::list out;
  for (const auto& d : detections)
    out.append(py::dict(py::arg("boxes") = d.boxes, py::arg("labels") = d.labels, py::arg("scores") = d.scores));
  return out;
}

/// `m` as the family interface `T` (TypeError naming the family when it is not one).
template <typename T>
std::shared_ptr<T> as_family(const std::shared_ptr<torch::nn::Module>& m, const char* family) {
  OSTEONET_CHECK_TYPE(m != nullptr, "expected a module, got None");
  auto p = std::dynamic_pointer_cast<T>(m);
  OSTEONET_CHECK_TYPE(p != nullptr, m->name(), " is not a ", family);
  return p;
}

}  // namespace osteonet::bindings
