"""Seed 004 (hip X-ray) on the built-in hip radiographs, as presets of the ``hip`` task
(osteonet.tasks.hip; the code `osteonet train --task hip` runs): U-Net and U-Net++ segment the femoral
neck, greater trochanter, Ward's triangle and total hip (IoU per region); each region is matted out of
the image (from the U-Net++ segmentation) and a DenseNet121 per region classifies it into WHO T-score
classes (accuracy with a Wilson interval), written beside the paper's numbers.

Presets: `quick` (CPU, a few minutes on 2 cores: 100 radiographs at 256 pixels, segmentation at 128
pixels with 16-channel networks, 64-pixel cut-outs; it shows the pipeline end to end and its numbers are
not comparable with the paper's) and `paper` (for a GPU: 512-pixel images and segmentation, the classic
64-channel U-Net, U-Net++ with deep supervision, 224-pixel cut-outs, 100 epochs; the seed's text gives
neither the data size nor the training settings, so those are our choices).
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional

from .. import hip as H

SEGMENTERS = {"unet": "U-Net", "unet_plusplus": "U-Net++"}
CLASS_NAMES = ["normal", "osteopenia", "osteoporosis"]
# The paper's numbers: IoU >= 0.5 for both networks; DenseNet121 on the total hip 74 % accuracy (its best region).
PAPER = {"iou": ">= 0.5", "accuracy": {"total_hip": 74.0}}

PRESETS = {
    "quick": dict(n_images=100, image_size=256, test_fraction=0.2, seg_size=128,
                  segmenters={"unet": dict(base_channels=16, depth=4),
                              "unet_plusplus": dict(base_channels=16, depth=4, deep_supervision=True)},
                  seg_epochs=15, seg_batch_size=4, seg_lr=2e-3, seg_class_weights="balanced",
                  matting_from="unet_plusplus", crop_size=64,
                  margin=0.1, classifier="densenet121", regions=list(H.HIP_REGIONS), cls_epochs=10,
                  cls_batch_size=16, cls_lr=1e-3),
    "paper": dict(n_images=1000, image_size=512, test_fraction=0.2, seg_size=512,
                  segmenters={"unet": dict(base_channels=64, depth=4),
                              "unet_plusplus": dict(base_channels=32, depth=4, deep_supervision=True)},
                  seg_epochs=100, seg_batch_size=8, seg_lr=1e-3, seg_class_weights="balanced",
                  matting_from="unet_plusplus", crop_size=224,
                  margin=0.1, classifier="densenet121", regions=list(H.HIP_REGIONS), cls_epochs=100,
                  cls_batch_size=32, cls_lr=1e-3),
}
#: preset keys that are the hip task's options as they are
TASK_KEYS = ("seg_size", "seg_epochs", "seg_batch_size", "seg_lr", "seg_class_weights", "crop_size", "margin",
             "classifier", "cls_epochs", "cls_batch_size", "cls_lr")


def _fmt(v, digits=3) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def reproduce(out: str, preset: str = "quick", seed: int = 0, data: Optional[str] = None,
              variants: Optional[List[str]] = None, progress: bool = True, overrides: Optional[Dict] = None) -> Dict:
    """Runs the reproduction; returns {"rows": [...], "markdown": str, "seconds"}. Writes OUT/table.json,
    table.md and one run folder per segmenter (OUT/unet, OUT/unet_plusplus: model card, checkpoints,
    metrics, masks.png, confusion_<region>.png). ``variants``: segmenters (default both); ``overrides``
    replaces preset entries (e.g. a tiny configuration for tests)."""
    from .. import tasks
    from ..synth import generate_hip_dataset
    from .table import metric, row, write_table

    if preset not in PRESETS:
        raise ValueError(f"reproduce hip: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    cfg = dict(PRESETS[preset])
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise ValueError(f"reproduce hip: unknown override(s) {unknown}; valid: {sorted(cfg)}")
    cfg.update(overrides or {})
    if variants:
        cfg["segmenters"] = {k: v for k, v in cfg["segmenters"].items() if k in variants}
    bad = [r for r in cfg["regions"] if r not in H.HIP_REGIONS] + [s for s in cfg["segmenters"] if s not in SEGMENTERS]
    bad += [v for v in variants or [] if v not in SEGMENTERS]
    if bad or cfg["matting_from"] not in cfg["segmenters"]:
        raise ValueError(f"reproduce hip: regions must be among {list(H.HIP_REGIONS)}, segmenters among {list(SEGMENTERS)} "
                         f"and matting_from one of the segmenters, got {bad or cfg['matting_from']!r}")
    t_start = time.time()
    data = data or os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "manifest.csv")):
        print(f"generating {cfg['n_images']} built-in hip radiographs ({cfg['image_size']} px) in {data}", flush=True)
        generate_hip_dataset(data, cfg["n_images"], seed=seed, size=cfg["image_size"], progress=progress)
    rows, md_seg, md_cls, metrics, info = [], [], [], {}, {}
    for name, opts in cfg["segmenters"].items():
        t0 = time.time()
        options = {k: cfg[k] for k in TASK_KEYS}
        options.update({f"seg_{k}": v for k, v in opts.items()}, seg_model=name,
                       regions=list(cfg["regions"]) if name == cfg["matting_from"] else [])
        print(f"{SEGMENTERS[name]}: segmentation ({cfg['seg_epochs']} epochs at {cfg['seg_size']} px)"
              + (f" and a {cfg['classifier']} per region ({', '.join(options['regions'])})" if options["regions"] else ""),
              flush=True)
        card = tasks.train("hip", data, os.path.join(out, name), options, seed=seed, test_fraction=cfg["test_fraction"],
                           resume=True, progress=progress,
                           command=f"osteonet reproduce hip --preset {preset} --seed {seed} ({name})")
        with open(os.path.join(out, name, "metrics.json")) as f:
            metrics[name] = m = json.load(f)
        info = card["training_data"]
        iou = m["iou"]
        rows.append(row("004", SEGMENTERS[name], {
            **{f"iou_{r}": metric(iou[r], m["iou_ci"][r], paper=PAPER["iou"]) for r in H.HIP_REGIONS},
            "iou_mean": metric(iou["mean"], paper=PAPER["iou"])}, table="segmentation", n=m["n"], segmenter=name,
            iou_at_least_0_5=m["iou_at_least_0.5"], baselines=m["baselines"], run=name))
        md_seg.append(f"| {SEGMENTERS[name]} | " + " | ".join(_fmt(iou[r]) for r in H.HIP_REGIONS + ("mean",)) + " | >= 0.5 |")
        print(f"      IoU {' '.join(f'{k} {_fmt(v)}' for k, v in iou.items())} ({time.time() - t0:.0f} s)", flush=True)
    m = metrics[cfg["matting_from"]]
    for region in cfg["regions"]:
        c = m["classification"][region]
        correct = sum(c["confusion_matrix"][k][k] for k in range(3))
        acc, (lo, hi) = 100.0 * correct / m["n"], c["accuracy_ci"]
        paper_acc = PAPER["accuracy"].get(region)
        method = f"DenseNet121 ({region})" if cfg["classifier"] == "densenet121" else f"{cfg['classifier']} ({region})"
        rows.append(row("004", method, {"accuracy": metric(acc, [100 * lo, 100 * hi], paper=paper_acc, unit="%")},
                        table="classification", n=m["n"], region=region, confusion_matrix=c["confusion_matrix"],
                        matting_from=cfg["matting_from"], empty_predicted_masks=c["empty_predicted_masks"],
                        baseline=m.get("baseline"), run=cfg["matting_from"]))
        md_cls.append(f"| {region} | {acc:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | {paper_acc if paper_acc else '-'} |")
    n_te, n_tr = info["test"]["samples"], info["train"]["samples"]
    md = [f"# Seed 004 reproduction ({preset} preset, built-in synthetic hip radiographs, seed {seed})", "",
          "Ours beside (the paper's). IoU of each region on the test radiographs at full resolution; accuracy of the "
          "WHO T-score class (3 classes) with a 95 % Wilson interval; regions matted from the "
          f"{SEGMENTERS[cfg['matting_from']]} segmentation.", "",
          "| Segmentation IoU | " + " | ".join(H.HIP_REGIONS) + " | mean | paper |", "|---|---|---|---|---|---|---|",
          *md_seg, "", f"| {cfg['classifier']} region | accuracy % (95 % CI) | paper % |", "|---|---|---|", *md_cls, "",
          f"Test radiographs: {n_te} (training {n_tr}). Pictures: <segmenter>/masks.png, "
          f"{cfg['matting_from']}/confusion_<region>.png. Run folders (model cards, checkpoints): "
          + ", ".join(f"{s}/" for s in cfg["segmenters"]) + ".", ""]
    markdown = "\n".join(md)
    wall = time.time() - t_start
    write_table(out, "hip", "004", "Hip X-ray: region IoU and per-region T-score classes", preset, seed,
                {**info, "folder": os.path.relpath(data, out)}, cfg, rows, markdown,
                files={"runs": {s: s for s in cfg["segmenters"]}, "cards": {s: f"{s}/model.json" for s in cfg["segmenters"]}},
                timing={"seconds": wall})
    return {"rows": rows, "markdown": markdown, "seconds": wall}
