"""Seed 004 (hip X-ray) on the built-in hip radiographs: U-Net and U-Net++ segment the femoral neck,
greater trochanter, Ward's triangle and total hip (IoU per region), each region is matted out of the
image and a DenseNet121 per region classifies it into WHO T-score classes (accuracy with a Wilson
interval), written beside the paper's numbers.

Presets: `quick` (CPU, a few minutes on 2 cores: 100 radiographs at 256 pixels, segmentation at 128
pixels with 16-channel networks, 64-pixel cut-outs; it shows the pipeline end to end and its numbers are
not comparable with the paper's) and `paper` (for a GPU: 512-pixel images and segmentation, the classic
64-channel U-Net, U-Net++ with deep supervision, 224-pixel cut-outs, 100 epochs; the seed's text gives
neither the data size nor the training settings, so those are our choices).
"""

from __future__ import annotations

import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from .. import figures
from .. import hip as H
from .. import metrics as om
from .. import train as ot
from ..io import write_json, write_text
from ..segmentation import balanced_class_weights
from .bmd import FlipDataset, crops_input, load_pngs, mat_regions, predict_full, to_input, to_labels, train_segmenter

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


def _fmt(v, digits=3) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def reproduce(out: str, preset: str = "quick", seed: int = 0, data: Optional[str] = None, progress: bool = True,
              overrides: Optional[Dict] = None) -> Dict:
    """Runs the reproduction; returns {"rows": [...], "markdown": str}. Writes DIR/table.json, table.md,
    pictures (masks_<segmenter>.png, confusion_<region>.png) and checkpoints (*/last.pt).
    `overrides` replaces preset entries (e.g. a tiny configuration for tests)."""
    from ..io import read_manifest
    from ..split import patient_split
    from ..synth import generate_hip_dataset

    if preset not in PRESETS:
        raise ValueError(f"reproduce hip: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    cfg = dict(PRESETS[preset])
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise ValueError(f"reproduce hip: unknown override(s) {unknown}; valid: {sorted(cfg)}")
    cfg.update(overrides or {})
    bad = [r for r in cfg["regions"] if r not in H.HIP_REGIONS] + [s for s in cfg["segmenters"] if s not in SEGMENTERS]
    if bad or cfg["matting_from"] not in cfg["segmenters"]:
        raise ValueError(f"reproduce hip: regions must be among {list(H.HIP_REGIONS)}, segmenters among {list(SEGMENTERS)} "
                         f"and matting_from one of the segmenters, got {bad or cfg['matting_from']!r}")
    t_start = time.time()
    data = data or os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "manifest.csv")):
        print(f"generating {cfg['n_images']} built-in hip radiographs ({cfg['image_size']} px) in {data}", flush=True)
        generate_hip_dataset(data, cfg["n_images"], seed=seed, size=cfg["image_size"], progress=progress)
    rows = read_manifest(data, required=("path", "label_index", "patient_id", "label_mask"))
    y = np.array([int(r["label_index"]) for r in rows])
    tr, te = patient_split([r["patient_id"] for r in rows], list(y), test_fraction=cfg["test_fraction"], seed=seed)
    print(f"patient-level split: {len(tr)} training and {len(te)} test radiographs", flush=True)
    images = load_pngs(data, [r["path"] for r in rows])
    labels = load_pngs(data, [r["label_mask"] for r in rows])
    if int(labels.max()) >= H.NUM_HIP_LABELS:
        raise ValueError(f"reproduce hip: label masks must hold 0..{H.NUM_HIP_LABELS - 1}, got {int(labels.max())}")

    result_rows, md_seg, preds = [], [], {}
    steps = len(cfg["segmenters"]) + len(cfg["regions"])
    step = 0
    xs, ys = to_input(images[tr], cfg["seg_size"]), to_labels(labels[tr], cfg["seg_size"])
    # Ward's triangle covers ~0.2 % of the image: the cross-entropy is weighted by (class frequency)^-1/2.
    weights = balanced_class_weights(ys, H.NUM_HIP_LABELS) if cfg["seg_class_weights"] == "balanced" else None
    for name, opts in cfg["segmenters"].items():
        step += 1
        t0 = time.time()
        print(f"[{step}/{steps}] {SEGMENTERS[name]}: {cfg['seg_epochs']} epochs at {cfg['seg_size']} px", flush=True)
        seg = train_segmenter(name, opts, H.NUM_HIP_LABELS, xs, ys, cfg, os.path.join(out, f"segmentation_{name}"), seed,
                              progress, class_weights=weights)
        pred_all = predict_full(seg, images, cfg["seg_size"])
        preds[name] = pred_all
        per = H.region_iou(pred_all[te].long(), labels[te].long())
        iou = {r: float(np.nanmean(v)) for r, v in per.items()}
        iou["mean"] = float(np.mean([iou[r] for r in H.HIP_REGIONS]))
        result_rows.append({"method": SEGMENTERS[name], "segmenter": name, "iou": iou,
                            "iou_at_least_0.5": {r: float(np.nanmean(per[r] >= 0.5)) for r in H.HIP_REGIONS},
                            "n_test": len(te), "paper": {"iou": PAPER["iou"]}})
        md_seg.append(f"| {SEGMENTERS[name]} | " + " | ".join(_fmt(iou[r]) for r in H.HIP_REGIONS + ("mean",)) + " | >= 0.5 |")
        show = te[:4]
        figures.mask_overlay_png(os.path.join(out, f"masks_{name}.png"), [images[i].numpy() for i in show],
                                 [labels[i].numpy() for i in show], [pred_all[i].numpy() for i in show],
                                 [f"{rows[i]['patient_id']} IoU(total) {H.region_iou(pred_all[i:i+1].long(), labels[i:i+1].long())['total_hip'][0]:.2f}"
                                  for i in show], num_labels=H.NUM_HIP_LABELS)
        print(f"      IoU {' '.join(f'{k} {v:.3f}' for k, v in iou.items())} ({time.time() - t0:.0f} s)", flush=True)

    md_cls = []
    pred_src = preds[cfg["matting_from"]]
    ytr, yte = torch.from_numpy(y[tr]).long(), y[te]
    for region in cfg["regions"]:
        step += 1
        t0 = time.time()
        print(f"[{step}/{steps}] {cfg['classifier']} on the {region}: {cfg['cls_epochs']} epochs", flush=True)
        region_pred = H.region_mask(pred_src, region)
        crops_tr, _ = mat_regions(images[tr], region_pred[tr], cfg, fallback=H.region_mask(labels[tr], region))
        crops_te, empty_te = mat_regions(images[te], region_pred[te], cfg)
        ot.seed_everything(seed)
        model = H.create_region_classifier(cfg["classifier"], num_classes=3, in_chans=1)
        bs = cfg["cls_batch_size"]
        loader = torch.utils.data.DataLoader(FlipDataset(crops_input(crops_tr), ytr), batch_size=bs, shuffle=True,
                                             drop_last=len(tr) > bs)
        opt = ot.create_optimizer("adamw", model, lr=cfg["cls_lr"], weight_decay=1e-4)
        trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, cfg["cls_epochs"])),
                             epochs=cfg["cls_epochs"], out_dir=os.path.join(out, f"classifier_{region}"), seed=seed,
                             progress=progress)
        trainer.fit(loader, ot.classification_step())
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(crops_input(crops_te[i:i + 32])) for i in range(0, len(te), 32)])
        pred = logits.argmax(1).numpy()
        correct = int((pred == yte).sum())
        lo, hi = om.proportion_ci(correct, len(te), "wilson")
        cm = om.confusion_matrix(yte, pred, 3)
        figures.confusion_matrix_png(os.path.join(out, f"confusion_{region}.png"), cm, CLASS_NAMES,
                                     f"{cfg['classifier']}, {region}")
        acc = 100.0 * correct / len(te)
        paper_acc = PAPER["accuracy"].get(region)
        result_rows.append({"method": f"DenseNet121 ({region})" if cfg["classifier"] == "densenet121" else
                            f"{cfg['classifier']} ({region})", "region": region, "accuracy": acc,
                            "accuracy_ci": [100 * lo, 100 * hi], "confusion_matrix": cm.tolist(), "n_test": len(te),
                            "matting_from": cfg["matting_from"], "empty_predicted_masks": int(sum(empty_te)),
                            "paper": {"accuracy": paper_acc}})
        md_cls.append(f"| {region} | {acc:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | {paper_acc if paper_acc else '-'} |")
        print(f"      accuracy {acc:.1f} % ({time.time() - t0:.0f} s)", flush=True)

    md = [f"# Seed 004 reproduction ({preset} preset, built-in synthetic hip radiographs, seed {seed})", "",
          "Ours beside (the paper's). IoU of each region on the test radiographs at full resolution; accuracy of the "
          "WHO T-score class (3 classes) with a 95 % Wilson interval; regions matted from the "
          f"{SEGMENTERS[cfg['matting_from']]} segmentation.", "",
          "| Segmentation IoU | " + " | ".join(H.HIP_REGIONS) + " | mean | paper |", "|---|---|---|---|---|---|---|",
          *md_seg, "", f"| {cfg['classifier']} region | accuracy % (95 % CI) | paper % |", "|---|---|---|", *md_cls, "",
          f"Test radiographs: {len(te)} (training {len(tr)}). Pictures: masks_<segmenter>.png, confusion_<region>.png. "
          "Checkpoints: segmentation_<segmenter>/last.pt, classifier_<region>/last.pt.", ""]
    markdown = "\n".join(md)
    write_text(os.path.join(out, "table.md"), markdown)
    write_json(os.path.join(out, "table.json"), {"paper_id": "004", "preset": preset, "seed": seed, "config": cfg,
                                                 "wall_seconds": time.time() - t_start, "rows": result_rows})
    return {"rows": result_rows, "markdown": markdown}
