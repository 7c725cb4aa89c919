"""Task ``detection`` (seed 000, DSNet): a Faster R-CNN (DSNet: ResNet-50 with the dual-selective module,
or any backbone and attention) finds the vertebral body on axial CT slices and classifies it into WHO
classes (normal, osteopenia, osteoporosis: the categories of the annotations).

Layout: ``annotations.json`` (COCO) in the folder: ``images`` (``id``, ``file_name`` relative to the
folder: PNG/JPEG or DICOM (HU through the rescale tags, bone window 400/1800), ``width``, ``height``,
optional ``patient_id``: the split keeps each patient whole), ``annotations`` (``image_id``,
``category_id``, ``bbox`` [x, y, width, height] in pixels), ``categories`` (``id``, ``name``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .. import metrics as om
from .base import INIT_WEIGHTS, Option, Samples, Task, init_weights_options, load_init_weights
from .inputs import input_name


def _coco(folder: str) -> Dict[str, Any]:
    path = os.path.join(folder, "annotations.json")
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: data folder not found")
    if not os.path.exists(path):
        raise ValueError(f"{path}: not found (the detection layout is a COCO annotations.json in the data folder)")
    from ..data import CocoDetection

    CocoDetection(folder, path)  # validates the JSON: keys, ids, categories, boxes inside their images
    with open(path) as f:
        return json.load(f)


def detections(model: torch.nn.Module, image: torch.Tensor) -> Dict[str, torch.Tensor]:
    """One image's detections (boxes, scores, labels) in eval mode: the one inference path of evaluate and predict."""
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    return {k: out[k] for k in ("boxes", "scores", "labels")}


def as_records(det: Dict[str, torch.Tensor], classes: List[str]) -> List[Dict[str, Any]]:
    order = torch.sort(det["scores"], descending=True, stable=True).indices
    return [{"box": [round(float(v), 3) for v in det["boxes"][i]], "class": classes[int(det["labels"][i]) - 1],
             "score": float(det["scores"][i])} for i in order.tolist()]


