// doctest: the per-vertebra screening core (screen/geometry, distance, vertebra, thresholds, screen).
#include "testing.hpp"

#include <osteonet/screen/screen.hpp>

#include <cmath>
#include <vector>

namespace os = osteonet::screen;

namespace {

std::array<double, 16> scaled_affine(double sx, double sy, double sz) {
  return {sx, 0, 0, 0, 0, sy, 0, 0, 0, 0, sz, 0, 0, 0, 0, 1};
}

// A spine of box-shaped bodies along array axis 2 (= RAS +S), axis 0 = R, axis 1 = A.
struct BoxSpine {
  xt::xtensor<int16_t, 3> hu;
  xt::xtensor<uint8_t, 3> labels;
};

BoxSpine box_spine(const std::vector<int>& heights_vox, const std::vector<int16_t>& hus, int gap = 6) {
  int total = gap;
  for (int h : heights_vox) total += h + gap;
  BoxSpine s{xt::xtensor<int16_t, 3>::from_shape({60, 60, static_cast<std::size_t>(total)}),
             xt::zeros<uint8_t>({std::size_t(60), std::size_t(60), static_cast<std::size_t>(total)})};
  s.hu.fill(40);
  int z = total - gap;  // label 1 at the top (superior), then down
  for (std::size_t v = 0; v < heights_vox.size(); ++v) {
    const int top = z, bottom = z - heights_vox[v];
    for (int i = 10; i < 50; ++i)
      for (int j = 15; j < 45; ++j)
        for (int k = bottom; k < top; ++k) {
          s.labels(i, j, k) = static_cast<uint8_t>(v + 1);
          s.hu(i, j, k) = hus[v];
        }
    z = bottom - gap;
  }
  return s;
}

}  // namespace

TEST_CASE("anisotropic distance transform equals brute force") {
  os::Mask3 m = xt::zeros<uint8_t>({std::size_t(7), std::size_t(9), std::size_t(8)});
  for (std::size_t i = 1; i < 6; ++i)
    for (std::size_t j = 2; j < 9; ++j)
      for (std::size_t k = 1; k < 7; ++k) m(i, j, k) = (i * 7 + j * 3 + k) % 5 != 0;
  const std::array<double, 3> sp{1.5, 0.7, 0.9};
  const auto d2 = os::squared_distance_to_background(m, sp);
  for (int i = 0; i < 7; ++i)
    for (int j = 0; j < 9; ++j)
      for (int k = 0; k < 8; ++k) {
        double best = 1e300;
        for (int a = -1; a <= 7; ++a)  // the one-voxel rim outside the array is background
          for (int b = -1; b <= 9; ++b)
            for (int c = -1; c <= 8; ++c) {
              const bool inside = a >= 0 && a < 7 && b >= 0 && b < 9 && c >= 0 && c < 8;
              if (inside && m(a, b, c)) continue;
              const double d = std::pow((a - i) * sp[0], 2) + std::pow((b - j) * sp[1], 2) + std::pow((c - k) * sp[2], 2);
              best = std::min(best, d);
            }
        CHECK(d2(i, j, k) == doctest::Approx(m(i, j, k) ? best : 0.0));
      }
  const auto roi = os::erode_by_mm(m, sp, 1.0);
  CHECK(xt::sum(xt::cast<int>(roi))() == xt::sum(xt::cast<int>(d2 > (1.0001 * 1.0001)))());
}

TEST_CASE("label statistics in one pass") {
  xt::xtensor<uint16_t, 3> lab = xt::zeros<uint16_t>({std::size_t(4), std::size_t(5), std::size_t(6)});
  xt::view(lab, xt::range(1, 3), xt::range(1, 4), xt::range(2, 5)) = 7;
  lab(3, 4, 5) = 300;
  const auto st = os::label_stats(lab.data(), {4, 5, 6});
  REQUIRE(st.size() == 2);
  CHECK(st.at(7).count == 18);
  CHECK(st.at(7).lo == std::array<int64_t, 3>{1, 1, 2});
  CHECK(st.at(7).hi == std::array<int64_t, 3>{2, 3, 4});
  CHECK(st.at(7).mean_index()[2] == doctest::Approx(3.0));
  CHECK_FALSE(st.at(7).touches_border);
  CHECK(st.at(300).touches_border);
}

TEST_CASE("thresholds: Genant, Pickhardt, phantom line") {
  CHECK(os::genant_grade(0.199) == 0);
  CHECK(os::genant_grade(0.20) == 1);
  CHECK(os::genant_grade(0.25) == 2);
  CHECK(os::genant_grade(0.40) == 2);
  CHECK(os::genant_grade(0.401) == 3);
  CHECK(os::pickhardt_profile(110.0) == os::L1Profile::kBelowSpecific);
  CHECK(os::pickhardt_profile(110.5) == os::L1Profile::kBelowSensitive);
  CHECK(os::pickhardt_profile(160.5) == os::L1Profile::kAboveSensitive);
  const auto c = os::fit_phantom({0.0, 100.0, 200.0}, {5.0, 85.0, 165.0});
  CHECK(c.slope == doctest::Approx(0.8));
  CHECK(c.intercept == doctest::Approx(5.0));
  CHECK_THROWS_AS(os::fit_phantom({1.0, 1.0}, {2.0, 3.0}), osteonet::ValueError);
  CHECK_THROWS_AS(os::genant_grade(std::nan("")), osteonet::ValueError);
}

