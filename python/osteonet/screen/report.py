"""The screen's report: report.json (schema `osteonet.screen.report`, version REPORT_VERSION, documented
in docs/screen.md), vertebrae.csv, report.png (mid-sagittal and coronal views, each vertebra coloured by
its class with its numbers) and report.html (one self-contained page: the views, the table, thresholds,
method and limits). Everything is built in memory; osteonet.screen.pipeline writes it atomically."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = ["REPORT_SCHEMA", "REPORT_VERSION", "THRESHOLDS", "DISCLAIMER", "CLASS_COLOURS", "CSV_COLUMNS", "report_json",
           "vertebrae_csv", "report_png", "report_html"]

REPORT_SCHEMA = "osteonet.screen.report"
REPORT_VERSION = 1
DISCLAIMER = ("Research software, not a medical device: osteonet's screen has not been validated for diagnosis or "
              "treatment decisions. A radiologist must review the images and every number.")

THRESHOLDS = {
    "acr": {"what": "QCT trabecular BMD of the spine (mg/cm3)", "normal": "> 120", "osteopenia": "80-120",
            "osteoporosis": "< 80",
            "citation": "American College of Radiology, ACR-SPR-SSR Practice Parameter for the Performance of "
                        "Musculoskeletal Quantitative Computed Tomography (QCT), revised 2018"},
    "genant": {"what": "vertebral height loss (largest of anterior, middle, posterior against the reference height)",
               "grade_0": "< 20 %", "grade_1": "20-25 % (mild)", "grade_2": "25-40 % (moderate)",
               "grade_3": "> 40 % (severe)",
               "citation": "Genant HK, Wu CY, van Kuijk C, Nevitt MC. Vertebral fracture assessment using a "
                           "semiquantitative technique. J Bone Miner Res 1993;8(9):1137-1148"},
    "pickhardt": {"what": "L1 trabecular attenuation (HU), 120 kVp CT", "specific": "<= 110 HU: highly specific for "
                  "osteoporosis (specificity > 90 %)", "sensitive": "<= 160 HU: sensitive threshold (sensitivity > 90 %)",
                  "citation": "Pickhardt PJ, Pooler BD, Lauder T, del Rio AM, Bruce RJ, Binkley N. Opportunistic "
                              "screening for osteoporosis using abdominal computed tomography scans obtained for other "
                              "indications. Ann Intern Med 2013;158(8):588-595"},
}

#: Fill colours (RGB 0-255) of the ACR classes in the picture and the HTML table; grey: not classed.
CLASS_COLOURS = {"normal": (46, 160, 67), "osteopenia": (240, 160, 0), "osteoporosis": (214, 39, 40), None: (150, 150, 150)}

CSV_COLUMNS = ["index", "name", "label", "complete", "flags", "body_source", "body_volume_ml", "roi_voxels", "hu_mean",
               "hu_median", "hu_sd", "bmd_mg_cm3", "acr_class_name", "height_anterior_mm", "height_middle_mm",
               "height_posterior_mm", "reference_height_mm", "height_loss", "genant_grade", "fracture_probability"]


def report_json(report: Dict[str, Any]) -> str:
    return json.dumps(report, indent=1, allow_nan=False) + "\n"


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    return str(v)


def vertebrae_csv(vertebrae: Sequence[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for v in vertebrae:
        h = v.get("heights_mm") or {}
        row = {**v, "height_anterior_mm": h.get("anterior"), "height_middle_mm": h.get("middle"),
               "height_posterior_mm": h.get("posterior")}
        w.writerow([_csv_value(row.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def _canonical(volume: np.ndarray, affine: np.ndarray):
    """`volume` reordered to R, A, S axes (no resampling) and its voxel sizes along them."""
    from nibabel import orientations as ornt

    start = ornt.io_orientation(affine)
    tr = ornt.ornt_transform(start, ornt.axcodes2ornt(("R", "A", "S")))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    sp = [0.0, 0.0, 0.0]
    for src, (dst, _flip) in enumerate(tr):
        sp[int(dst)] = float(spacing[src])
    return ornt.apply_orientation(volume, tr), sp, tr


def _world_to_canonical(point: Sequence[float], affine: np.ndarray, shape: Sequence[int], tr) -> np.ndarray:
    ijk = np.linalg.solve(affine[:3, :3], np.asarray(point, np.float64) - affine[:3, 3])
    out = np.zeros(3)
    for src, (dst, flip) in enumerate(tr):
        out[int(dst)] = ijk[src] if flip > 0 else (shape[src] - 1 - ijk[src])
    return out


def _label(v: Dict[str, Any]) -> str:
    parts = [v["name"] or f"#{v['index']}"]
    if v.get("hu_mean") is not None:
        parts.append(f"{v['bmd_mg_cm3']:.0f} mg/cm³")
    if v.get("genant_grade") is not None:
        parts.append(f"G{v['genant_grade']}")
    if not v.get("complete"):
        parts.append("(cut)")
    return " ".join(parts)


def report_png(hu: np.ndarray, affine: np.ndarray, bodies: np.ndarray, vertebrae: Sequence[Dict[str, Any]],
               title: str = "") -> bytes:
    """Mid-sagittal and coronal views through the spine (bone window), bodies filled by ACR class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ..io import window

    ct, sp, tr = _canonical(hu, affine)
    lab, _, _ = _canonical(bodies, affine)
    centres = [_world_to_canonical(v["centroid_mm"], affine, hu.shape, tr) for v in vertebrae if v.get("body_voxels")]
    mid = np.median(np.array(centres), axis=0) if centres else (np.array(ct.shape) - 1) / 2
    x = int(np.clip(round(mid[0]), 0, ct.shape[0] - 1))
    y = int(np.clip(round(mid[1]), 0, ct.shape[1] - 1))
    colour_of = {v["mask_value"]: np.array(CLASS_COLOURS[v.get("acr_class_name")]) / 255.0 for v in vertebrae}

    def overlay(img2d, lab2d):
        rgb = np.repeat(window(img2d, 400.0, 1800.0)[..., None], 3, axis=2)
        for value, col in colour_of.items():
            m = lab2d == value
            rgb[m] = 0.5 * rgb[m] + 0.5 * col
        return rgb

    fig, axes = plt.subplots(1, 2, figsize=(12, 7.5), dpi=100)
    # Sagittal: rows = S (up), columns = A with anterior on the viewer's left.
    sag = overlay(ct[x].T[::-1, ::-1], lab[x].T[::-1, ::-1])
    axes[0].imshow(sag, extent=(0, ct.shape[1] * sp[1], 0, ct.shape[2] * sp[2]), interpolation="nearest")
    axes[0].set_title("mid-sagittal (anterior left)")
    # Coronal: rows = S (up), columns = R-L with the patient's right on the viewer's left.
    cor = overlay(ct[:, y].T[::-1, ::-1], lab[:, y].T[::-1, ::-1])
    axes[1].imshow(cor, extent=(0, ct.shape[0] * sp[0], 0, ct.shape[2] * sp[2]), interpolation="nearest")
    axes[1].set_title("coronal (patient's right left)")
    for v, c in zip([v for v in vertebrae if v.get("body_voxels")], centres):
        zs = c[2] * sp[2]
        axes[0].text((ct.shape[1] - 1 - c[1]) * sp[1] + 25, zs, _label(v), color="white", fontsize=8, va="center",
                     bbox=dict(facecolor="black", alpha=0.6, pad=1.5, edgecolor="none"))
        axes[1].text((ct.shape[0] - 1 - c[0]) * sp[0] + 30, zs, v["name"] or f"#{v['index']}", color="white", fontsize=8, va="center",
                     bbox=dict(facecolor="black", alpha=0.6, pad=1.5, edgecolor="none"))
    for a in axes:
        a.set_xlabel("mm")
    handles = [Patch(color=np.array(CLASS_COLOURS[k]) / 255.0, label=k) for k in ("normal", "osteopenia", "osteoporosis")]
    handles.append(Patch(color=np.array(CLASS_COLOURS[None]) / 255.0, label="not classed"))
    fig.legend(handles=handles, loc="lower center", ncol=4, title="ACR class (BMD)")
    fig.suptitle(title or "osteonet screen", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def report_html(report: Dict[str, Any], png: bytes) -> str:
    """One self-contained page (no external resources): the views, the per-vertebra table with the
    classes and thresholds, the L1 screen, the method and its limits."""
    e = html.escape
    rows = []
    for v in report["vertebrae"]:
        cls = v.get("acr_class_name")
        rgb = CLASS_COLOURS[cls]
        h = v.get("heights_mm") or {}
        cells = [e(v["name"] or f"#{v['index']}"), "yes" if v["complete"] else "no (cut)", _fmt(v.get("hu_mean")),
                 _fmt(v.get("hu_median")), _fmt(v.get("hu_sd")), _fmt(v.get("bmd_mg_cm3")),
                 f'<td class="cls" style="background:rgb{rgb}">{e(cls or "not classed")}</td>',
                 _fmt(h.get("anterior")), _fmt(h.get("middle")), _fmt(h.get("posterior")),
                 _fmt(None if v.get("height_loss") is None else 100 * v["height_loss"]),
                 _fmt(v.get("genant_grade")), _fmt(v.get("fracture_probability"), 2), _fmt(v.get("body_volume_ml")),
                 e(", ".join(v.get("flags", [])))]
        rows.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>")
    l1 = report["l1_screen"]
    l1_text = (f"L1 trabecular attenuation {l1['hu']:.1f} HU: <b>{e(l1['profile'].replace('_', ' '))}</b>"
               if l1["available"] else f"L1 screen not available: {e(l1['reason'] or '')}")
    if l1["available"] and l1.get("reason"):
        l1_text += f" ({e(l1['reason'])})"
    th = report["thresholds"]
    thresholds = "".join(
        f"<tr><td>{e(name)}</td><td>{e(t['what'])}</td><td>{e('; '.join(f'{k}: {v}' for k, v in t.items() if k not in ('what', 'citation')))}</td>"
        f"<td>{e(t['citation'])}</td></tr>" for name, t in th.items())
    inp = report["input"]
    m = report["method"]
    cal = report["calibration"]
    img = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>osteonet screen: {e(inp['ct'])}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #111; background: #fff; }}
table {{ border-collapse: collapse; margin: 8px 0 16px 0; font-size: 13px; }}
td, th {{ border: 1px solid #bbb; padding: 3px 6px; text-align: right; }}
th {{ background: #eee; }} td:first-child {{ text-align: left; font-weight: bold; }}
td.cls {{ color: #fff; font-weight: bold; text-align: center; }}
.warn {{ background: #fff3cd; border: 1px solid #e0b000; padding: 8px; margin: 8px 0; }}
table.text td {{ text-align: left; }}
img {{ max-width: 100%; }} .small {{ font-size: 12px; color: #333; }}
</style></head><body>
<h1>Opportunistic osteoporosis and fracture screen</h1>
<div class="warn">{e(report['disclaimer'])}</div>
<p class="small">CT: {e(inp['ct'])} ({e(inp['format'])}, {' x '.join(str(s) for s in inp['shape'])} voxels of
{' x '.join(f'{s:.3g}' for s in inp['spacing_mm'])} mm); vertebrae: {e(inp['segmentation']['source'])}
({e(inp['label_table']['name'])}); osteonet {e(report['generator']['version'])}, {e(report['created'])}.</p>
<h2>L1 screen (Pickhardt)</h2><p>{l1_text}</p>
<h2>Views</h2><img alt="mid-sagittal and coronal views" src="data:image/png;base64,{img}">
<h2>Per vertebra</h2>
<table><tr><th>level</th><th>complete</th><th>HU mean</th><th>HU median</th><th>HU SD</th><th>BMD mg/cm&sup3;</th>
<th>ACR class</th><th>H ant mm</th><th>H mid mm</th><th>H post mm</th><th>height loss %</th><th>Genant grade</th>
<th>p(fracture)</th><th>body ml</th><th>flags</th></tr>
{''.join(rows)}
</table>
<h2>Thresholds</h2><table class="text"><tr><th>profile</th><th>measure</th><th>thresholds</th><th>reference</th></tr>{thresholds}</table>
<h2>Method</h2>
<p class="small">Vertebral body: {e(m['body'])}. Trabecular ROI: the body's voxels more than {m['roi_margin_mm']:g} mm
from its outside; HU mean, median and SD over it. BMD: {e(cal['description'])}. Heights along each vertebra's own
superior axis (the spine's direction through its neighbours' body centroids) at columns {m['column_inset']:.0%} of the
body's depth inside its anterior and posterior walls and at its middle: {e(m['heights'])}. Height loss: 1 - (smallest
height / reference height), the reference being the larger of the vertebra's tallest column and the median tallest
column of the complete vertebrae within {m['neighbour_span']} levels; Genant grade from the height loss.</p>
<h2>Limits</h2>
<ul class="small">{''.join(f'<li>{e(x)}</li>' for x in report['limits'])}</ul>
</body></html>
"""
