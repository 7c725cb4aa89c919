"""`osteonet screen CT --out DIR [--masks LABELMAP] [--body-mask BODYMASK] [--labels TABLE] ...`: the
command line of osteonet.screen (registered by osteonet.cli through add_parser)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .._errors import first_line

__all__ = ["add_parser", "run", "main"]


def _floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "screen", help="opportunistic osteoporosis and fracture screen of a CT, per vertebra, with a report",
        description="Screens every vertebra of a CT (DICOM series folder or NIfTI, HU): trabecular HU and BMD with "
                    "ACR classes, L1 against Pickhardt's thresholds, body volume, anterior/middle/posterior heights and "
                    "Genant grades. Writes report.json, vertebrae.csv, report.png, report.html, masks as NIfTI and, for "
                    "DICOM input, a DICOM SEG and a TID 1500 SR. Research software, not a medical device.")
    p.add_argument("ct", metavar="CT", help="a DICOM series folder or a NIfTI file (.nii, .nii.gz) in HU")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--masks", default=None, metavar="LABELMAP",
                   help="vertebra label map (NIfTI on the CT's grid); without it osteonet segments the vertebrae")
    p.add_argument("--body-mask", default=None, metavar="BODYMASK",
                   help="vertebral-body map (1 body, 2 disc: TotalSegmentator's vertebrae_body)")
    p.add_argument("--labels", default=None, metavar="TABLE",
                   help="label table of --masks: total (default), verse, vertebrae_body, osteonet, or a .json/.csv file")
    p.add_argument("--calibration", default=None,
                   help="HU -> BMD: phantomless (default) or linear:SLOPE,INTERCEPT")
    p.add_argument("--phantom-mask", default=None, help="label map of an in-scan phantom's rods (1..k)")
    p.add_argument("--phantom-densities", type=_floats, default=None, metavar="D1,D2,...",
                   help="the rods' densities in mg/cm3, in label order")
    p.add_argument("--fracture", default=None, metavar="CHECKPOINT",
                   help="an OVF aggregator checkpoint (osteonet reproduce ovf: lstm.pt, ...): per-vertebra fracture probability")
    p.add_argument("--seg-checkpoint", default=None, help="weights for osteonet's vertebra segmentation (without --masks)")
    p.add_argument("--roi-margin", type=float, default=4.0, metavar="MM", help="trabecular ROI erosion margin (default 4 mm)")
    p.add_argument("--no-dicom-outputs", action="store_true", help="skip the DICOM SEG and SR of a DICOM input")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=run)
    return p


def run(a: argparse.Namespace) -> int:
    from .pipeline import screen

    try:
        rep = screen(a.ct, out=a.out, masks=a.masks, body_mask=a.body_mask, labels=a.labels, calibration=a.calibration,
                     phantom_mask=a.phantom_mask, phantom_densities=a.phantom_densities, fracture=a.fracture,
                     seg_checkpoint=a.seg_checkpoint, dicom_outputs=not a.no_dicom_outputs, progress=not a.quiet,
                     roi_margin_mm=a.roi_margin)
    except RuntimeError as e:  # the C++ core and LibTorch: one line, never a backtrace
        raise ValueError(first_line(e)) from None
    if not a.quiet:
        for v in rep["vertebrae"]:
            h = v["heights_mm"]
            hs = "-" if h["anterior"] is None else f"{h['anterior']:.1f}/{h['middle']:.1f}/{h['posterior']:.1f} mm"
            print(f"{v['name'] or '#' + str(v['index']):>4}  {'complete' if v['complete'] else 'cut     '}  "
                  f"HU {'-' if v['hu_mean'] is None else format(v['hu_mean'], '.1f'):>6}  "
                  f"BMD {'-' if v['bmd_mg_cm3'] is None else format(v['bmd_mg_cm3'], '.1f'):>6}  "
                  f"{v['acr_class_name'] or '-':<12} heights {hs}  Genant {'-' if v['genant_grade'] is None else v['genant_grade']}")
        l1 = rep["l1_screen"]
        print(f"L1: {l1['hu']:.1f} HU, {l1['profile']}" if l1["available"] else f"L1: {l1['reason']}")
        print(f"wrote {', '.join(rep['outputs'])} to {a.out}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="osteonet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"osteonet screen: error: {e}", file=sys.stderr)
        return 2
