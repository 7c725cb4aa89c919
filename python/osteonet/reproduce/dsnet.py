"""DSNet (seed 000) Tables 1 and 2 on the built-in lumbar CT, as presets of the ``detection`` task
(osteonet.tasks.detection; the code `osteonet train --task detection` runs): generate the data, split
4:1 by patient, train each Faster R-CNN variant, evaluate, and write the tables beside the paper's numbers.

The ResNet-50 rows start from the ImageNet ResNet-50 (osteonet.weights ``resnet50/imagenet``, as the paper
fine-tunes ImageNet weights); VGG16 and MobileNet rows train from scratch (no ImageNet weights reachable
offline). Presets: `quick` (CPU, 2 cores: 30 patients x 3 slices, 160-pixel inputs, 3 epochs from scratch
and 6 fine-tuning epochs, lighter RPN/RoI sampling; it shows the pipeline end to end, and its numbers are
not comparable with the paper's; examples/reproduce/dsnet/README.md has its learning curves) and `paper` (the paper's settings for a GPU: 133 patients x 36 slices,
800-pixel inputs, SGD lr 0.01, batch 9, 100 epochs).
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional

# name: (backbone, attention, attention_placement, pretrained weights: the paper fine-tunes ImageNet ResNet-50s;
# no ImageNet VGG16 or MobileNet is reachable offline, so those rows train from scratch)
VARIANTS = {
    "resnet50": ("resnet50", None, None, "imagenet"),
    "resnet50+se": ("resnet50", "se", "dsnet", "imagenet"),
    "resnet50+sk": ("resnet50", "sk", "dsnet", "imagenet"),
    "resnet50+ds": ("dsnet_resnet50", None, None, "imagenet"),  # DSNet: DS after the stem and the last stage (Fig. 3)
    "vgg16": ("vgg16", None, None, None),
    "vgg16+ds": ("vgg16", "ds", None, None),
    "mobilenet": ("mobilenet_v3_large", None, None, None),
    "mobilenet+ds": ("mobilenet_v3_large", "ds", None, None),
}
# The paper's numbers: Map %, Recall %, Acc %, "Fps" (reads as seconds per frame).
TABLE1 = [("ResNet50", "resnet50", (78.2, 88.1, 74.1, 0.1849)), ("ResNet50+SE", "resnet50+se", (80.4, 88.5, 73.7, 0.1834)),
          ("ResNet50+SK", "resnet50+sk", (81.4, 89.2, 73.8, 0.1829)), ("ResNet50+DS (DSNet)", "resnet50+ds", (83.4, 90.0, 75.9, 0.1846))]
TABLE2 = [("ResNet50", "resnet50", (78.2, 88.1, 74.1, 0.1849)), ("ResNet50 + DS", "resnet50+ds", (83.4, 90.0, 75.9, 0.1846)),
          ("VGG16", "vgg16", (80.0, 88.5, 71.1, 0.1873)), ("VGG16 + DS", "vgg16+ds", (80.2, 89.9, 71.8, 0.1870)),
          ("MobileNet", "mobilenet", (80.9, 86.4, 73.0, 0.1856)), ("MobileNet + DS", "mobilenet+ds", (83.0, 88.1, 72.7, 0.1846))]

PRESETS = {
    "quick": dict(n_patients=30, slices_per_patient=3, min_size=160, max_size=160, epochs=3, batch_size=4, lr=0.01,
                  detector=dict(rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                                rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=64),
                  # pretrained ResNet-50 rows: BatchNorm frozen at ImageNet statistics (batch 4 is too small to
                  # re-estimate them), every stage and the attention modules trained; 6 epochs at lr 0.02 and no
                  # brightness/contrast jitter (it shifts the bone density the WHO class is read from), measured
                  # in examples/reproduce/dsnet/README.md (learning curves)
                  pretrained_detector=dict(frozen_bn=True, trainable_backbone_layers=5),
                  pretrained_overrides=dict(epochs=6, lr=0.02, augment=False)),
    "paper": dict(n_patients=133, slices_per_patient=36, min_size=800, max_size=1333, epochs=100, batch_size=9, lr=0.01,
                  detector={}),
}


def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.1f}" if abs(v) >= 1 or v == 0 else f"{v:.4f}"


def tables(results: Dict[str, Dict[str, float]]):
    md, rows = [], []
    for title, spec in (("Table 1: attention modules in ResNet50 (Faster R-CNN)", TABLE1),
                        ("Table 2: backbones with and without DS", TABLE2)):
        md += [f"### {title}", "", "| Method | Map % (paper) | Recall % (paper) | Acc % (paper) | s/image (paper's 'Fps') | "
               "images/s | Map, paper's eq. 3 % |", "|---|---|---|---|---|---|---|"]
        for label, key, paper in spec:
            r = results.get(key)
            g = (lambda k: None if r is None else r.get(k))
            md.append(f"| {label} | {_fmt(g('map'))} ({paper[0]}) | {_fmt(g('recall'))} ({paper[1]}) | {_fmt(g('acc'))} "
                      f"({paper[2]}) | {_fmt(g('seconds_per_image'))} ({paper[3]}) | {_fmt(g('fps'))} | {_fmt(g('map_paper_eq3'))} |")
            row = {"table": title.split(":")[0], "method": label, "variant": key,
                   "paper": dict(zip(("map", "recall", "acc", "seconds_per_image"), paper))}
            if r is not None:
                row.update({k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()})
            rows.append(row)
        md.append("")
    return "\n".join(md), rows


def variant_options(name: str, cfg: Dict) -> Dict:
    """The detection task's options of one variant under a preset."""
    backbone, attention, placement, weights = VARIANTS[name]
    weights = weights if cfg.get("pretrained", True) else None
    o = {"model": backbone, "attention": attention, "attention_placement": placement, "image_size": cfg["min_size"],
         "max_size": cfg["max_size"], "epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "lr": cfg["lr"],
         "score_threshold": cfg.get("score_thresh", 0.5), "detector": dict(cfg["detector"]), "init_weights": weights}
    if weights:
        o.update(cfg.get("pretrained_overrides", {}))
        o["detector"].update(cfg.get("pretrained_detector", {}))
    return o


