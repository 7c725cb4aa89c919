// Python bindings of the per-vertebra screening core (osteonet._core.screen; Python: osteonet.screen).
#include <pybind11/numpy.h>
#include <torch/extension.h>

#include <osteonet/screen/screen.hpp>

#include "common.hpp"

namespace py = pybind11;
namespace os = osteonet::screen;

namespace osteonet::bindings {

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

void check_volume(const py::array& a, const char* what) {
  OSTEONET_CHECK(a.ndim() == 3, "screen.measure_vertebrae: ", what, " must be 3-D, got ndim=", a.ndim());
  OSTEONET_CHECK(a.flags() & py::array::c_style, "screen.measure_vertebrae: ", what,
                 " must be C-contiguous (numpy.ascontiguousarray), got a strided array");
}

os::Shape3 shape_of(const py::array& a) {
  return {static_cast<std::size_t>(a.shape(0)), static_cast<std::size_t>(a.shape(1)), static_cast<std::size_t>(a.shape(2))};
}

std::array<double, 16> affine_of(const std::vector<double>& v) {
  OSTEONET_CHECK(v.size() == 16, "screen: affine must have 16 numbers (4 x 4, row-major), got ", v.size());
  std::array<double, 16> a;
  std::copy(v.begin(), v.end(), a.begin());
  return a;
}

py::object maybe(double v) { return std::isnan(v) ? py::object(py::none()) : py::object(py::float_(v)); }

py::list vec(const os::Vec3& v) { return py::cast(std::vector<double>{v(0), v(1), v(2)}); }

py::array_t<uint8_t> to_numpy(const os::Mask3& m) {
  const auto& s = m.shape();
  py::array_t<uint8_t> out({s[0], s[1], s[2]});
  std::copy(m.data(), m.data() + m.size(), out.mutable_data());
  return out;
}

py::dict to_dict(const os::VertebraResult& r) {
  py::dict d;
  d["label"] = r.label;
  d["position"] = r.position;
  d["complete"] = r.complete;
  d["vertebra_touches_border"] = r.vertebra_touches_border;
  d["vertebra_voxels"] = r.vertebra_voxels;
  d["body_voxels"] = r.body_voxels;
  d["body_volume_ml"] = maybe(r.body_volume_ml);
  d["body_source"] = r.body_source;
  d["centroid_mm"] = vec(r.frame.centroid);
  d["axes"] = py::dict(py::arg("superior") = vec(r.frame.superior), py::arg("anterior") = vec(r.frame.anterior),
                       py::arg("right") = vec(r.frame.right), py::arg("superior_source") = r.frame.superior_source,
                       py::arg("anterior_source") = r.frame.anterior_source);
  const auto& h = r.heights;
  d["heights_mm"] = py::dict(py::arg("anterior") = maybe(h.heights_mm[0]), py::arg("middle") = maybe(h.heights_mm[1]),
                             py::arg("posterior") = maybe(h.heights_mm[2]));
  d["depth_mm"] = maybe(h.depth_mm);
  d["width_mm"] = maybe(h.width_mm);
  d["column_half_width_mm"] = maybe(h.column_half_width_mm);
  d["lateral_half_width_mm"] = maybe(h.lateral_half_width_mm);
  d["reference_height_mm"] = maybe(r.reference_height_mm);
  d["reference_source"] = r.reference_source.empty() ? py::object(py::none()) : py::object(py::str(r.reference_source));
  d["height_ratios"] = py::dict(py::arg("anterior") = maybe(r.height_ratios[0]), py::arg("middle") = maybe(r.height_ratios[1]),
                                py::arg("posterior") = maybe(r.height_ratios[2]), py::arg("wedge") = maybe(r.wedge_ratio),
                                py::arg("biconcave") = maybe(r.biconcave_ratio), py::arg("crush") = maybe(r.crush_ratio));
  d["height_loss"] = maybe(r.height_loss);
  d["genant_grade"] = r.genant_grade < 0 ? py::object(py::none()) : py::object(py::int_(r.genant_grade));
  d["roi_voxels"] = r.roi.count;
  d["hu_mean"] = maybe(r.roi.mean);
  d["hu_median"] = maybe(r.roi.median);
  d["hu_sd"] = maybe(r.roi.sd);
  d["bmd_mg_cm3"] = maybe(r.bmd_mg_cm3);
  d["acr_class"] = r.acr_class < 0 ? py::object(py::none()) : py::object(py::int_(r.acr_class));
  d["flags"] = r.flags;
  d["crop_lo"] = std::vector<int64_t>(r.crop_lo.begin(), r.crop_lo.end());
  d["body_mask"] = to_numpy(r.body_mask);
  d["roi_mask"] = to_numpy(r.roi_mask);
  return d;
}

os::ScreenOptions options_of(const py::dict& kw) {
  os::ScreenOptions o;
  for (const auto& item : kw) {
    const auto k = py::str(item.first).cast<std::string>();
    const py::handle v = item.second;
    if (k == "roi_margin_mm") o.roi_margin_mm = v.cast<double>();
    else if (k == "column_inset") o.column_inset = v.cast<double>();
    else if (k == "column_half_width_mm") o.column_half_width_mm = v.cast<double>();
    else if (k == "lateral_half_width_mm") o.lateral_half_width_mm = v.cast<double>();
    else if (k == "min_roi_voxels") o.min_roi_voxels = v.cast<int64_t>();
    else if (k == "neighbour_span") o.neighbour_span = v.cast<int64_t>();
    else if (k == "labels_are_bodies") o.labels_are_bodies = v.cast<bool>();
    else if (k == "calibration_slope") o.calibration.slope = v.cast<double>();
    else if (k == "calibration_intercept") o.calibration.intercept = v.cast<double>();
    else if (k == "calibration_name") o.calibration.name = v.cast<std::string>();
    else
      throw_unknown_name("screen.measure_vertebrae", "option", k,
                         {"roi_margin_mm", "column_inset", "column_half_width_mm", "lateral_half_width_mm", "min_roi_voxels",
                          "neighbour_span", "labels_are_bodies", "calibration_slope", "calibration_intercept",
                          "calibration_name"});
  }
  o.check();
  return o;
}

template <typename H, typename L>
std::vector<os::VertebraResult> run(const py::array& hu, const py::array& labels, const uint8_t* body, const os::VoxelGeometry& g,
                                    const std::vector<int64_t>& order, const os::ScreenOptions& opt,
                                    std::map<int64_t, os::LabelStats>& stats) {
  const H* h = static_cast<const H*>(hu.data());
  const L* l = static_cast<const L*>(labels.data());
  py::gil_scoped_release nogil;
  return os::measure_vertebrae(h, l, body, g, order, opt, &stats);
}

template <typename H>
std::vector<os::VertebraResult> run_labels(const py::array& hu, const py::array& labels, const uint8_t* body,
                                           const os::VoxelGeometry& g, const std::vector<int64_t>& order,
                                           const os::ScreenOptions& opt, std::map<int64_t, os::LabelStats>& stats) {
  if (py::isinstance<py::array_t<uint8_t>>(labels)) return run<H, uint8_t>(hu, labels, body, g, order, opt, stats);
  if (py::isinstance<py::array_t<int16_t>>(labels)) return run<H, int16_t>(hu, labels, body, g, order, opt, stats);
  if (py::isinstance<py::array_t<uint16_t>>(labels)) return run<H, uint16_t>(hu, labels, body, g, order, opt, stats);
  if (py::isinstance<py::array_t<int32_t>>(labels)) return run<H, int32_t>(hu, labels, body, g, order, opt, stats);
  throw osteonet::TypeError("screen.measure_vertebrae: labels must be uint8, int16, uint16 or int32, got dtype=" +
                            dtype_name(labels));
}

py::dict measure(const py::array& hu, const py::array& labels, const py::object& body, const std::vector<double>& affine,
                 const std::vector<int64_t>& order, const py::dict& options) {
  check_volume(hu, "hu");
  check_volume(labels, "labels");
  const auto shape = shape_of(hu);
  OSTEONET_CHECK(shape_of(labels) == shape, "screen.measure_vertebrae: labels must have the CT's shape, got labels ",
                 labels.shape(0), "x", labels.shape(1), "x", labels.shape(2), " and CT ", shape[0], "x", shape[1], "x", shape[2]);
  const uint8_t* body_ptr = nullptr;
  py::array body_arr;
  if (!body.is_none()) {
    body_arr = body.cast<py::array>();
    check_volume(body_arr, "body");
    OSTEONET_CHECK(shape_of(body_arr) == shape, "screen.measure_vertebrae: the body mask must have the CT's shape, got ",
                   body_arr.shape(0), "x", body_arr.shape(1), "x", body_arr.shape(2));
    OSTEONET_CHECK_TYPE(py::isinstance<py::array_t<uint8_t>>(body_arr),
                        "screen.measure_vertebrae: the body mask must be uint8 (1 = vertebral body), got dtype=", dtype_name(body_arr));
    body_ptr = static_cast<const uint8_t*>(body_arr.data());
  }
  const os::VoxelGeometry g(shape, affine_of(affine));
  const auto opt = options_of(options);
  std::map<int64_t, os::LabelStats> stats;
  std::vector<os::VertebraResult> res;
  if (py::isinstance<py::array_t<int16_t>>(hu)) {
    res = run_labels<int16_t>(hu, labels, body_ptr, g, order, opt, stats);
  } else if (py::isinstance<py::array_t<float>>(hu)) {
    res = run_labels<float>(hu, labels, body_ptr, g, order, opt, stats);
  } else {
    throw osteonet::TypeError("screen.measure_vertebrae: hu must be int16 or float32, got dtype=" + dtype_name(hu));
  }
  py::list vertebrae;
  for (const auto& r : res) vertebrae.append(to_dict(r));
  py::dict present;
  for (const auto& kv : stats)
    present[py::int_(kv.first)] = py::dict(py::arg("count") = kv.second.count, py::arg("touches_border") = kv.second.touches_border);
  return py::dict(py::arg("vertebrae") = vertebrae, py::arg("labels") = present,
                  py::arg("voxel_volume_mm3") = g.voxel_volume_mm3());
}

}  // namespace

