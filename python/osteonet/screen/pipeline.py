"""`osteonet.screen.screen`: the whole screen of one CT. Inputs are read and checked first (one
ValueError each, nothing written), then everything is measured and rendered in memory, then each output
file is written atomically (osteonet.io): report.json, vertebrae.csv, report.png, report.html,
bodies.nii.gz and rois.nii.gz (label maps on the CT's voxel grid, value = the vertebra's `mask_value`;
a NIfTI CT's own axis order, a DICOM series' column, row, slice order),
segmentation.nii.gz when osteonet segmented the vertebrae itself, and for a DICOM series seg.dcm (DICOM
Segmentation) and sr.dcm (TID 1500 structured report)."""

from __future__ import annotations

import datetime
import gzip
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import _core
from .._errors import nearest
from . import dicom as sdicom
from . import report as srep
from .calibration import Calibration, from_phantom, parse_calibration
from .inputs import CTVolume, read_ct, read_label_map
from .labels import LabelTable, load_table
from .measure import MEASURE_OPTIONS, l1_screen, measure

__all__ = ["screen", "OUTPUT_FILES"]

OUTPUT_FILES = ("report.json", "vertebrae.csv", "report.png", "report.html", "bodies.nii.gz", "rois.nii.gz",
                "segmentation.nii.gz", "seg.dcm", "sr.dcm")


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _limits(report: Dict[str, Any]) -> List[str]:
    out = [srep.DISCLAIMER,
           "BMD: " + report["calibration"]["description"] + ". ACR classes follow from that BMD.",
           "Pickhardt's L1 thresholds were derived on 120 kVp abdominal CT against DXA; other kVp, intravenous contrast "
           "and scanner calibration shift the attenuation.",
           "Heights are measured on the masks: where an endplate is parallel to the voxel rows, a mask places it to a "
           "row, so heights are good to about one voxel there and to about half a voxel where endplates cross rows.",
           "Vertebrae cut by the field of view are flagged 'incomplete': no volume, heights or grade; their HU is that of "
           "the visible part.",
           "Uniform (crush) height loss is only seen against neighbours: a vertebra without a complete neighbour within "
           "the span is graded on its own heights ('no_neighbour_reference').",
           "Genant's method grades fractures visually; here the grade is computed from the measured height loss alone "
           "(no deformity type, no distinction from non-fracture deformities such as Scheuermann's or short vertebrae)."]
    if report["input"]["body_source"] == "derived":
        out.append("Vertebral bodies were derived from whole-vertebra masks by cutting at the spinal canal; a body mask "
                   "(TotalSegmentator's vertebrae_body, --body-mask) gives exact bodies.")
    seg = report["input"]["segmentation"]
    if seg["source"] == "osteonet":
        out.append(seg["note"])
    if any(v.get("fracture_probability") is not None for v in report["vertebrae"]):
        out.append("The fracture probability comes from osteonet's scan-level fracture classifier applied to each "
                   "vertebra's sagittal neighbourhood; it is not calibrated per vertebra.")
    return out