def weights_note(variants: List[str], cfg: Dict) -> str:
    """The table note's sentence on the weights each row started from (named from the registry)."""
    from ..weights import resolve, weight_info

    keys = {}
    for v in variants:
        o = variant_options(v, cfg)
        keys[v] = resolve("fasterrcnn", o["init_weights"], {"backbone": o["model"]})[0].key if o["init_weights"] else None
    scratch = [v for v, k in keys.items() if not k]
    parts = []
    for key in sorted({k for k in keys.values() if k}):
        w = weight_info(key)
        rows = ", ".join(v for v, k in keys.items() if k == key)
        parts.append(f"The rows {rows} start from the backbone weights `{w['key']}` ({w['description']}; "
                     f"{w['source']}, see docs/weights.md), model options {w['options']}, fine-tuned with "
                     f"{ {**cfg.get('pretrained_detector', {}), **cfg.get('pretrained_overrides', {})} }; the detector's FPN, RPN, box head and the attention "
                     "modules start from their initialisation.")
    if scratch:
        parts.append(f"The rows {', '.join(scratch)} train from scratch: no ImageNet weights for their backbones "
                     "are reachable offline.")
    return " ".join(parts) + "\n\n" if parts else ""


def reproduce(out: str, preset: str = "quick", seed: int = 0, variants: Optional[List[str]] = None,
              data: Optional[str] = None, progress: bool = True, overrides: Optional[Dict] = None) -> Dict:
    """Runs the reproduction; returns {"rows": [...], "markdown": str, "seconds"}. Writes OUT/table.json,
    OUT/table.md and one run folder per variant (OUT/<variant>: model card, checkpoints, metrics,
    detections.png, training_curves.png). `overrides` replaces preset entries (e.g. a tiny configuration
    for tests)."""
    from .. import tasks
    from ..synth import generate_ct_dataset
    from .table import metric, row, write_table

    if preset not in PRESETS:
        raise ValueError(f"reproduce dsnet: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    cfg = dict(PRESETS[preset])
    cfg.update(overrides or {})
    variants = variants or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"reproduce dsnet: unknown variant(s) {unknown}; valid: {list(VARIANTS)}")
    t_start = time.time()
    data = data or os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "annotations.json")):
        print(f"generating the built-in lumbar CT ({cfg['n_patients']} patients x {cfg['slices_per_patient']} slices) "
              f"in {data}", flush=True)
        generate_ct_dataset(data, cfg["n_patients"], cfg["slices_per_patient"], seed=seed, progress=progress)
    results, info, runs = {}, {}, {}
    for i, name in enumerate(variants, 1):
        t0 = time.time()
        options = variant_options(name, cfg)
        print(f"[{i}/{len(variants)}] {name}: training {options['epochs']} epochs"
              + (f" from {options['init_weights']}" if options["init_weights"] else " from scratch"), flush=True)
        runs[name] = run = name.replace("+", "_")
        card = tasks.train("detection", data, os.path.join(out, run), options, seed=seed,
                           test_fraction=0.2, resume=True, progress=progress,
                           command=f"osteonet reproduce dsnet --preset {preset} --seed {seed} --variants {name}")
        with open(os.path.join(out, run, "metrics.json")) as f:
            results[name] = json.load(f)
        info = card["training_data"]
        print(f"[{i}/{len(variants)}] {name}: map {results[name]['map']:.1f} recall {results[name]['recall']:.1f} "
              f"acc {results[name]['acc']:.1f} ({time.time() - t0:.0f} s)", flush=True)
    md, rows = tables(results)
    n_train = info["train"]["samples"] if info else 0
    header = (f"# DSNet reproduction ({preset} preset, built-in synthetic lumbar CT, seed {seed})\n\n"
              "Ours beside (the paper's). Map = VOC AP at IoU 0.5 averaged over classes; Recall and Acc count "
              "detections with score >= 0.5 at IoU >= 0.5 (Acc = TP/(TP+FP), see docs/metrics.md); the paper's "
              "'Fps' reads as seconds per image.\n\n"
              + weights_note(variants, cfg)
              + (f"The quick preset trains on {n_train} images ({cfg['epochs']} epochs from scratch, "
                 f"{cfg.get('pretrained_overrides', {}).get('epochs', cfg['epochs'])} fine-tuning): it shows the "
                 "pipeline end to end in minutes, and its numbers are not the methods' ranking. A Recall and Acc "
                 "of 0.0 mean that no detection reached score 0.5 yet; Map ranks every detection and can be above "
                 "0. The paper preset uses the paper's data size and schedule (for a GPU).\n\n"
                 if preset == "quick" else "")
              + "Pictures per variant: `<variant>/detections.png` (ground truth and the three highest-scoring "
                "detections on the first test images) and `<variant>/training_curves.png`.\n\n")
    table_rows = []
    for r in rows:
        ours = results.get(r["variant"], {})
        cells = {k: metric(ours.get(k), ours.get(f"{k}_ci"), paper=r["paper"].get(k), unit="%")
                 for k in ("map", "recall", "acc")}
        cells["seconds_per_image"] = metric(ours.get("seconds_per_image"), paper=r["paper"]["seconds_per_image"],
                                            unit="s (the paper's 'Fps')")
        cells["fps"] = metric(ours.get("fps"), unit="images/s")
        cells["map_paper_eq3"] = metric(ours.get("map_paper_eq3"), unit="% (DSNet's eq. 3)")
        details = {k: ours[k] for k in ("tp", "fp", "fn", "n_targets", "n_predictions") if k in ours}
        table_rows.append(row("000", r["method"], cells, table=r["table"], n=ours.get("n"), variant=r["variant"],
                              run=runs.get(r["variant"]), **details))
    wall = time.time() - t_start
    write_table(out, "dsnet", "000", "DSNet: attention modules and backbones in Faster R-CNN (Tables 1 and 2)", preset, seed,
                {**info, "folder": os.path.relpath(data, out)} if info else {"folder": os.path.relpath(data, out)},
                cfg, table_rows, header + md,
                files={"runs": runs, "pictures": {v: [f"{r}/detections.png", f"{r}/training_curves.png"] for v, r in runs.items()}},
                timing={"seconds": wall})
    return {"rows": table_rows, "markdown": header + md, "seconds": wall}
