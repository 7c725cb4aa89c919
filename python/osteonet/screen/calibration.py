"""HU -> BMD (mg/cm³ calcium hydroxyapatite equivalent) calibrations for the screen: a straight line
BMD = slope * HU + intercept, from one of three sources (docs/screen.md):

- ``phantomless`` (default): slope 1, intercept 0: the trabecular attenuation read directly as mg/cm³.
  Without a phantom in the scan this is an approximation that depends on the scanner, its kVp and its
  calibration (water 0 HU is the only fixed point); the report says so next to every BMD.
- ``linear:SLOPE,INTERCEPT``: the line a site has established for its scanner (e.g. by asynchronous
  calibration against a phantom scanned separately).
- a phantom in the scan: a label map of its rods (1..k) and their known densities; the line is fitted
  by least squares through the rods' mean HU (C++: osteonet::screen::fit_phantom).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .. import _core

__all__ = ["Calibration", "phantomless", "linear", "parse_calibration", "from_phantom"]


@dataclasses.dataclass(frozen=True)
class Calibration:
    slope: float
    intercept: float
    name: str  # "phantomless", "linear" or "phantom"
    description: str
    details: Optional[Dict[str, Any]] = None

    def __call__(self, hu: float) -> float:
        return self.slope * hu + self.intercept

    def as_dict(self) -> Dict[str, Any]:
        d = {"name": self.name, "slope": self.slope, "intercept": self.intercept, "description": self.description}
        if self.details:
            d["details"] = self.details
        return d


def _check(slope: float, intercept: float, where: str) -> None:
    if not (np.isfinite(slope) and slope > 0):
        raise ValueError(f"{where}: slope must be finite and > 0, got slope={slope}")
    if not np.isfinite(intercept):
        raise ValueError(f"{where}: intercept must be finite, got intercept={intercept}")


def phantomless() -> Calibration:
    return Calibration(1.0, 0.0, "phantomless",
                       "phantomless approximation: BMD (mg/cm3) = trabecular HU (water 0 HU = 0 mg/cm3, 1 mg/cm3 per HU); "
                       "scanner- and kVp-dependent, not a substitute for phantom calibration")


def linear(slope: float, intercept: float) -> Calibration:
    slope, intercept = float(slope), float(intercept)
    _check(slope, intercept, "calibration linear")
    return Calibration(slope, intercept, "linear", f"user line: BMD (mg/cm3) = {slope:g} * HU + {intercept:g}")


def parse_calibration(spec: Optional[str]) -> Calibration:
    """'phantomless' (or None) or 'linear:SLOPE,INTERCEPT'."""
    if spec is None or spec == "phantomless":
        return phantomless()
    if not isinstance(spec, str):
        raise TypeError(f"calibration: expected a string, got {type(spec).__name__}")
    if spec.startswith("linear:"):
        parts = spec[len("linear:"):].split(",")
        try:
            slope, intercept = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"calibration: expected linear:SLOPE,INTERCEPT (two numbers), got calibration={spec!r}") from None
        return linear(slope, intercept)
    raise ValueError(f"calibration: expected 'phantomless' or 'linear:SLOPE,INTERCEPT' (a phantom: --phantom-mask and "
                     f"--phantom-densities), got calibration={spec!r}")


def from_phantom(hu: np.ndarray, rods: np.ndarray, densities: Sequence[float], where: str = "phantom") -> Calibration:
    """The least-squares line through a phantom's rods: `rods` labels them 1..k on the CT's grid,
    `densities` their known densities (mg/cm³) in that order; the rods' mean HU are measured."""
    dens = [float(d) for d in densities]
    k = len(dens)
    if k < 2:
        raise ValueError(f"{where}: need the densities of at least 2 rods, got {k}")
    flat_r, flat_h = rods.reshape(-1), hu.reshape(-1)
    counts = np.bincount(flat_r, minlength=k + 1)
    if counts.size > k + 1 and counts[k + 1:].any():
        extra = sorted(int(v) for v in np.flatnonzero(counts[k + 1:]) + k + 1)
        raise ValueError(f"{where}: rod labels must be 1..{k} (one per density), got labels {extra[:6]}")
    missing = [i for i in range(1, k + 1) if counts[i] == 0]
    if missing:
        raise ValueError(f"{where}: rods {missing} have no voxel in the phantom mask")
    sums = np.bincount(flat_r, weights=flat_h.astype(np.float64), minlength=k + 1)
    rod_hu = [float(sums[i] / counts[i]) for i in range(1, k + 1)]
    slope, intercept = _core.screen.fit_phantom(rod_hu, dens)
    pred = np.asarray(rod_hu) * slope + intercept
    ss_res = float(np.sum((np.asarray(dens) - pred) ** 2))
    ss_tot = float(np.sum((np.asarray(dens) - np.mean(dens)) ** 2))
    details = {"rods": [{"label": i + 1, "hu": rod_hu[i], "density_mg_cm3": dens[i], "voxels": int(counts[i + 1])}
                        for i in range(k)], "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else None}
    return Calibration(float(slope), float(intercept), "phantom",
                       f"in-scan phantom, {k} rods: BMD (mg/cm3) = {slope:.5g} * HU + {intercept:.5g}", details)