def screen(ct: str, out: Optional[str] = None, masks: Optional[str] = None, body_mask: Optional[str] = None,
           labels: Optional[str] = None, calibration: Optional[str] = None, phantom_mask: Optional[str] = None,
           phantom_densities: Optional[Sequence[float]] = None, fracture: Optional[str] = None,
           seg_checkpoint: Optional[str] = None, dicom_outputs: bool = True, progress: bool = False,
           **options: Any) -> Dict[str, Any]:
    """Screens one CT: every vertebra in view, its density and its shape, against the published thresholds.

    ``ct``: a DICOM series folder or a NIfTI file (HU). ``masks``: a vertebra label map (NIfTI, on the CT's
    grid) read by the label table ``labels`` (built-in name or file; default "total"); without masks,
    osteonet's own segmentation runs (``seg_checkpoint`` to use your own weights). ``body_mask``: a
    vertebral-body map (1 body, 2 disc: TotalSegmentator's vertebrae_body). ``calibration``:
    "phantomless" (default) or "linear:SLOPE,INTERCEPT"; or ``phantom_mask`` (rods 1..k) with
    ``phantom_densities`` (mg/cm³). ``fracture``: an OVF aggregator checkpoint (osteonet reproduce ovf) for
    a per-vertebra fracture probability. ``options``: the measurement options (roi_margin_mm=4.0,
    column_inset=0.15, column_half_width_mm=2.0, lateral_half_width_mm=5.0, min_roi_voxels=50,
    neighbour_span=2). With ``out``, writes the outputs there (see the module docstring).

    Returns the report (the content of report.json).
    """
    t0 = time.perf_counter()
    timings: Dict[str, float] = {}
    log: Callable[[str], None] = (lambda m: print(f"screen: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    bad = sorted(set(options) - set(MEASURE_OPTIONS))
    if bad:
        raise TypeError(f"screen: unknown option {bad[0]!r}; did you mean {nearest(bad[0], MEASURE_OPTIONS)!r}? "
                        f"(valid: {', '.join(MEASURE_OPTIONS)})")
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"screen: --out must be a folder, got out={out} (a file)")
    if phantom_mask is not None and calibration not in (None, "phantom"):
        raise ValueError(f"screen: give either a phantom (phantom_mask) or calibration, got calibration={calibration!r} "
                         f"and phantom_mask={phantom_mask}")
    if (phantom_mask is None) != (phantom_densities is None):
        raise ValueError("screen: a phantom calibration needs both phantom_mask and phantom_densities, got "
                         f"phantom_mask={phantom_mask} phantom_densities={phantom_densities}")
    if masks is None and labels is not None:
        raise ValueError(f"screen: labels names the table of the masks, but no masks were given (labels={labels!r})")

    # ---- inputs, all checked before anything is written ----
    log(f"reading {ct}")
    vol = read_ct(ct)
    seg_info: Dict[str, Any] = {"source": "user", "path": masks}
    if masks is not None:
        if seg_checkpoint is not None:
            raise ValueError(f"screen: seg_checkpoint is for osteonet's own segmentation, but masks were given "
                             f"(seg_checkpoint={seg_checkpoint})")
        table = load_table(labels)
        label_map = read_label_map(masks, vol, "vertebra label map")
    else:
        from .segment import segment_vertebrae

        log("segmenting the vertebrae (osteonet's own model)")
        label_map, table, seg_info = segment_vertebrae(vol, checkpoint=seg_checkpoint, progress=progress)
    body = None
    if body_mask is not None:
        bm = read_label_map(body_mask, vol, "body mask")
        extra = bm[bm > 2]
        if extra.size:
            raise ValueError(f"{body_mask}: a body mask holds 0, 1 (vertebral body) and 2 (disc), got values "
                             f"{[int(v) for v in np.unique(extra)[:8]]}")
        body = (bm == 1).view(np.uint8)
    if phantom_mask is not None:
        rods = read_label_map(phantom_mask, vol, "phantom mask")
        cal = from_phantom(vol.hu, rods, phantom_densities, where=phantom_mask)
    else:
        cal = parse_calibration(calibration)
    fracture_model = None
    if fracture is not None:
        from .fracture import load_fracture_model

        fracture_model = load_fracture_model(fracture)
    timings["read_s"] = time.perf_counter() - t0

    # ---- measurements ----
    t1 = time.perf_counter()
    log("measuring")
    m = measure(vol.hu, label_map, vol.affine, table, body=body, calibration=cal, where=masks or "segmentation",
                **options)
    vertebrae = m["vertebrae"]
    timings["measure_s"] = time.perf_counter() - t1
    if fracture_model is not None:
        from .fracture import fracture_probabilities

        log("fracture classifier")
        t2 = time.perf_counter()
        probs = fracture_probabilities(fracture_model, vol, vertebrae, bodies=m["bodies"])
        for v, p in zip(vertebrae, probs):
            v["fracture_probability"] = p
        timings["fracture_s"] = time.perf_counter() - t2

    # ---- report ----
    import nibabel as nib

    import osteonet

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    body_source = "body_mask" if body is not None else ("labels" if table.structure == "body" else "derived")
    opts = {"roi_margin_mm": 4.0, "column_inset": 0.15, "column_half_width_mm": 2.0, "lateral_half_width_mm": 5.0,
            "min_roi_voxels": 50, "neighbour_span": 2}
    opts.update(options)
    report: Dict[str, Any] = {
        "schema": srep.REPORT_SCHEMA, "schema_version": srep.REPORT_VERSION,
        "generator": {"name": "osteonet", "version": osteonet.__version__, "component": "osteonet.screen"},
        "created": now.isoformat(), "disclaimer": srep.DISCLAIMER,
        "input": {"ct": os.fspath(ct), "format": vol.kind, "shape": [int(s) for s in vol.file_shape],
                  "spacing_mm": [float(s) for s in np.linalg.norm(vol.file_affine[:3, :3], axis=0)],
                  "axcodes": "".join(nib.aff2axcodes(vol.file_affine)),
                  "series_uid": vol.meta.get("series_uid") if vol.kind == "dicom" else None,
                  "masks": None if masks is None else os.fspath(masks),
                  "body_mask": None if body_mask is None else os.fspath(body_mask), "body_source": body_source,
                  "label_table": {"name": table.name, "structure": table.structure, "description": table.description},
                  "segmentation": seg_info},
        "method": {**opts, "body": {"body_mask": "the vertebra's label intersected with the body mask (value 1)",
                                    "labels": "the label map holds vertebral bodies",
                                    "derived": "derived from the whole-vertebra label: the part in front of the spinal "
                                               "canal (docs/screen.md)"}[body_source],
                   "heights": "body volume under a column kernel (triangular, half-widths column_half_width_mm along the "
                              "anterior axis and lateral_half_width_mm across the midline) divided by the kernel's area",
                   "height_reference": "max(own tallest column, median tallest column of complete vertebrae within "
                                       "neighbour_span levels)"},
        "calibration": cal.as_dict(), "thresholds": srep.THRESHOLDS, "vertebrae": vertebrae,
        "not_screened": m["not_screened"], "l1_screen": l1_screen(vertebrae),
        "components_dropped": m["components_dropped"],
    }
    classes = [v["acr_class_name"] for v in vertebrae]
    measured = [v for v in vertebrae if v["bmd_mg_cm3"] is not None]
    lowest = min(measured, key=lambda v: v["bmd_mg_cm3"]) if measured else None
    graded = [v for v in vertebrae if v["genant_grade"] is not None]
    report["summary"] = {
        "vertebrae": len(vertebrae), "complete": sum(v["complete"] for v in vertebrae), "measured": len(measured),
        "acr_counts": {k: classes.count(k) for k in ("normal", "osteopenia", "osteoporosis")} | {"not_classed": classes.count(None)},
        "lowest_bmd": None if lowest is None else {"name": lowest["name"], "bmd_mg_cm3": lowest["bmd_mg_cm3"],
                                                   "acr_class_name": lowest["acr_class_name"]},
        "fractures": [{"name": v["name"], "genant_grade": v["genant_grade"], "height_loss": v["height_loss"]}
                      for v in graded if v["genant_grade"] >= 1],
        "worst_genant_grade": max((v["genant_grade"] for v in graded), default=None),
        "l1_profile": report["l1_screen"]["profile"]}
    report["limits"] = _limits(report)

    files: Dict[str, bytes] = {}
    if out is not None:
        t3 = time.perf_counter()
        log("rendering the report")
        png = srep.report_png(vol.hu, vol.affine, m["bodies"], vertebrae, title=f"osteonet screen: {os.path.basename(os.fspath(ct).rstrip('/'))}")
        files["report.png"] = png
        files["bodies.nii.gz"] = _nifti_bytes(*vol.nifti_view(m["bodies"]))
        files["rois.nii.gz"] = _nifti_bytes(*vol.nifti_view(m["rois"]))
        if seg_info["source"] == "osteonet":
            files["segmentation.nii.gz"] = _nifti_bytes(*vol.nifti_view(label_map))
        if vol.kind == "dicom" and dicom_outputs:
            seg = sdicom.segmentation_dataset(vol.meta, m["bodies"], m["rois"], vertebrae, osteonet.__version__, now)
            files["seg.dcm"] = sdicom.to_bytes(seg)
            files["sr.dcm"] = sdicom.to_bytes(sdicom.sr_dataset(vol.meta, seg, report, osteonet.__version__, now))
        files["vertebrae.csv"] = srep.vertebrae_csv(vertebrae).encode()
        report["outputs"] = sorted(list(files) + ["report.json", "report.html"])
        timings["render_s"] = time.perf_counter() - t3
        report["timings_s"] = {**timings, "total_s": time.perf_counter() - t0}
        files["report.html"] = srep.report_html(report, png).encode()
        files["report.json"] = srep.report_json(report).encode()
        from ..io import atomic_write

        log(f"writing {len(files)} files to {out}")
        os.makedirs(out, exist_ok=True)
        for name in sorted(files):
            with atomic_write(os.path.join(out, name), "wb") as f:
                f.write(files[name])
        log(f"done in {time.perf_counter() - t0:.2f} s")
    else:
        report["outputs"] = []
        report["timings_s"] = {**timings, "total_s": time.perf_counter() - t0}
    return report
