// Python bindings of the metrics (osteonet._core.metrics); osteonet/metrics.py converts inputs and adds the API.
#include <torch/extension.h>

#include <osteonet/metrics/metrics.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace om = osteonet::metrics;

namespace osteonet::bindings {

namespace {

std::vector<om::BoxSet> box_sets(const std::vector<torch::Tensor>& boxes, const std::vector<torch::Tensor>& scores,
                                 const std::vector<torch::Tensor>& labels) {
  OSTEONET_CHECK(boxes.size() == labels.size() && (scores.empty() || scores.size() == boxes.size()),
                 "detection: boxes, scores and labels must list the same images, got ", boxes.size(), ", ",
                 scores.size(), " and ", labels.size());
  std::vector<om::BoxSet> out(boxes.size());
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    out[i].boxes = boxes[i];
    out[i].labels = labels[i];
    if (!scores.empty()) out[i].scores = scores[i];
  }
  return out;
}

py::dict detection_dict(const om::DetectionResult& r) {
  py::dict d;
  d["map"] = r.map; d["map_50"] = r.map_50; d["map_75"] = r.map_75;
  d["map_small"] = r.map_small; d["map_medium"] = r.map_medium; d["map_large"] = r.map_large;
  d["mar_1"] = r.mar_1; d["mar_10"] = r.mar_10; d["mar_100"] = r.mar_100;
  d["mar_small"] = r.mar_small; d["mar_medium"] = r.mar_medium; d["mar_large"] = r.mar_large;
  d["classes"] = r.classes; d["map_per_class"] = r.map_per_class; d["mar_100_per_class"] = r.mar_100_per_class;
  d["iou_thresholds"] = r.iou_thresholds;
  if (r.precision.defined()) d["precision"] = r.precision;
  if (r.recall.defined()) d["recall"] = r.recall;
  return d;
}

}  // namespace

