// Published screening thresholds: Genant's semiquantitative fracture grades (Genant et al., J Bone
// Miner Res 1993;8:1137-48), Pickhardt's L1 attenuation thresholds for opportunistic CT (Pickhardt et
// al., Ann Intern Med 2013;158:588-95) and the linear HU -> BMD calibrations the screen applies.
#pragma once

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "osteonet/core/error.hpp"

namespace osteonet::screen {

/// Genant grade of a vertebral height loss (fraction, 0..1): 0 below 20 %, 1 (mild) 20-25 %,
/// 2 (moderate) 25-40 %, 3 (severe) above 40 %. Boundaries belong to the higher grade, except 40 %
/// exactly, which is still moderate ("25-40 %").
inline int genant_grade(double height_loss) {
  OSTEONET_CHECK(std::isfinite(height_loss), "genant_grade: height loss must be finite, got height_loss=", height_loss);
  if (height_loss < 0.20) return 0;
  if (height_loss < 0.25) return 1;
  if (height_loss <= 0.40) return 2;
  return 3;
}

inline const std::array<std::string, 4>& genant_names() {
  static const std::array<std::string, 4> n{"normal", "mild", "moderate", "severe"};
  return n;
}

/// Pickhardt's L1 trabecular attenuation profiles (HU, 120 kVp CT): <= 110 HU is highly specific for
/// osteoporosis (> 90 % specificity), <= 160 HU is the sensitive threshold (> 90 % sensitivity).
enum class L1Profile : int { kAboveSensitive = 0, kBelowSensitive = 1, kBelowSpecific = 2 };

constexpr double kPickhardtSpecificHU = 110.0;
constexpr double kPickhardtSensitiveHU = 160.0;

inline L1Profile pickhardt_profile(double l1_hu) {
  OSTEONET_CHECK(std::isfinite(l1_hu), "pickhardt_profile: L1 attenuation must be finite, got l1_hu=", l1_hu);
  if (l1_hu <= kPickhardtSpecificHU) return L1Profile::kBelowSpecific;
  if (l1_hu <= kPickhardtSensitiveHU) return L1Profile::kBelowSensitive;
  return L1Profile::kAboveSensitive;
}

inline std::string pickhardt_name(L1Profile p) {
  switch (p) {
    case L1Profile::kBelowSpecific: return "osteoporosis_likely";
    case L1Profile::kBelowSensitive: return "low_bmd_possible";
    default: return "osteoporosis_unlikely";
  }
}

/// BMD (mg/cm³) = slope * HU + intercept. The screen's default is phantomless (slope 1, intercept 0:
/// the trabecular HU read as mg/cm³, see docs/screen.md); a phantom fit or a user's line replace it.
struct LinearCalibration {
  double slope = 1.0;
  double intercept = 0.0;
  std::string name = "phantomless";

  double operator()(double hu) const { return slope * hu + intercept; }

  void check() const {
    OSTEONET_CHECK(std::isfinite(slope) && slope > 0, "LinearCalibration: slope must be finite and > 0, got slope=", slope);
    OSTEONET_CHECK(std::isfinite(intercept), "LinearCalibration: intercept must be finite, got intercept=", intercept);
  }
};

/// Least-squares line through phantom rods: `hu[i]` measured in rod i, `density[i]` its known
/// density (mg/cm³). Needs at least two rods of different HU.
inline LinearCalibration fit_phantom(const std::vector<double>& hu, const std::vector<double>& density) {
  OSTEONET_CHECK(hu.size() == density.size() && hu.size() >= 2,
                 "fit_phantom: need at least 2 rods with one HU and one density each, got ", hu.size(), " HU values and ",
                 density.size(), " densities");
  double mh = 0, md = 0;
  for (std::size_t i = 0; i < hu.size(); ++i) {
    OSTEONET_CHECK(std::isfinite(hu[i]) && std::isfinite(density[i]), "fit_phantom: values must be finite, got rod ", i,
                   " hu=", hu[i], " density=", density[i]);
    mh += hu[i], md += density[i];
  }
  mh /= hu.size(), md /= hu.size();
  double sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < hu.size(); ++i) sxx += (hu[i] - mh) * (hu[i] - mh), sxy += (hu[i] - mh) * (density[i] - md);
  OSTEONET_CHECK(sxx > 1e-9, "fit_phantom: the rods' HU values must differ, got all hu=", mh);
  LinearCalibration c;
  c.slope = sxy / sxx;
  c.intercept = md - c.slope * mh;
  c.name = "phantom";
  OSTEONET_CHECK(c.slope > 0, "fit_phantom: density must rise with HU, got slope=", c.slope);
  return c;
}

}  // namespace osteonet::screen
