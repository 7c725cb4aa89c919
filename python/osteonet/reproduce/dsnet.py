"""DSNet (seed 000) Tables 1 and 2 on the built-in lumbar CT: generate the data, split 4:1 by patient,
train each Faster R-CNN variant, evaluate, and write the tables beside the paper's numbers.

Presets: `quick` (CPU, about 15 minutes on 2 quiet cores: 30 patients x 3 slices, 160-pixel inputs, 3
epochs, lighter RPN/RoI sampling; it shows the pipeline end to end, and its numbers are not
comparable with the paper's) and `paper` (the paper's settings for a GPU: 133 patients x 36 slices,
800-pixel inputs, SGD lr 0.01, batch 9, 100 epochs).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List, Optional

import torch

from .. import metrics as om
from .. import train as ot
from ..io import write_json, write_text

# name: (backbone, attention, attention_placement)
VARIANTS = {
    "resnet50": ("resnet50", None, None),
    "resnet50+se": ("resnet50", "se", "dsnet"),
    "resnet50+sk": ("resnet50", "sk", "dsnet"),
    "resnet50+ds": ("dsnet_resnet50", None, None),  # DSNet: DS after the stem and the last stage (Fig. 3)
    "vgg16": ("vgg16", None, None),
    "vgg16+ds": ("vgg16", "ds", None),
    "mobilenet": ("mobilenet_v3_large", None, None),
    "mobilenet+ds": ("mobilenet_v3_large", "ds", None),
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
                                rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=64)),
    "paper": dict(n_patients=133, slices_per_patient=36, min_size=800, max_size=1333, epochs=100, batch_size=9, lr=0.01,
                  detector={}),
}


def split_by_patient(ann_path: str, seed: int, test_fraction: float = 0.2):
    """train.json / test.json next to annotations.json, patients never straddling (stratified by class)."""
    from ..split import patient_split

    with open(ann_path) as f:
        coco = json.load(f)
    label_of = {a["image_id"]: a["category_id"] for a in coco["annotations"]}
    images = coco["images"]
    train_idx, test_idx = patient_split([im["patient_id"] for im in images], [label_of.get(im["id"], 0) for im in images],
                                        test_fraction=test_fraction, seed=seed)
    folder = os.path.dirname(ann_path)
    for name, idx in (("train.json", train_idx), ("test.json", test_idx)):
        ids = {images[i]["id"] for i in idx}
        part = dict(coco, images=[images[i] for i in idx], annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
        write_json(os.path.join(folder, name), part)
    return len(train_idx), len(test_idx)


def evaluate(model, ds, score_thresh: float, picture: Optional[str] = None, n_pictures: int = 3) -> Dict[str, float]:
    """Metrics on ``ds``; with ``picture``, the first ``n_pictures`` test images with their ground truth
    and detections are drawn there."""
    model.eval()
    preds, targets, seconds = [], [], 0.0
    with torch.no_grad():
        for i in range(len(ds)):
            img, t = ds[i]
            t0 = time.perf_counter()
            out = model([img])[0]
            seconds += time.perf_counter() - t0
            preds.append({k: out[k] for k in ("boxes", "scores", "labels")})
            targets.append({"boxes": t["boxes"], "labels": t["labels"]})
    if picture and len(ds):
        from .. import figures

        k = min(n_pictures, len(ds))
        figures.detections_png(picture, [ds[i][0].mean(0).numpy() for i in range(k)], targets[:k], preds[:k],
                               getattr(ds, "categories", []), score_threshold=0.0, max_per_image=3)
    kept = [{k: v[p["scores"] >= score_thresh] for k, v in p.items()} for p in preds]
    c = om.detection_counts(kept, targets, iou_threshold=0.5)
    ncls = max(1, len({int(l) for t in targets for l in t["labels"]}))
    n = max(1, len(ds))
    return {
        "map": 100 * om.detection_map(preds, targets, method="voc")["map"],
        "recall": 100 * om.detection_recall(kept, targets, 0.5),
        "acc": 100 * om.detection_accuracy(kept, targets, 0.5),
        "map_paper_eq3": 100 * om.dsnet_paper_map(c["tp"], c["fp"], ncls) if c["tp"] + c["fp"] else float("nan"),
        "seconds_per_image": seconds / n,
        "fps": n / seconds if seconds > 0 else float("nan"),
        **{k: int(v) for k, v in c.items()},
    }


def run_variant(name: str, train_ds, test_ds, cfg: Dict, out: str, seed: int, progress: bool) -> Dict[str, float]:
    import osteonet
    from ..data import collate

    backbone, attention, placement = VARIANTS[name]
    opts = dict(min_size=cfg["min_size"], max_size=cfg["max_size"], **cfg["detector"])
    if placement:
        opts["attention_placement"] = placement
    ot.seed_everything(seed)
    model = osteonet.create_model("fasterrcnn", backbone=backbone, attention=attention, num_classes=train_ds.num_classes, **opts)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg["batch_size"], shuffle=True, collate_fn=collate,
                                         drop_last=len(train_ds) > cfg["batch_size"])
    opt = ot.create_optimizer("sgd", model, lr=cfg["lr"], momentum=0.9, weight_decay=1e-4)
    run_dir = os.path.join(out, name.replace("+", "_"))
    trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, cfg["epochs"])), epochs=cfg["epochs"],
                         clip_grad_norm=10.0, out_dir=run_dir, seed=seed, progress=progress)
    trainer.fit(loader, ot.detection_step)
    from .. import figures

    figures.training_curves_png(os.path.join(run_dir, "training_curves.png"), trainer.history)
    return evaluate(model, test_ds, cfg.get("score_thresh", 0.5), picture=os.path.join(run_dir, "detections.png"))


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


def reproduce(out: str, preset: str = "quick", seed: int = 0, variants: Optional[List[str]] = None,
              data: Optional[str] = None, progress: bool = True, overrides: Optional[Dict] = None) -> Dict:
    """Runs the reproduction; returns {"rows": [...], "markdown": str}. Writes DIR/table.json and table.md.
    `overrides` replaces preset entries (e.g. a tiny configuration for tests)."""
    from ..data import CocoDetection
    from ..data import transforms as T
    from ..synth import generate_ct_dataset

    if preset not in PRESETS:
        raise ValueError(f"reproduce dsnet: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    cfg = dict(PRESETS[preset])
    cfg.update(overrides or {})
    variants = variants or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"reproduce dsnet: unknown variant(s) {unknown}; valid: {list(VARIANTS)}")
    data = data or os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "annotations.json")):
        print(f"generating the built-in lumbar CT ({cfg['n_patients']} patients x {cfg['slices_per_patient']} slices) "
              f"in {data}", flush=True)
        generate_ct_dataset(data, cfg["n_patients"], cfg["slices_per_patient"], seed=seed, progress=progress)
    n_train, n_test = split_by_patient(os.path.join(data, "annotations.json"), seed)
    print(f"patient-level split 4:1: {n_train} training and {n_test} test images", flush=True)
    train_tf = T.Compose([T.RandomHorizontalFlip(0.5), T.ColorJitter(0.1, 0.1)])
    train_ds = CocoDetection(data, os.path.join(data, "train.json"), train_tf, skip_empty=True)
    test_ds = CocoDetection(data, os.path.join(data, "test.json"))
    results = {}
    for i, name in enumerate(variants, 1):
        t0 = time.time()
        print(f"[{i}/{len(variants)}] {name}: training {cfg['epochs']} epochs", flush=True)
        results[name] = run_variant(name, train_ds, test_ds, cfg, out, seed, progress)
        print(f"[{i}/{len(variants)}] {name}: map {results[name]['map']:.1f} recall {results[name]['recall']:.1f} "
              f"acc {results[name]['acc']:.1f} ({time.time() - t0:.0f} s)", flush=True)
    md, rows = tables(results)
    header = (f"# DSNet reproduction ({preset} preset, built-in synthetic lumbar CT, seed {seed})\n\n"
              "Ours beside (the paper's). Map = VOC AP at IoU 0.5 averaged over classes; Recall and Acc count "
              "detections with score >= 0.5 at IoU >= 0.5 (Acc = TP/(TP+FP), see docs/metrics.md); the paper's "
              "'Fps' reads as seconds per image.\n\n"
              + (f"The quick preset trains each detector from scratch (no pretrained weights offline) for "
                 f"{cfg['epochs']} epochs on {n_train} images: it shows the pipeline end to end in minutes, and its "
                 "numbers are not the methods' ranking. A Recall and Acc of 0.0 mean that no detection reached "
                 "score 0.5 yet; Map ranks every detection and can be above 0. The paper preset uses the paper's "
                 "data size and schedule (for a GPU).\n\n" if preset == "quick" else "")
              + "Pictures per variant: `<variant>/detections.png` (ground truth and the three highest-scoring "
                "detections on the first test images) and `<variant>/training_curves.png`.\n\n")
    write_text(os.path.join(out, "table.md"), header + md)
    write_json(os.path.join(out, "table.json"), {"preset": preset, "seed": seed, "config": cfg, "rows": rows})
    return {"rows": rows, "markdown": header + md}