void bind_metrics(py::module_& parent) {
  auto m = parent.def_submodule("metrics", "osteonet metrics (C++ core; use osteonet.metrics)");
  m.def("confusion_matrix", &om::confusion_matrix, py::arg("y_true"), py::arg("y_pred"), py::arg("num_classes") = -1);
  m.def("averaged_rate",
        [](const torch::Tensor& cm, const std::string& rate, const std::string& average, int64_t pos_label, bool all_labels) {
          return om::averaged_rate(cm, om::parse_rate(rate), om::parse_average(average), pos_label, all_labels);
        },
        py::arg("cm"), py::arg("rate"), py::arg("average"), py::arg("pos_label") = 1, py::arg("all_labels") = false);
  m.def("accuracy_from_cm", &om::accuracy_from_cm);
  m.def("balanced_accuracy_from_cm", &om::balanced_accuracy_from_cm);
  m.def("roc_curve", &om::roc_curve, py::arg("y_true"), py::arg("y_score"), py::arg("drop_intermediate") = true,
        py::call_guard<py::gil_scoped_release>());
  m.def("roc_auc_binary", &om::roc_auc_binary, py::call_guard<py::gil_scoped_release>());
  m.def("roc_auc_ovr", [](const torch::Tensor& t, const torch::Tensor& s, const std::string& average) {
    return om::roc_auc_ovr(t, s, om::parse_average(average));
  });
  m.def("precision_recall_curve", &om::precision_recall_curve);
  m.def("average_precision", &om::average_precision);
  m.def("youden_threshold", [](const torch::Tensor& t, const torch::Tensor& s) {
    const auto r = om::youden_threshold(t, s);
    return py::dict(py::arg("threshold") = r.threshold, py::arg("j") = r.j, py::arg("sensitivity") = r.sensitivity,
                    py::arg("specificity") = r.specificity);
  });

  m.def("proportion_ci", &om::proportion_ci, py::arg("successes"), py::arg("n"), py::arg("method") = "wilson",
        py::arg("alpha") = 0.05);
  m.def("delong_ci", [](const torch::Tensor& t, const torch::Tensor& s, double alpha) {
    const auto r = om::delong_ci(t, s, alpha);
    return py::dict(py::arg("auc") = r.auc, py::arg("variance") = r.variance, py::arg("ci_low") = r.low,
                    py::arg("ci_high") = r.high);
  });
  m.def("delong_test", [](const torch::Tensor& t, const torch::Tensor& a, const torch::Tensor& b, double alpha) {
    const auto r = om::delong_test(t, a, b, alpha);
    return py::dict(py::arg("auc_a") = r.auc_a, py::arg("auc_b") = r.auc_b, py::arg("difference") = r.difference,
                    py::arg("variance") = r.variance, py::arg("z") = r.z, py::arg("p_value") = r.p_value,
                    py::arg("ci_low") = r.low, py::arg("ci_high") = r.high);
  });
  m.def("bootstrap_indices", &om::bootstrap_indices);
  m.def("bootstrap_metric_names", &om::bootstrap_metric_names);
  m.def("bootstrap_ci",
        [](const std::string& metric, const torch::Tensor& a, const torch::Tensor& b, int64_t n_resamples, uint64_t seed,
           double alpha, const std::string& average) {
          om::BootstrapResult r;
          {
            py::gil_scoped_release release;
            r = om::bootstrap_ci(metric, a, b, n_resamples, seed, alpha, average);
          }
          return py::dict(py::arg("estimate") = r.estimate, py::arg("ci_low") = r.low, py::arg("ci_high") = r.high,
                          py::arg("std_error") = r.std_error, py::arg("n_valid") = r.n_valid,
                          py::arg("samples") = r.samples);
        });
  m.def("mcnemar", [](double b, double c, bool exact, bool correction) {
    const auto r = om::mcnemar(b, c, exact, correction);
    return py::dict(py::arg("statistic") = r.statistic, py::arg("p_value") = r.p_value);
  });
  m.def("chi2_contingency", [](const torch::Tensor& table, bool correction) {
    const auto r = om::chi2_contingency(table, correction);
    return py::dict(py::arg("statistic") = r.statistic, py::arg("p_value") = r.p_value, py::arg("dof") = r.dof);
  });

  m.def("box_iou", &om::box_iou);
  m.def("coco_evaluate",
        [](const std::vector<torch::Tensor>& pb, const std::vector<torch::Tensor>& ps, const std::vector<torch::Tensor>& pl,
           const std::vector<torch::Tensor>& tb, const std::vector<torch::Tensor>& tl, std::vector<double> thr,
           std::vector<int64_t> max_dets) {
          const auto p = box_sets(pb, ps, pl), t = box_sets(tb, {}, tl);
          om::DetectionResult r;
          {
            py::gil_scoped_release release;
            r = om::coco_evaluate(p, t, thr, max_dets);
          }
          return detection_dict(r);
        });
  m.def("voc_evaluate",
        [](const std::vector<torch::Tensor>& pb, const std::vector<torch::Tensor>& ps, const std::vector<torch::Tensor>& pl,
           const std::vector<torch::Tensor>& tb, const std::vector<torch::Tensor>& tl, const std::string& method,
           std::vector<double> thr) {
          return detection_dict(om::voc_evaluate(box_sets(pb, ps, pl), box_sets(tb, {}, tl), method, thr));
        });
  m.def("detection_counts",
        [](const std::vector<torch::Tensor>& pb, const std::vector<torch::Tensor>& ps, const std::vector<torch::Tensor>& pl,
           const std::vector<torch::Tensor>& tb, const std::vector<torch::Tensor>& tl, double iou, double score) {
          const auto c = om::detection_counts(box_sets(pb, ps, pl), box_sets(tb, {}, tl), iou, score);
          return py::dict(py::arg("tp") = c.tp, py::arg("fp") = c.fp, py::arg("fn") = c.fn,
                          py::arg("n_predictions") = c.n_predictions, py::arg("n_targets") = c.n_targets);
        });
  m.def("dsnet_paper_map", &om::dsnet_paper_map);
  m.def("dsnet_paper_accuracy", &om::dsnet_paper_accuracy);

  m.def("overlap_counts", &om::overlap_counts, py::arg("y_pred"), py::arg("y_true"), py::arg("num_classes") = -1,
        py::call_guard<py::gil_scoped_release>());
  m.def("overlap_from_counts", &om::overlap_from_counts);
  m.def("hausdorff_distance", &om::hausdorff_distance, py::arg("pred"), py::arg("target"), py::arg("percentile") = 95.0,
        py::arg("spacing") = std::vector<double>{}, py::call_guard<py::gil_scoped_release>());

  auto corr = [](const om::Correlation& c) {
    return py::dict(py::arg("r") = c.r, py::arg("p_value") = c.p_value, py::arg("ci_low") = c.low,
                    py::arg("ci_high") = c.high, py::arg("n") = c.n);
  };
  m.def("pearson", [corr](const torch::Tensor& x, const torch::Tensor& y, double a) { return corr(om::pearson(x, y, a)); });
  m.def("spearman", [corr](const torch::Tensor& x, const torch::Tensor& y, double a) { return corr(om::spearman(x, y, a)); });
  m.def("mae", &om::mae);
  m.def("rmse", &om::rmse);
  m.def("bland_altman", [](const torch::Tensor& x, const torch::Tensor& y, double a) {
    const auto r = om::bland_altman(x, y, a);
    py::dict d;
    d["bias"] = r.bias; d["sd"] = r.sd; d["loa_low"] = r.loa_low; d["loa_high"] = r.loa_high;
    d["bias_ci"] = py::make_tuple(r.bias_ci_low, r.bias_ci_high);
    d["loa_low_ci"] = py::make_tuple(r.loa_low_ci_low, r.loa_low_ci_high);
    d["loa_high_ci"] = py::make_tuple(r.loa_high_ci_low, r.loa_high_ci_high);
    d["n"] = r.n;
    return d;
  });
  m.def("linear_fit", [](const torch::Tensor& x, const torch::Tensor& y) {
    const auto r = om::linear_fit(x, y);
    return py::dict(py::arg("slope") = r.slope, py::arg("intercept") = r.intercept, py::arg("r") = r.r,
                    py::arg("p_value") = r.p_value, py::arg("slope_se") = r.slope_se,
                    py::arg("intercept_se") = r.intercept_se, py::arg("n") = r.n);
  });
  m.def("norm_ppf", &om::dist::norm_ppf);
  m.def("t_isf", &om::dist::t_isf);
  m.def("beta_ppf", &om::dist::beta_ppf);
  m.def("chi2_sf", &om::dist::chi2_sf);
}

}  // namespace osteonet::bindings