class DetectionTask(Task):
    name = "detection"
    title = "Faster R-CNN with DSNet's dual-selective attention: vertebral bodies with WHO classes (seed 000)"
    layout = ("annotations.json (COCO): images (id, file_name: PNG/JPEG/DICOM, width, height, optional patient_id), "
              "annotations (image_id, category_id, bbox [x, y, w, h]), categories (the WHO classes)")
    inputs = "an axial CT slice (PNG/JPEG, or DICOM through the bone window)"
    options = {
        "model": Option("dsnet_resnet50", "str", "the detector's backbone (dsnet_resnet50 is DSNet; resnet50, vgg16, "
                                                 "mobilenet_v3_large, ...)"),
        "attention": Option(None, "str", "attention in the backbone: se, sk, ds, eca", nullable=True),
        "attention_placement": Option(None, "choice", "where attention goes in a ResNet (dsnet: after the stem and the "
                                                      "last stage)", choices=("blocks", "dsnet"), nullable=True),
        "image_size": Option(512, "int", "the detector's min_size (shorter side)", minimum=32),
        "max_size": Option(None, "int", "the detector's max_size (default: image_size)", nullable=True, minimum=32),
        "epochs": Option(20, "int", "training epochs", minimum=1),
        "batch_size": Option(4, "int", "batch size (DSNet: 9)", minimum=1),
        "lr": Option(0.01, "float", "SGD learning rate (DSNet: 0.01; cosine schedule)", minimum=0.0),
        "clip_grad_norm": Option(10.0, "float", "gradient clipping (global L2 norm; 0 off)", minimum=0.0),
        "augment": Option(True, "bool", "horizontal flips and brightness/contrast jitter while training"),
        "score_threshold": Option(0.5, "float", "detections counted by recall / accuracy and drawn", minimum=0.0),
        "detector": Option({}, "dict", "more detector keywords (rpn_*/box_* as torchvision's FasterRCNN)"),
        "init_weights": INIT_WEIGHTS,
    }

    def check_options(self, o, where_):
        bad = sorted(set(o["detector"]) & {"min_size", "max_size", "attention_placement", "num_classes", "backbone"})
        if bad:
            raise ValueError(f"{where_}: option detector must not set {bad} (they are options of their own), "
                             f"got detector={o['detector']}")

    def read(self, folder: str) -> Samples:
        coco = _coco(folder)
        images = coco["images"]
        label_of = {a["image_id"]: a["category_id"] for a in coco["annotations"]}
        has_pid = bool(images) and all(str(im.get("patient_id") or "").strip() for im in images)
        ids = [str(im["file_name"]) for im in images]
        groups = [str(im["patient_id"]) for im in images] if has_pid else list(ids)
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        return Samples(folder, ids, groups, [label_of.get(im["id"], 0) for im in images], images,
                       "patient_id" if has_pid else None,
                       {"classes": [str(c.get("name", c["id"])) for c in cats], "image_ids": [int(im["id"]) for im in images]})

    def check_data(self, folder: str) -> Dict[str, Any]:
        from ..data import CocoDetection

        s = self.read(folder)
        ds = CocoDetection(folder, os.path.join(folder, "annotations.json"))
        for i in range(len(ds)):  # every image readable and of the size the JSON gives
            ds[i]
        return {**s.counts(), "classes": s.info["classes"], "boxes": sum(len(ds.target(i)["boxes"]) for i in range(len(ds)))}

    def _dataset(self, samples: Samples, indices: List[int], transforms=None, skip_empty: bool = False):
        from ..data import CocoDetection

        ds = CocoDetection(samples.folder, os.path.join(samples.folder, "annotations.json"), transforms, skip_empty=skip_empty)
        keep = {samples.info["image_ids"][i] for i in indices}
        ds.ids = [i for i in ds.ids if i in keep]
        return ds

    @staticmethod
    def _build(arch: Dict[str, Any]):
        from ..detection import create_detector

        return create_detector("fasterrcnn", backbone=arch["backbone"], attention=arch["attention"],
                               num_classes=arch["num_classes"], **arch["options"])

    def fit(self, samples, train, o, run_dir, seed, resume, progress):
        from .. import figures
        from .. import train as ot
        from ..data import collate
        from ..data import transforms as T

        tf = T.Compose([T.RandomHorizontalFlip(0.5), T.ColorJitter(0.1, 0.1)]) if o["augment"] else None
        ds = self._dataset(samples, train, tf, skip_empty=True)
        if len(ds) == 0:
            raise ValueError(f"train --task detection: no training image of {samples.folder} has a box")
        opts = dict(min_size=o["image_size"], max_size=o["max_size"] or o["image_size"], **o["detector"])
        if o["attention_placement"]:
            opts["attention_placement"] = o["attention_placement"]
        opts.update(init_weights_options(o["init_weights"], "fasterrcnn", {"backbone": o["model"]}))
        arch = {"backbone": o["model"], "attention": o["attention"], "num_classes": ds.num_classes, "options": opts}
        ot.seed_everything(seed)
        model = self._build(arch)
        init = load_init_weights(model, o["init_weights"], f"train --task {self.name}") if o["init_weights"] else None
        loader = torch.utils.data.DataLoader(ds, batch_size=o["batch_size"], shuffle=True, collate_fn=collate,
                                             drop_last=len(ds) > o["batch_size"])
        opt = ot.create_optimizer("sgd", model, lr=o["lr"], momentum=0.9, weight_decay=1e-4)
        trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, o["epochs"])), epochs=o["epochs"],
                             clip_grad_norm=o["clip_grad_norm"], out_dir=self.stage_dir(run_dir, "detector"), seed=seed,
                             progress=progress)
        history = trainer.fit(loader, ot.detection_step, resume=resume)
        if ot.distributed.is_main_process():
            figures.training_curves_png(os.path.join(run_dir, "training_curves.png"), history)
        bundle = {"model": model.eval(), "classes": samples.info["classes"], "score_threshold": o["score_threshold"]}
        part = {"init_weights": init, "architecture": {"detector": arch}, "classes": samples.info["classes"],
                "preprocessing": {"image": "grey replicated to 3 channels in [0, 1]; DICOM: HU, bone window 400/1800",
                                  "min_size": opts["min_size"], "max_size": opts["max_size"]},
                "score_threshold": o["score_threshold"], "checkpoints": {"detector": "detector/last.pt"}}
        return bundle, part

    def load(self, card, run_dir):
        from ..train import load_checkpoint

        model = self._build(card["architecture"]["detector"])
        load_checkpoint(os.path.join(run_dir, card["checkpoints"]["detector"]), model, restore_rng=False)
        return {"model": model.eval(), "classes": card["classes"], "score_threshold": card["score_threshold"]}

    def evaluate(self, bundle, samples, indices, out, seed=0, baseline=None):
        from .. import figures

        classes = bundle["classes"]
        if samples.info["classes"] != classes:
            raise ValueError(f"{samples.folder}/annotations.json: its categories {samples.info['classes']} differ from "
                             f"the model's {classes}")
        ds = self._dataset(samples, indices)
        name_of = dict(zip(samples.info["image_ids"], samples.ids))
        preds, targets, seconds, records = [], [], 0.0, []
        for i in range(len(ds)):
            img, t = ds[i]
            t0 = time.perf_counter()
            det = detections(bundle["model"], img)
            seconds += time.perf_counter() - t0
            preds.append(det)
            targets.append({"boxes": t["boxes"], "labels": t["labels"]})
            records.append({"id": name_of[ds.ids[i]], "detections": as_records(det, classes),
                            "truth": [{"box": [float(v) for v in b], "class": classes[int(l) - 1]}
                                      for b, l in zip(t["boxes"], t["labels"])]})
        thr = bundle["score_threshold"]
        kept = [{k: v[p["scores"] >= thr] for k, v in p.items()} for p in preds]
        c = om.detection_counts(kept, targets, iou_threshold=0.5)
        ncls = max(1, len({int(l) for t in targets for l in t["labels"]}))
        n = max(1, len(ds))
        m: Dict[str, Any] = {
            "map": 100 * om.detection_map(preds, targets, method="voc")["map"],
            "recall": 100 * om.detection_recall(kept, targets, 0.5),
            "acc": 100 * om.detection_accuracy(kept, targets, 0.5),
            "map_paper_eq3": 100 * om.dsnet_paper_map(c["tp"], c["fp"], ncls) if c["tp"] + c["fp"] else float("nan"),
            "seconds_per_image": seconds / n,
            "fps": n / seconds if seconds > 0 else float("nan"),
            **{k: int(v) for k, v in c.items()},
        }
        m["recall_ci"] = [100 * v for v in om.proportion_ci(c["tp"], c["n_targets"])] if c["n_targets"] else None
        m["acc_ci"] = [100 * v for v in om.proportion_ci(c["tp"], c["n_predictions"])] if c["n_predictions"] else None
        if len(ds) >= 2:
            def map_of(idx):
                idx = np.asarray(idx, dtype=int)
                return 100 * om.detection_map([preds[i] for i in idx], [targets[i] for i in idx], method="voc")["map"]

            b = om.bootstrap_ci(map_of, np.arange(len(ds)), n_resamples=300, seed=seed)
            m["map_ci"] = [b["ci_low"], b["ci_high"]]
        m["definitions"] = ("map: VOC AP at IoU 0.5 averaged over classes (bootstrap 95 % CI over images); recall and acc "
                            f"count detections with score >= {thr:g} at IoU >= 0.5 (acc = TP/(TP+FP)), Wilson 95 % CIs; "
                            "map_paper_eq3 is DSNet's own formula, labelled as such")
        m["classes"] = classes
        if len(ds):
            k = min(3, len(ds))
            figures.detections_png(os.path.join(out, "detections.png"), [ds[i][0].mean(0).numpy() for i in range(k)],
                                   targets[:k], preds[:k], classes, score_threshold=0.0, max_per_image=3)
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in m.items()}, records

    def headline(self, m):
        ci = m.get("map_ci") or [float("nan")] * 2
        return (f"VOC mAP@0.5 {m['map']:.1f} % (95 % CI {ci[0]:.1f}-{ci[1]:.1f}), recall {m['recall']:.1f} %, "
                f"accuracy {m['acc']:.1f} % at score >= threshold")

    def predict(self, bundle, input_path, out, options):
        from .. import figures
        from ..data import read_image

        img = read_image(input_path, 3)
        det = detections(bundle["model"], img)
        name = input_name(input_path)
        thr = bundle["score_threshold"]
        recs = as_records(det, bundle["classes"])
        res: Dict[str, Any] = {"_name": name, "score_threshold": thr, "detections": recs,
                               "above_threshold": [r for r in recs if r["score"] >= thr],
                               "classes": "WHO classes from the T-score: normal >= -1.0, osteopenia between, osteoporosis <= -2.5"}
        res["picture"] = os.path.join(out, f"{name}.png")
        title = f"{name}: detections with score >= {thr:g}" + ("\nSYNTHETIC-DATA MODEL: not a finding" if options.get("_notice") else "")
        figures.detections_png(res["picture"], [img.mean(0).numpy()], [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}],
                               [det], bundle["classes"], score_threshold=thr, titles=[title])
        return res


TASK = DetectionTask()
