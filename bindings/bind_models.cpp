// Python bindings of every C++ module (one generic osteonet._core.Module: children, tensors, train
// mode, forward, call overrides), of the model registry, and of the backbone interface.
#include <torch/extension.h>

#include <chrono>

#include <osteonet/backbones/registry.hpp>
#include <osteonet/detail/activations.hpp>
#include <osteonet/detail/norm.hpp>

#include "common.hpp"

namespace py = pybind11;
using osteonet::backbones::BackboneImpl;
using ModulePtr = std::shared_ptr<torch::nn::Module>;

namespace osteonet::bindings {

namespace {

template <size_t D>
py::tuple tuple_of(const torch::ExpandingArray<D>& a) {
  py::tuple t(D);
  for (size_t i = 0; i < D; ++i) t[i] = (*a)[i];
  return t;
}

// LibTorch 1.13's option variants are c10::variant, 2.x's std::variant: the unqualified calls find
// either's get_if/get by argument-dependent lookup.
using std::get;
using std::get_if;

template <size_t D>
py::object conv_padding(const torch::nn::detail::conv_padding_t<D>& p) {
  if (get_if<torch::enumtype::kValid>(&p)) return py::str("valid");
  if (get_if<torch::enumtype::kSame>(&p)) return py::str("same");
  return tuple_of<D>(get<torch::ExpandingArray<D>>(p));
}

std::string padding_mode(const torch::nn::detail::conv_padding_mode_t& m) {
  if (get_if<torch::enumtype::kReflect>(&m)) return "reflect";
  if (get_if<torch::enumtype::kReplicate>(&m)) return "replicate";
  if (get_if<torch::enumtype::kCircular>(&m)) return "circular";
  return "zeros";
}

template <typename Conv>
py::dict conv_kwargs(const Conv& c) {
  constexpr size_t D = std::tuple_size<std::decay_t<decltype(*c.options.kernel_size())>>::value;
  const auto& o = c.options;
  py::dict kw(py::arg("in_channels") = o.in_channels(), py::arg("out_channels") = o.out_channels(),
              py::arg("kernel_size") = tuple_of<D>(o.kernel_size()), py::arg("stride") = tuple_of<D>(o.stride()),
              py::arg("padding") = conv_padding<D>(o.padding()), py::arg("dilation") = tuple_of<D>(o.dilation()),
              py::arg("groups") = o.groups(), py::arg("bias") = o.bias(),
              py::arg("padding_mode") = padding_mode(o.padding_mode()));
  if (o.transposed()) kw["output_padding"] = tuple_of<D>(o.output_padding());
  return kw;
}

template <typename BN>
py::dict norm_kwargs(const BN& b) {
  const auto& o = b.options;
  return py::dict(py::arg("num_features") = o.num_features(), py::arg("eps") = o.eps(),
                  py::arg("momentum") = o.momentum() ? py::object(py::float_(*o.momentum())) : py::object(py::none()),
                  py::arg("affine") = o.affine(), py::arg("track_running_stats") = o.track_running_stats());
}

/// (torch.nn class name, constructor keywords) of LibTorch's own modules (and osteonet's
/// parameter-free Hardswish), whose Python twin osteonet.models builds; None for osteonet modules.
py::object leaf_config(torch::nn::Module& m) {
  namespace nn = torch::nn;
  auto pair = [](const char* cls, py::dict kw) { return py::make_tuple(cls, kw); };
  if (auto* c = m.as<nn::Conv2dImpl>()) return pair("Conv2d", conv_kwargs(*c));
  if (auto* c = m.as<nn::Conv1dImpl>()) return pair("Conv1d", conv_kwargs(*c));
  if (auto* c = m.as<nn::ConvTranspose2dImpl>()) return pair("ConvTranspose2d", conv_kwargs(*c));
  if (auto* b = m.as<nn::BatchNorm2dImpl>()) return pair("BatchNorm2d", norm_kwargs(*b));
  if (auto* b = m.as<nn::BatchNorm1dImpl>()) return pair("BatchNorm1d", norm_kwargs(*b));
  if (auto* l = m.as<nn::LinearImpl>())
    return pair("Linear", py::dict(py::arg("in_features") = l->options.in_features(),
                                   py::arg("out_features") = l->options.out_features(),
                                   py::arg("bias") = l->options.bias()));
  if (auto* r = m.as<nn::ReLUImpl>()) return pair("ReLU", py::dict(py::arg("inplace") = r->options.inplace()));
  if (auto* r = m.as<nn::ReLU6Impl>()) return pair("ReLU6", py::dict(py::arg("inplace") = r->options.inplace()));
  if (auto* h = m.as<osteonet::detail::HardswishImpl>())
    return pair("Hardswish", py::dict(py::arg("inplace") = h->inplace()));
  if (auto* p = m.as<nn::MaxPool2dImpl>()) {
    const auto& o = p->options;
    return pair("MaxPool2d", py::dict(py::arg("kernel_size") = tuple_of<2>(o.kernel_size()),
                                      py::arg("stride") = tuple_of<2>(o.stride()),
                                      py::arg("padding") = tuple_of<2>(o.padding()),
                                      py::arg("dilation") = tuple_of<2>(o.dilation()),
                                      py::arg("ceil_mode") = o.ceil_mode()));
  }
  if (auto* p = m.as<nn::AvgPool2dImpl>()) {
    const auto& o = p->options;
    return pair("AvgPool2d",
                py::dict(py::arg("kernel_size") = tuple_of<2>(o.kernel_size()), py::arg("stride") = tuple_of<2>(o.stride()),
                         py::arg("padding") = tuple_of<2>(o.padding()), py::arg("ceil_mode") = o.ceil_mode(),
                         py::arg("count_include_pad") = o.count_include_pad(),
                         py::arg("divisor_override") = o.divisor_override() ? py::object(py::int_(*o.divisor_override()))
                                                                            : py::object(py::none())));
  }
  if (auto* p = m.as<nn::AdaptiveAvgPool2dImpl>()) {
    py::tuple size(2);
    for (size_t i = 0; i < 2; ++i) {
      const auto& v = (*p->options.output_size())[i];
      size[i] = v ? py::object(py::int_(*v)) : py::object(py::none());
    }
    return pair("AdaptiveAvgPool2d", py::dict(py::arg("output_size") = size));
  }
  if (auto* d = m.as<nn::DropoutImpl>())
    return pair("Dropout", py::dict(py::arg("p") = d->options.p(), py::arg("inplace") = d->options.inplace()));
  if (auto* l = m.as<nn::LSTMImpl>()) {
    const auto& o = l->options;
    return pair("LSTM", py::dict(py::arg("input_size") = o.input_size(), py::arg("hidden_size") = o.hidden_size(),
                                 py::arg("num_layers") = o.num_layers(), py::arg("bias") = o.bias(),
                                 py::arg("batch_first") = o.batch_first(), py::arg("dropout") = o.dropout(),
                                 py::arg("bidirectional") = o.bidirectional()));
  }
  if (m.as<nn::SequentialImpl>()) return pair("Sequential", py::dict());
  if (m.as<nn::ModuleListImpl>()) return pair("ModuleList", py::dict());
  return py::none();
}

/// Tensors from what a Python module returned in place of a C++ call: a tensor, or (nested)
/// tuples/lists of tensors, flattened.
void flatten_tensors(const py::handle& obj, std::vector<torch::Tensor>& out, const std::string& where) {
  if (THPVariable_Check(obj.ptr())) {
    out.push_back(THPVariable_Unpack(obj.ptr()));
  } else if (py::isinstance<py::tuple>(obj) || py::isinstance<py::list>(obj)) {
    for (const auto& item : obj) flatten_tensors(item, out, where);
  } else {
    throw osteonet::TypeError(where + ": the Python module called in its place must return tensors, got " +
                              py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
  }
}

/// A Python object whose last reference may be dropped on a thread without the GIL.
std::shared_ptr<py::object> gil_safe(py::object o) {
  return std::shared_ptr<py::object>(new py::object(std::move(o)), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
}

osteonet::core::Invocable& invocable(torch::nn::Module& m) {
  auto* inv = dynamic_cast<osteonet::core::Invocable*>(&m);
  OSTEONET_CHECK_TYPE(inv != nullptr, m.name(), ": a LibTorch module without an osteonet forward; call its torch.nn twin");
  return *inv;
}

}  // namespace

void bind_models(py::module_& m) {
  py::class_<torch::nn::Module, ModulePtr>(m, "Module", "Any C++ module (osteonet.models mirrors it as torch.nn.Modules).",
                                           py::module_local())
      .def_property_readonly("type_name", [](const torch::nn::Module& self) { return self.name(); })
      .def_property_readonly("id", [](const torch::nn::Module& self) { return reinterpret_cast<std::uintptr_t>(&self); })
      .def("children",
           [](torch::nn::Module& self) {
             std::vector<std::pair<std::string, ModulePtr>> out;
             for (const auto& kv : self.named_children()) out.emplace_back(kv.key(), kv.value());
             return out;
           })
      .def("local_parameters", [](const torch::nn::Module& self) { return to_pairs(self.named_parameters(false)); })
      .def("local_buffers", [](const torch::nn::Module& self) { return to_pairs(self.named_buffers(false)); })
      .def("named_parameters", [](const torch::nn::Module& self) { return to_pairs(self.named_parameters(true)); })
      .def("named_buffers", [](const torch::nn::Module& self) { return to_pairs(self.named_buffers(true)); })
      .def_property_readonly("training", [](const torch::nn::Module& self) { return self.is_training(); })
      .def("train", [](torch::nn::Module& self, bool mode) { self.train(mode); }, py::arg("mode") = true)
      .def("leaf_config", [](torch::nn::Module& self) { return leaf_config(self); })
      .def_property_readonly("invocable",
                             [](torch::nn::Module& self) { return dynamic_cast<core::Invocable*>(&self) != nullptr; })
      .def("opaque_children",
           [](torch::nn::Module& self) {
             auto* inv = dynamic_cast<core::Invocable*>(&self);
             return inv ? inv->opaque_children() : std::vector<std::string>{};
           })
      .def("walked_children",
           [](torch::nn::Module& self) {
             auto* inv = dynamic_cast<core::Invocable*>(&self);
             return inv ? inv->walked_children() : std::vector<std::string>{};
           })
      .def("forward",
           [](torch::nn::Module& self, const py::args& args) -> py::object {
             std::vector<torch::Tensor> in;
             for (const auto& a : args) flatten_tensors(a, in, self.name());
             auto& inv = invocable(self);
             std::vector<torch::Tensor> out;
             {
               py::gil_scoped_release release;
               out = inv.invoke(in);
             }
             if (out.size() == 1) return py::cast(out[0]);
             return py::cast(out);
           })
      .def("set_call_override",
           [](const ModulePtr& self, py::function fn) {
             auto held = gil_safe(std::move(fn));
             const std::string where = self->name();
             core::CallOverrides::instance().set(self, [held, where](const std::vector<torch::Tensor>& args) {
               py::gil_scoped_acquire gil;
               py::tuple t(args.size());
               for (size_t i = 0; i < args.size(); ++i) t[i] = py::cast(args[i]);
               py::object result = (*held)(*t);
               std::vector<torch::Tensor> out;
               flatten_tensors(result, out, where);
               return out;
             });
           },
           py::arg("fn"))
      .def("clear_call_override",
           [](const ModulePtr& self) { core::CallOverrides::instance().erase(self.get()); })
      .def_property_readonly("has_call_override",
                             [](const ModulePtr& self) { return core::overridden(self.get()); });

  m.def("call_override_count", [] { return core::CallOverrides::instance().size(); },
        "How many C++ modules Python currently runs in place of their C++ forward (all models).");

  // The registry.
  m.def(
      "registry_entries",
      [](const std::string& family) {
        py::list out;
        for (const auto& e : core::models().entries())
          if (family.empty() || e.family == family)
            out.append(py::dict(py::arg("name") = e.name, py::arg("family") = e.family,
                                py::arg("description") = e.description, py::arg("reference") = e.reference));
        return out;
      },
      py::arg("family") = "");
  m.def(
      "create",
      [](const std::string& name, const py::dict& options) {
        auto o = to_option_map(options);
        py::gil_scoped_release release;
        return core::models().create(name, o);
      },
      py::arg("name"), py::arg("options") = py::dict());
  m.def(
      "family_of", [](const std::string& name) { return core::models().at(name).family; }, py::arg("name"));
  m.def(
      "option_defaults",
      [](const std::string& name) {
        py::dict out;
        for (const auto& kv : core::models().option_defaults(name))
          out[py::str(kv.first)] = std::visit([](const auto& v) { return py::cast(v); }, kv.second);
        return out;
      },
      py::arg("name"));

  py::class_<BackboneImpl, std::shared_ptr<BackboneImpl>>(m, "Backbone", "The backbone interface of a C++ model.",
                                                          py::module_local())
      .def("forward_features", [](BackboneImpl& self, const torch::Tensor& x) { return self.forward_features(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("forward_head",
           [](BackboneImpl& self, const torch::Tensor& x, bool pre_logits) { return self.forward_head(x, pre_logits); },
           py::arg("x"), py::arg("pre_logits") = false, py::call_guard<py::gil_scoped_release>())
      .def("forward_intermediates",
           [](BackboneImpl& self, const torch::Tensor& x) { return self.forward_intermediates(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("forward_heads", [](BackboneImpl& self, const torch::Tensor& x) { return self.forward_heads(x); },
           py::call_guard<py::gil_scoped_release>())
      .def("reset_classifier", &BackboneImpl::reset_classifier, py::arg("num_classes"))
      .def("check_input", &BackboneImpl::check_input)
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
      .def_property_readonly("min_input_size", &BackboneImpl::min_input_size)
      .def_property_readonly("stem_path", &BackboneImpl::stem_path)
      .def_property_readonly("head_path", &BackboneImpl::head_path);
  m.def("as_backbone", [](const ModulePtr& self) { return as_family<BackboneImpl>(self, "backbone"); });

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
