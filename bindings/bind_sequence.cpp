// Python bindings of seed 002's sequence pipeline: the ovf_resnet34 slice encoder's extra methods,
// the aggregators, the scan pipeline, preprocessing helpers and occlusion sensitivity.
#include <torch/extension.h>

#include <osteonet/backbones/registry.hpp>
#include <osteonet/sequence/aggregators.hpp>
#include <osteonet/sequence/occlusion.hpp>
#include <osteonet/sequence/pipeline.hpp>
#include <osteonet/sequence/slice_encoder.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace seq = osteonet::sequence;
using osteonet::backbones::BackboneImpl;

namespace osteonet::bindings {

namespace {

torch::Tensor optional_tensor(const py::object& o) { return o.is_none() ? torch::Tensor() : o.cast<torch::Tensor>(); }

py::dict prediction_dict(const seq::ScanPrediction& p) {
  return py::dict(py::arg("probability") = p.probability, py::arg("slice_probabilities") = p.slice_probabilities,
                  py::arg("slice_indices") = p.slice_indices, py::arg("positive") = p.positive);
}

}  // namespace

void bind_sequence(py::module_& m) {
  py::class_<seq::OvfResNet34Impl, BackboneImpl, std::shared_ptr<seq::OvfResNet34Impl>>(
      m, "OvfResNet34", "Seed 002's slice encoder (a Backbone with the 512 -> 32 -> 1 head).",
      // The C++ class also derives from torch::nn::Module (not bound): pybind must apply pointer offsets.
      py::multiple_inheritance())
      .def("backbone_features", &seq::OvfResNet34Impl::backbone_features, py::call_guard<py::gil_scoped_release>())
      .def("embed", &seq::OvfResNet34Impl::embed, py::call_guard<py::gil_scoped_release>())
      .def("features", &seq::OvfResNet34Impl::features, py::call_guard<py::gil_scoped_release>())
      .def("head", &seq::OvfResNet34Impl::head, py::call_guard<py::gil_scoped_release>())
      .def("set_batchnorm_frozen", &seq::OvfResNet34Impl::set_batchnorm_frozen, py::arg("frozen") = true)
      .def_property_readonly("batchnorm_frozen", &seq::OvfResNet34Impl::batchnorm_frozen)
      .def_property_readonly("embed_dim", [](const seq::OvfResNet34Impl& self) { return self.options.embed_dim(); });

  py::class_<seq::AggregatorImpl, seq::AggregatorPtr>(m, "Aggregator", "A C++ slice aggregator (wrap it with osteonet.sequence).")
      .def("forward",
           [](seq::AggregatorImpl& self, const torch::Tensor& x, const py::object& lengths) {
             auto len = optional_tensor(lengths);
             py::gil_scoped_release release;
             return self.forward(x, len);
           },
           py::arg("x"), py::arg("lengths") = py::none())
      .def("train", [](seq::AggregatorImpl& self, bool mode) { self.train(mode); }, py::arg("mode") = true)
      .def("train_submodule",
           [](seq::AggregatorImpl& self, const std::string& qualname, bool mode) {
             find_submodule(self.module(), qualname, self.name())->train(mode);
           })
      .def_property_readonly("training", [](const seq::AggregatorImpl& self) { return self.is_training(); })
      .def("named_parameters", [](const seq::AggregatorImpl& self) { return to_pairs(self.named_parameters(true)); })
      .def("named_buffers", [](const seq::AggregatorImpl& self) { return to_pairs(self.named_buffers(true)); })
      .def("module_tree", [](seq::AggregatorImpl& self) { return module_tree(self.module()); })
      .def_property_readonly("name", &seq::AggregatorImpl::name)
      .def_property_readonly("input_dim", &seq::AggregatorImpl::input_dim)
      .def_property_readonly("takes_probabilities", &seq::AggregatorImpl::takes_probabilities);

  py::class_<seq::LstmAggregatorImpl, seq::AggregatorImpl, std::shared_ptr<seq::LstmAggregatorImpl>>(m, "LstmAggregator",
                                                                                                   py::multiple_inheritance())
      .def("forward_logits",
           [](seq::LstmAggregatorImpl& self, const torch::Tensor& x, const py::object& lengths) {
             auto len = optional_tensor(lengths);
             py::gil_scoped_release release;
             return self.forward_logits(x, len);
           },
           py::arg("x"), py::arg("lengths") = py::none())
      .def("last_hidden",
           [](seq::LstmAggregatorImpl& self, const torch::Tensor& x, const py::object& lengths) {
             auto len = optional_tensor(lengths);
             py::gil_scoped_release release;
             return self.last_hidden(x, len);
           },
           py::arg("x"), py::arg("lengths") = py::none());

  m.def(
      "create_aggregator",
      [](const std::string& name, const py::dict& options) { return seq::create_aggregator(name, to_option_map(options)); },
      py::arg("name"), py::arg("options") = py::dict());
  m.def("aggregator_names", &seq::aggregator_names);
  m.def("lengths_from_mask", &seq::lengths_from_mask, py::arg("mask"));

  py::class_<seq::ScanPipeline, std::shared_ptr<seq::ScanPipeline>>(m, "ScanPipeline", "Seed 002's scan-level pipeline.")
      .def(py::init([](std::shared_ptr<seq::OvfResNet34Impl> encoder, seq::AggregatorPtr aggregator, double center_fraction,
                       int64_t min_slices, int64_t image_size, bool antialias, double threshold, int64_t chunk_size,
                       const py::object& pixel_mean) {
             return std::make_shared<seq::ScanPipeline>(std::move(encoder), std::move(aggregator),
                                                        seq::ScanPipelineOptions()
                                                            .center_fraction(center_fraction)
                                                            .min_slices(min_slices)
                                                            .image_size(image_size)
                                                            .antialias(antialias)
                                                            .threshold(threshold)
                                                            .chunk_size(chunk_size),
                                                        optional_tensor(pixel_mean));
           }),
           py::arg("encoder"), py::arg("aggregator"), py::arg("center_fraction") = 0.05, py::arg("min_slices") = 1,
           py::arg("image_size") = 224, py::arg("antialias") = true, py::arg("threshold") = 0.5,
           py::arg("chunk_size") = 64, py::arg("pixel_mean") = py::none())
      .def("preprocess", &seq::ScanPipeline::preprocess, py::call_guard<py::gil_scoped_release>())
      .def("predict_slices",
           [](seq::ScanPipeline& self, const torch::Tensor& slices) {
             seq::ScanPrediction p;
             {
               py::gil_scoped_release release;
               p = self.predict_slices(slices);
             }
             return prediction_dict(p);
           })
      .def("predict_volume", [](seq::ScanPipeline& self, const torch::Tensor& volume) {
        seq::ScanPrediction p;
        {
          py::gil_scoped_release release;
          p = self.predict_volume(volume);
        }
        return prediction_dict(p);
      });

  m.def("center_slice_range", &seq::center_slice_range, py::arg("num_slices"), py::arg("fraction") = 0.05,
        py::arg("min_slices") = 1);
  m.def("select_center_slices", &seq::select_center_slices, py::arg("volume"), py::arg("fraction") = 0.05,
        py::arg("min_slices") = 1);
  m.def("resize_slices", &seq::resize_slices, py::arg("x"), py::arg("size") = 224, py::arg("antialias") = true);
  m.def("grey_to_rgb", &seq::grey_to_rgb, py::arg("x"));
  m.def(
      "subtract_pixel_mean",
      [](const torch::Tensor& x, const py::object& mean) { return seq::subtract_pixel_mean(x, optional_tensor(mean)); },
      py::arg("x"), py::arg("mean"));
  m.def("pixel_mean", &seq::pixel_mean, py::arg("slices"), py::arg("size") = 224, py::arg("antialias") = true);
  m.def("random_rotate_shift", &seq::random_rotate_shift, py::arg("x"), py::arg("max_degrees"), py::arg("max_shift"),
        py::arg("same_for_all") = false);

  m.def(
      "occlusion_sensitivity",
      [](const py::object& model, const torch::Tensor& image, int64_t patch_size, int64_t stride, double fill_value,
         int64_t batch_size) {
        const auto o = seq::OcclusionOptions().patch_size(patch_size).stride(stride).fill_value(fill_value).batch_size(batch_size);
        seq::OcclusionResult r;
        if (py::isinstance<seq::OvfResNet34Impl>(model)) {
          auto enc = model.cast<std::shared_ptr<seq::OvfResNet34Impl>>();
          OSTEONET_CHECK(enc->num_classes() == 1, "occlusion_sensitivity: the encoder must output one logit, got num_classes=",
                         enc->num_classes());
          py::gil_scoped_release release;
          r = seq::occlusion_sensitivity([&enc](const torch::Tensor& x) { return torch::sigmoid(enc->forward(x)); }, image, o);
        } else {
          OSTEONET_CHECK_TYPE(PyCallable_Check(model.ptr()), "occlusion_sensitivity: model must be callable");
          r = seq::occlusion_sensitivity([&model](const torch::Tensor& x) { return model(x).cast<torch::Tensor>(); }, image, o);
        }
        return py::dict(py::arg("heatmap") = r.heatmap, py::arg("grid") = r.grid, py::arg("ys") = r.ys,
                        py::arg("xs") = r.xs, py::arg("base_probability") = r.base_probability);
      },
      py::arg("model"), py::arg("image"), py::arg("patch_size") = 32, py::arg("stride") = 16, py::arg("fill_value") = 0.0,
      py::arg("batch_size") = 32);
}

}  // namespace osteonet::bindings