void bind_screen(py::module_& root) {
  auto m = root.def_submodule("screen", "per-vertebra opportunistic CT screening (include/osteonet/screen)");
  m.def("measure_vertebrae", &measure, py::arg("hu"), py::arg("labels"), py::arg("body"), py::arg("affine"), py::arg("order"),
        py::arg("options"));
  m.def("genant_grade", &os::genant_grade, py::arg("height_loss"));
  m.def("pickhardt_profile", [](double hu) { return os::pickhardt_name(os::pickhardt_profile(hu)); }, py::arg("l1_hu"));
  m.def("pickhardt_thresholds", [] { return py::make_tuple(os::kPickhardtSpecificHU, os::kPickhardtSensitiveHU); });
  m.def("fit_phantom", [](const std::vector<double>& hu, const std::vector<double>& density) {
    const auto c = os::fit_phantom(hu, density);
    return py::make_tuple(c.slope, c.intercept);
  }, py::arg("hu"), py::arg("density"));
  m.def("squared_distance_to_background", [](const py::array_t<uint8_t, py::array::c_style>& mask, const std::vector<double>& spacing) {
    OSTEONET_CHECK(mask.ndim() == 3, "screen.squared_distance_to_background: mask must be 3-D, got ndim=", mask.ndim());
    OSTEONET_CHECK(spacing.size() == 3, "screen.squared_distance_to_background: spacing needs 3 numbers, got ", spacing.size());
    const std::array<std::size_t, 3> s{static_cast<std::size_t>(mask.shape(0)), static_cast<std::size_t>(mask.shape(1)),
                                       static_cast<std::size_t>(mask.shape(2))};
    os::Mask3 m = xt::adapt(mask.data(), mask.size(), xt::no_ownership(), s);
    const auto d = os::squared_distance_to_background(m, {spacing[0], spacing[1], spacing[2]});
    py::array_t<double> out({s[0], s[1], s[2]});
    std::copy(d.data(), d.data() + d.size(), out.mutable_data());
    return out;
  }, py::arg("mask"), py::arg("spacing"));
}

}  // namespace osteonet::bindings