TEST_CASE("box bodies: exact heights, volume, ROI, classes and a crush grade from the neighbours") {
  // Heights 25, 25, 12 (crushed), 25, 25 mm at 1 mm voxels; the crushed one has lost 52 %.
  auto s = box_spine({25, 25, 12, 25, 25}, {150, 100, 60, 130, 90});
  os::ScreenOptions opt;
  opt.labels_are_bodies = true;
  const auto res = os::measure_vertebrae(s.hu, s.labels, scaled_affine(1, 1, 1), {1, 2, 3, 4, 5}, opt);
  REQUIRE(res.size() == 5);
  for (const auto& r : res) {
    CHECK(r.complete);
    CHECK(r.frame.superior_source == "neighbours");
    CHECK(r.frame.superior(2) == doctest::Approx(1.0));
    CHECK(r.frame.anterior(1) == doctest::Approx(1.0));
    CHECK(r.roi.sd == doctest::Approx(0.0));
  }
  CHECK(res[0].heights.heights_mm[0] == doctest::Approx(25.0));
  CHECK(res[0].heights.heights_mm[2] == doctest::Approx(25.0));
  CHECK(res[0].body_volume_ml == doctest::Approx(40 * 30 * 25 / 1000.0));
  CHECK(res[0].roi.count == (40 - 8) * (30 - 8) * (25 - 8));
  CHECK(res[0].roi.mean == doctest::Approx(150.0));
  CHECK(res[0].acr_class == 0);
  CHECK(res[1].acr_class == 1);
  CHECK(res[2].acr_class == 2);
  CHECK(res[2].heights.heights_mm[1] == doctest::Approx(12.0));
  CHECK(res[2].reference_source == "neighbours");
  CHECK(res[2].reference_height_mm == doctest::Approx(25.0));
  CHECK(res[2].height_loss == doctest::Approx(1.0 - 12.0 / 25.0));
  CHECK(res[2].genant_grade == 3);
  CHECK(res[1].genant_grade == 0);
  CHECK(res[2].crush_ratio == doctest::Approx(12.0 / 25.0));
}

TEST_CASE("a body cut by the field of view is flagged and not measured as whole") {
  auto s = box_spine({25, 25}, {150, 150}, 0);  // the first body touches the top of the array
  os::ScreenOptions opt;
  opt.labels_are_bodies = true;
  const auto res = os::measure_vertebrae(s.hu, s.labels, scaled_affine(1, 1, 1), {1, 2}, opt);
  REQUIRE(res.size() == 2);
  CHECK_FALSE(res[0].complete);
  CHECK(std::isnan(res[0].body_volume_ml));
  CHECK(res[0].genant_grade == -1);
  CHECK(res[0].roi.count > 0);  // its visible part still has a density
  CHECK(std::find(res[0].flags.begin(), res[0].flags.end(), "incomplete") != res[0].flags.end());
}

TEST_CASE("a whole vertebra is cut at the canal in anisotropic voxels") {
  // Body 40 x 30 (R x A) mm, 24 mm high; behind it a ring around a 12 x 10 mm canal; 0.8 x 0.8 x 2 mm voxels.
  const double sx = 0.8, sy = 0.8, sz = 2.0;
  const std::size_t nx = 80, ny = 100, nz = 20;
  xt::xtensor<float, 3> hu = xt::zeros<float>({nx, ny, nz});
  xt::xtensor<int32_t, 3> lab = xt::zeros<int32_t>({nx, ny, nz});
  int body = 0;
  for (std::size_t i = 0; i < nx; ++i)
    for (std::size_t j = 0; j < ny; ++j)
      for (std::size_t k = 0; k < nz; ++k) {
        const double x = (i - 40.0) * sx, y = (j - 50.0) * sy, z = (k - 9.5) * sz;
        const bool in_body = std::abs(x) < 20 && y >= 0 && y < 30 && std::abs(z) < 12;
        const bool ring = std::abs(x) < 12 && y > -16 && y < 0 && std::abs(z) < 8 && !(std::abs(x) < 6 && y > -10);
        if (in_body) lab(i, j, k) = 42, hu(i, j, k) = 120.f, ++body;
        if (ring) lab(i, j, k) = 42, hu(i, j, k) = 600.f;
      }
  const auto res = os::measure_vertebrae(hu, lab, scaled_affine(sx, sy, sz), {42}, os::ScreenOptions());
  REQUIRE(res.size() == 1);
  CHECK(res[0].body_source == "canal");
  CHECK(res[0].body_voxels == body);
  CHECK(res[0].roi.mean == doctest::Approx(120.0));
  CHECK(res[0].heights.heights_mm[1] == doctest::Approx(24.0));
  CHECK(std::find(res[0].flags.begin(), res[0].flags.end(), "no_neighbour_reference") != res[0].flags.end());
}

TEST_CASE("bad options and inputs throw one-line errors") {
  auto s = box_spine({25}, {150});
  os::ScreenOptions opt;
  opt.roi_margin_mm = -1;
  CHECK_THROWS_AS(os::measure_vertebrae(s.hu, s.labels, scaled_affine(1, 1, 1), {1}, opt), osteonet::ValueError);
  CHECK_THROWS_AS(os::measure_vertebrae(s.hu, s.labels, scaled_affine(1, 1, 0), {1}), osteonet::ValueError);
  xt::xtensor<uint8_t, 3> small = xt::zeros<uint8_t>({std::size_t(2), std::size_t(2), std::size_t(2)});
  CHECK_THROWS_AS(os::measure_vertebrae(s.hu, small, scaled_affine(1, 1, 1), {1}), osteonet::ValueError);
  try {
    os::measure_vertebrae(s.hu, s.labels, scaled_affine(1, 1, 1), {}, os::ScreenOptions());
    FAIL("expected a ValueError");
  } catch (const osteonet::ValueError& e) {
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
}
