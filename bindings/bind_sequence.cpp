// Python bindings of seed 002's sequence pipeline: the ovf_resnet34 slice encoder's extra methods,
// the aggregators, the scan pipeline, preprocessing helpers and occlusion sensitivity.
#include <torch/extension.h>

#include <osteonet/sequence/aggregators.hpp>
#include <osteonet/sequence/occlusion.hpp>
#include <osteonet/sequence/pipeline.hpp>
#include <osteonet/sequence/slice_encoder.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace seq = osteonet::sequence;
using osteonet::backbones::BackboneImpl;
using ModulePtr = std::shared_ptr<torch::nn::Module>;

namespace osteonet::bindings {

namespace {

torch::Tensor optional_tensor(const py::object& o) { return o.is_none() ? torch::Tensor() : o.cast<torch::Tensor>(); }

py::dict prediction_dict(const seq::ScanPrediction& p) {
  return py::dict(py::arg("probability") = p.probability, py::arg("slice_probabilities") = p.slice_probabilities,
                  py::arg("slice_indices") = p.slice_indices, py::arg("positive") = p.positive);
}

}  // namespace

void bind_sequence(py::module_& m) {
  // Seed 002's slice encoder beyond the backbone interface (a registry model, "ovf_resnet34").
  auto ovf = [](const ModulePtr& m) { return as_family<seq::OvfResNet34Impl>(m, "ovf_resnet34 slice encoder"); };
  m.def("ovf_backbone_features", [ovf](const ModulePtr& m, const torch::Tensor& x) {
    auto e = ovf(m);
    py::gil_scoped_release release;
    return e->backbone_features(x);
  });
  m.def("ovf_embed", [ovf](const ModulePtr& m, const torch::Tensor& x) {
    auto e = ovf(m);
    py::gil_scoped_release release;
    return e->embed(x);
  });
  m.def("ovf_features", [ovf](const ModulePtr& m, const torch::Tensor& x) {
    auto e = ovf(m);
    py::gil_scoped_release release;
    return e->features(x);
  });
  m.def("ovf_head", [ovf](const ModulePtr& m, const torch::Tensor& x) {
    auto e = ovf(m);
    py::gil_scoped_release release;
    return e->head(x);
  });
  m.def("ovf_set_batchnorm_frozen", [ovf](const ModulePtr& m, bool frozen) { ovf(m)->set_batchnorm_frozen(frozen); },
        py::arg("module"), py::arg("frozen") = true);
  m.def("ovf_batchnorm_frozen", [ovf](const ModulePtr& m) { return ovf(m)->batchnorm_frozen(); });
  m.def("ovf_embed_dim", [ovf](const ModulePtr& m) { return ovf(m)->options.embed_dim(); });

  py::class_<seq::AggregatorImpl, seq::AggregatorPtr>(m, "Aggregator", "The aggregator interface of a C++ module.",
                                                      py::module_local())
      .def("forward",
           [](seq::AggregatorImpl& self, const torch::Tensor& x, const py::object& lengths) {
             auto len = optional_tensor(lengths);
             py::gil_scoped_release release;
             return self.forward(x, len);
           },
           py::arg("x"), py::arg("lengths") = py::none())
      .def_property_readonly("name", &seq::AggregatorImpl::name)
      .def_property_readonly("input_dim", &seq::AggregatorImpl::input_dim)
      .def_property_readonly("takes_probabilities", &seq::AggregatorImpl::takes_probabilities);
  m.def("as_aggregator", [](const ModulePtr& m) { return as_family<seq::AggregatorImpl>(m, "aggregator"); });
  auto lstm = [](const ModulePtr& m) { return as_family<seq::LstmAggregatorImpl>(m, "LSTM aggregator"); };
  m.def("lstm_forward_logits",
        [lstm](const ModulePtr& m, const torch::Tensor& x, const py::object& lengths) {
          auto a = lstm(m);
          auto len = optional_tensor(lengths);
          py::gil_scoped_release release;
          return a->forward_logits(x, len);
        },
        py::arg("module"), py::arg("x"), py::arg("lengths") = py::none());
  m.def("lstm_last_hidden",
        [lstm](const ModulePtr& m, const torch::Tensor& x, const py::object& lengths) {
          auto a = lstm(m);
          auto len = optional_tensor(lengths);
          py::gil_scoped_release release;
          return a->last_hidden(x, len);
        },
        py::arg("module"), py::arg("x"), py::arg("lengths") = py::none());

  m.def("lengths_from_mask", &seq::lengths_from_mask, py::arg("mask"));

  py::class_<seq::ScanPipeline, std::shared_ptr<seq::ScanPipeline>>(m, "ScanPipeline", "Seed 002's scan-level pipeline.")
      .def(py::init([](const ModulePtr& encoder_module, const ModulePtr& aggregator_module, double center_fraction,
                       int64_t min_slices, int64_t image_size, bool antialias, double threshold, int64_t chunk_size,
                       const py::object& pixel_mean) {
             auto encoder = as_family<seq::OvfResNet34Impl>(encoder_module, "ovf_resnet34 slice encoder");
             auto aggregator = as_family<seq::AggregatorImpl>(aggregator_module, "aggregator");
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
        std::shared_ptr<seq::OvfResNet34Impl> enc;
        if (py::isinstance<torch::nn::Module>(model)) enc = as_family<seq::OvfResNet34Impl>(model.cast<ModulePtr>(), "ovf_resnet34 slice encoder");
        if (enc) {
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
