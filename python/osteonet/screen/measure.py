"""Per-vertebra measurements on arrays (C++: include/osteonet/screen/screen.hpp): a CT in HU, a label map
read by a label table, an optional vertebral-body mask, the voxel -> RAS affine. Adds level names,
class names and the L1 screen to what the C++ core measures, and builds the body and ROI label maps."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _core
from .._errors import nearest
from .calibration import Calibration, phantomless
from .labels import LEVELS, SCREENED_LEVELS, LabelTable

__all__ = ["measure", "ACR_NAMES", "GENANT_NAMES", "MEASURE_OPTIONS", "split_components", "l1_screen"]

ACR_NAMES = ("normal", "osteopenia", "osteoporosis")  # ACR 2018 QCT: > 120, 80-120, < 80 mg/cm³
GENANT_NAMES = ("normal", "mild", "moderate", "severe")
#: Options of the C++ core the Python API passes through (defaults in ScreenOptions / docs/screen.md).
MEASURE_OPTIONS = ("roi_margin_mm", "column_inset", "column_half_width_mm", "lateral_half_width_mm", "min_roi_voxels",
                   "neighbour_span")
MIN_COMPONENT_ML = 0.5


def split_components(bodies: np.ndarray, affine: np.ndarray) -> Tuple[np.ndarray, int]:
    """Vertebral bodies of a `vertebrae_body` map (1 body, 2 disc) told apart by face-connected
    components of value 1, numbered 1..n from head to feet; components under 0.5 ml are dropped
    (returned count)."""
    from scipy import ndimage

    lab, n = ndimage.label(bodies == 1)
    if n == 0:
        return np.zeros(bodies.shape, np.uint8), 0
    counts = np.bincount(lab.reshape(-1), minlength=n + 1)[1:]
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    keep = np.flatnonzero(counts * voxel_ml >= MIN_COMPONENT_ML) + 1
    centres = ndimage.center_of_mass(np.ones(bodies.shape, np.uint8), lab, keep) if keep.size else []
    s_coord = [float((affine[:3, :3] @ np.asarray(c) + affine[:3, 3])[2]) for c in centres]
    order = [int(keep[i]) for i in np.argsort(s_coord)[::-1]]  # superior first
    lut = np.zeros(n + 1, np.int32)
    for new, old in enumerate(order, start=1):
        lut[old] = new
    out = lut[lab]
    return out.astype(np.uint8 if len(order) < 256 else np.int32), int(n - len(order))


def l1_screen(vertebrae: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Pickhardt et al. 2013: L1 trabecular attenuation <= 110 HU (highly specific for osteoporosis),
    <= 160 HU (sensitive threshold), > 160 HU (osteoporosis unlikely)."""
    specific, sensitive = _core.screen.pickhardt_thresholds()
    out: Dict[str, Any] = {"level": "L1", "thresholds_hu": {"specific": specific, "sensitive": sensitive},
                           "hu": None, "profile": None, "available": False, "reason": None}
    l1 = [v for v in vertebrae if v["name"] == "L1"]
    if not l1:
        out["reason"] = "L1 is not in view or not identified (levels unknown)"
        return out
    v = l1[0]
    if v["hu_mean"] is None:
        out["reason"] = "L1 has no trabecular ROI (" + ", ".join(v["flags"]) + ")"
        return out
    out.update(hu=v["hu_mean"], profile=_core.screen.pickhardt_profile(v["hu_mean"]), available=True)
    if not v["complete"]:
        out["reason"] = "L1 is cut by the field of view: the attenuation is of its visible part"
    return out


def _place(full: np.ndarray, crop: np.ndarray, lo, value: int) -> None:
    sl = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, crop.shape))
    full[sl][crop.astype(bool)] = value


def measure(hu: np.ndarray, labels: np.ndarray, affine: np.ndarray, table: LabelTable, body: Optional[np.ndarray] = None,
            calibration: Optional[Calibration] = None, where: str = "labels", **options: Any) -> Dict[str, Any]:
    """Measures every screened vertebra of `labels` (values read by `table`) on `hu` (HU; int16 or
    float32, C-contiguous, same shape), with `body` (uint8, 1 = vertebral body) if given.

    Returns {"vertebrae": [one dict per vertebra, head to feet], "not_screened": [...], "labels_present":
    {value: voxels}, "bodies": label map of the bodies (value = index + 1), "rois": of the trabecular
    ROIs, "components_dropped": int}. Label values the table does not know raise ValueError naming
    `where`.
    """
    unknown_opts = sorted(set(options) - set(MEASURE_OPTIONS))
    if unknown_opts:
        raise ValueError(f"measure: unknown option {unknown_opts[0]!r}; did you mean "
                         f"{nearest(unknown_opts[0], MEASURE_OPTIONS)!r}? "
                         f"(valid: {', '.join(MEASURE_OPTIONS)})")
    calibration = calibration or phantomless()
    hu = np.ascontiguousarray(hu) if hu.dtype in (np.int16, np.float32) else np.ascontiguousarray(hu, dtype=np.float32)
    dropped = 0
    if table.components:
        present = _present_values(labels)
        bad = sorted(set(present) - set(table.known))
        if bad:
            raise ValueError(f"{where}: label values {bad[:8]} are not in label table {table.name!r} (known: "
                             f"{table.describe_known()})")
        labels, dropped = split_components(labels, affine)
        n = int(labels.max()) if labels.size else 0
        names = {i: f"V{i}" for i in range(1, n + 1)}
        order = list(range(1, n + 1))
    else:
        names = dict(table.vertebrae)
        order = table.spine_order()
    opts = {k: v for k, v in options.items()}
    opts.update(labels_are_bodies=table.structure == "body" and body is None, calibration_slope=calibration.slope,
                calibration_intercept=calibration.intercept, calibration_name=calibration.name)
    if not order:
        raise ValueError(f"{where}: no vertebra to screen (label table {table.name!r} names none, or no body was found)")
    res = _core.screen.measure_vertebrae(hu, labels, body, [float(v) for v in np.asarray(affine).reshape(-1)], order, opts)
    present = {int(k): int(v["count"]) for k, v in res["labels"].items()}
    if not table.components:
        bad = sorted(set(present) - set(table.known))
        if bad:
            raise ValueError(f"{where}: label values {bad[:8]} are not in label table {table.name!r} (known: "
                             f"{table.describe_known()}); pass the table the masks use (--labels)")
    not_screened = [{"label": v, "name": table.vertebrae[v], "reason": "not screened (C1, C2 and S1 have no measurable "
                     "vertebral body)"} for v in sorted(present) if table.vertebrae.get(v) in LEVELS
                    and table.vertebrae[v] not in SCREENED_LEVELS]
    out_dtype = np.uint8 if len(res["vertebrae"]) < 255 else np.uint16
    bodies = np.zeros(hu.shape, out_dtype)
    rois = np.zeros(hu.shape, out_dtype)
    vertebrae = []
    for i, v in enumerate(res["vertebrae"], start=1):
        body_mask, roi_mask = v.pop("body_mask"), v.pop("roi_mask")
        lo = v.pop("crop_lo")
        if v["body_voxels"]:
            _place(bodies, body_mask, lo, i)
            _place(rois, roi_mask, lo, i)
        name = names.get(v["label"], "")
        v = {"index": i, "name": name, "level_known": name in LEVELS, "mask_value": i, **v}
        v["acr_class_name"] = None if v["acr_class"] is None else ACR_NAMES[v["acr_class"]]
        v["genant_name"] = None if v["genant_grade"] is None else GENANT_NAMES[v["genant_grade"]]
        vertebrae.append(v)
    return {"vertebrae": vertebrae, "not_screened": not_screened, "labels_present": present, "bodies": bodies,
            "rois": rois, "components_dropped": dropped, "voxel_volume_mm3": res["voxel_volume_mm3"]}


def _present_values(labels: np.ndarray) -> List[int]:
    if labels.dtype in (np.uint8, np.uint16, np.int16):
        counts = np.bincount(labels.reshape(-1).astype(np.int64) if labels.dtype == np.int16 else labels.reshape(-1))
        return [int(v) for v in np.flatnonzero(counts) if v != 0]
    return [int(v) for v in np.unique(labels) if v != 0]
