"""Task ``hip`` (seed 004): a U-Net or U-Net++ segments the femoral neck, greater trochanter, Ward's
triangle and the rest of the total hip on AP hip radiographs; each region (osteonet.hip.HIP_LABELS) is
matted out and classified into WHO T-score classes by its own DenseNet121.

Layout: ``manifest.csv`` with ``image`` (PNG/JPEG or DICOM radiograph), ``mask`` (label map: 0
background, 1 femoral_neck, 2 greater_trochanter, 3 wards_triangle, 4 total_hip_rest; ``labels.csv``
must name these values), ``t_score`` (DXA T-score of the hip; its WHO class is the target) and/or
``label`` (normal | osteopenia | osteoporosis), ``patient_id``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np
import torch

from .. import clinical
from .. import hip as H
from .. import metrics as om
from .base import Option, Samples, Task
from .bmd import crops_input, mat_regions, seg_options, seg_view, train_on_crops
from .classification import majority_baseline
from .inputs import input_name, read_scan, to_unit, write_mask_nifti, write_mask_png
from .layout import manifest, number, where
from .segmentation import (build_segmenter, check_pairs, group_bootstrap, load_pair, mask_digest, middle, read_pairs,
                           segment, segment_scan, segmentation_stage, segmenter_arch, PREDICTED, _f)

WHO = list(clinical.CLASS_NAMES)
HIP_TABLE = {0: "background", 1: "femoral_neck", 2: "greater_trochanter", 3: "wards_triangle", 4: "total_hip_rest"}


class HipTask(Task):
    name = "hip"
    title = "hip-region segmentation + per-region DenseNet121 WHO T-score classes (seed 004)"
    layout = ("manifest.csv: image, mask (0 background, 1 femoral_neck, 2 greater_trochanter, 3 wards_triangle, "
              "4 total_hip_rest), t_score and/or label (WHO class), patient_id; labels.csv naming those values")
    inputs = "an AP hip radiograph (PNG/JPEG, DICOM)"
    options = {
        **seg_options({"seg_size": 128, "seg_epochs": 15, "seg_batch_size": 4, "seg_lr": 2e-3, "seg_class_weights": "balanced"}),
        "regions": Option(list(H.HIP_REGIONS), "list", "regions classified (one classifier each; empty: segmentation only)",
                          choices=tuple(H.HIP_REGIONS)),
        "crop_size": Option(64, "int", "side of a matted region's cut-out", minimum=8),
        "margin": Option(0.1, "float", "cut-out margin around the region's box (fraction)", minimum=0.0),
        "classifier": Option("densenet121", "str", "the region classifier's backbone"),
        "cls_epochs": Option(10, "int", "classifier epochs", minimum=1),
        "cls_batch_size": Option(16, "int", "classifier batch size", minimum=2),
        "cls_lr": Option(1e-3, "float", "classifier AdamW learning rate (cosine)", minimum=0.0),
        "window_center": Option(400.0, "float", "window centre for DICOM inputs"),
        "window_width": Option(1800.0, "float", "window width for DICOM inputs", minimum=1.0),
    }

    def check_options(self, o, where_):
        segmenter_arch(seg_view(o), H.NUM_HIP_LABELS)

    def read(self, folder: str) -> Samples:
        s = read_pairs(folder, self.name, labels_required=True)
        if s.info["labels"] != HIP_TABLE:
            raise ValueError(f"{os.path.join(folder, 'labels.csv')}: the hip layout's labels are {HIP_TABLE}, got "
                             f"{s.info['labels']}")
        if not any(c in s.rows[0] for c in ("t_score", "label")):
            raise ValueError(f"{os.path.join(folder, 'manifest.csv')}: missing column 't_score' or 'label' (the WHO "
                             "class of each radiograph's hip)")
        classes = []
        for r in s.rows:
            if r.get("label", "").strip():
                if r["label"] not in WHO:
                    raise ValueError(f"{where(folder, r)}: field 'label' must be one of {WHO}, got label={r['label']!r}")
                k = WHO.index(r["label"])
                if r.get("t_score", "").strip() and int(clinical.who_class(number(folder, r, "t_score", -8, 6, "SD"))) != k:
                    raise ValueError(f"{where(folder, r)}: field 'label' ({r['label']}) disagrees with t_score={r['t_score']} "
                                     "(WHO: normal >= -1.0, osteoporosis <= -2.5)")
            else:
                k = int(clinical.who_class(number(folder, r, "t_score", -8, 6, "SD")))
            classes.append(k)
        s.strata = classes
        return s

    def check_data(self, folder: str) -> Dict[str, Any]:
        s = self.read(folder)
        check_pairs(s)
        return {**s.counts(), "by_who_class": {WHO[k]: s.strata.count(k) for k in range(3)}}

    def baseline_facts(self, samples, train):
        labels = [samples.strata[i] for i in train]
        return {"majority_class": WHO[max(sorted(set(labels)), key=labels.count)]}

    # ------------------------------------------------------------------------------------------ models
    def fit(self, samples, train, o, run_dir, seed, resume, progress):
        from .. import train as ot

        window = (o["window_center"], o["window_width"])
        # Ward's triangle covers ~0.2 % of the image: seg_class_weights=balanced weights the cross-entropy by
        # (class frequency)^-1/2.
        seg, arch, unit, labels, _, weights = segmentation_stage(samples, train, seg_view(o),
                                                              self.stage_dir(run_dir, "segmentation"), seed, progress,
                                                              resume, H.NUM_HIP_LABELS, "train --task hip")
        classifiers, ckpts = {}, {"segmenter": "segmentation/last.pt"}
        pred_tr = segment(seg, unit, o["seg_size"]) if o["regions"] else None
        ytr = torch.tensor([samples.strata[i] for i in train]).long()
        for region in o["regions"]:
            crops_tr, _ = mat_regions(unit, H.region_mask(pred_tr, region), o["crop_size"], o["margin"],
                                      fallback=H.region_mask(labels, region))
            classifiers[region] = train_on_crops(
                lambda: H.create_region_classifier(o["classifier"], num_classes=3, in_chans=1), crops_tr, ytr,
                o["cls_epochs"], o["cls_batch_size"], o["cls_lr"], self.stage_dir(run_dir, f"classifier_{region}"), seed,
                progress, resume, ot.classification_step())
            ckpts[f"classifier_{region}"] = f"classifier_{region}/last.pt"
        bundle = {"segmenter": seg, "classifiers": classifiers, "seg_size": o["seg_size"], "crop_size": o["crop_size"],
                  "margin": o["margin"], "window": list(window)}
        part = {"architecture": {"segmenter": arch, "classifier": {"name": o["classifier"], "num_classes": 3, "in_chans": 1},
                                 "regions": list(o["regions"])},
                "labels": {str(k): v for k, v in HIP_TABLE.items()}, "classes": WHO,
                "region_labels": {r: list(H.HIP_LABELS[r]) for r in H.HIP_REGIONS},
                "preprocessing": {"seg_size": o["seg_size"], "crop_size": o["crop_size"], "margin": o["margin"],
                                  "window": list(window)},
                "checkpoints": ckpts, "class_weights": weights}
        return bundle, part

    def load(self, card, run_dir):
        from ..train import load_checkpoint

        arch = card["architecture"]
        seg = build_segmenter(arch["segmenter"])
        load_checkpoint(os.path.join(run_dir, card["checkpoints"]["segmenter"]), seg, restore_rng=False)
        classifiers = {}
        for region in arch["regions"]:
            m = H.create_region_classifier(arch["classifier"]["name"], num_classes=3, in_chans=1)
            load_checkpoint(os.path.join(run_dir, card["checkpoints"][f"classifier_{region}"]), m, restore_rng=False)
            classifiers[region] = m.eval()
        pre = card["preprocessing"]
        return {"segmenter": seg.eval(), "classifiers": classifiers, "seg_size": pre["seg_size"],
                "crop_size": pre["crop_size"], "margin": pre["margin"], "window": pre["window"]}

    # ------------------------------------------------------------------------------------------ inference
    @staticmethod
    def classify_regions(bundle, unit: np.ndarray, pred: np.ndarray) -> Dict[str, Dict[str, Any]]:
        """Each classified region of one radiograph: its WHO class, probabilities, pixels, whether it was empty."""
        out = {}
        u = torch.from_numpy(np.ascontiguousarray(unit))
        for region, model in bundle["classifiers"].items():
            mask = H.region_mask(torch.from_numpy(pred), region)
            crops, empty = mat_regions(u, mask, bundle["crop_size"], bundle["margin"])
            with torch.no_grad():
                probs = torch.softmax(model(crops_input(crops)), 1)[0].tolist()
            k = int(np.argmax(probs))
            out[region] = {"class": WHO[k], "probabilities": dict(zip(WHO, probs)), "pixels": int(mask.sum()),
                           "empty_mask": bool(empty[0])}
        return out

    def evaluate(self, bundle, samples, indices, out, seed=0, baseline=None):
        from .. import figures

        os.makedirs(out, exist_ok=True)
        per_iou = {r: [] for r in H.HIP_REGIONS}
        bg_iou = {r: [] for r in H.HIP_REGIONS}
        y, pred_cls, preds, show = [], {r: [] for r in bundle["classifiers"]}, [], []
        for j in indices:
            unit, truth, _ = load_pair(samples, j, tuple(bundle["window"]))
            pred = segment_scan(bundle["segmenter"], unit, bundle["seg_size"])
            ious = H.region_iou(torch.from_numpy(pred).long(), torch.from_numpy(truth).long())
            bg = H.region_iou(torch.zeros(truth.shape, dtype=torch.long), torch.from_numpy(truth).long())
            for r in H.HIP_REGIONS:
                per_iou[r].append(float(ious[r][0]))
                bg_iou[r].append(float(bg[r][0]))
            regions = self.classify_regions(bundle, unit, pred)
            for r, v in regions.items():
                pred_cls[r].append(WHO.index(v["class"]))
            y.append(samples.strata[j])
            preds.append({"id": samples.ids[j], "who_class_reference": WHO[samples.strata[j]],
                          "iou": {r: _f(v[0]) for r, v in ious.items()}, "regions": regions, "mask_sha1": mask_digest(pred)})
            if len(show) < 4:
                show.append((middle(unit), middle(truth), middle(pred),
                             f"{samples.groups[j]} IoU(total) {ious['total_hip'][0]:.2f}"))
        groups = [samples.groups[j] for j in indices]
        y = np.array(y)
        metrics: Dict[str, Any] = {"iou": {}, "iou_ci": {}, "iou_at_least_0.5": {}}
        for r in H.HIP_REGIONS:
            v = np.array(per_iou[r])
            metrics["iou"][r] = _f(np.nanmean(v))
            metrics["iou_ci"][r] = group_bootstrap(v, groups, seed)
            metrics["iou_at_least_0.5"][r] = float(np.nanmean(v >= 0.5))
        metrics["iou"]["mean"] = float(np.mean([metrics["iou"][r] for r in H.HIP_REGIONS]))
        metrics["baselines"] = {"all_background": {"method": "every pixel background",
                                                   "iou": {r: _f(np.nanmean(bg_iou[r])) for r in H.HIP_REGIONS}}}
        majority = (baseline or {}).get("majority_class")
        metrics["classification"] = {}
        for r, p in pred_cls.items():
            p = np.array(p)
            correct = int((p == y).sum())
            lo, hi = om.proportion_ci(correct, len(y), "wilson")
            cm = om.confusion_matrix(y, p, 3)
            metrics["classification"][r] = {"accuracy": correct / len(y), "accuracy_ci": [lo, hi],
                                            "confusion_matrix": cm.tolist(),
                                            "empty_predicted_masks": int(sum(q["regions"][r]["empty_mask"] for q in preds))}
            figures.confusion_matrix_png(os.path.join(out, f"confusion_{r}.png"), cm, WHO, f"classifier, {r}")
        if majority:
            metrics["baseline"] = majority_baseline(y, WHO, majority)
        os.makedirs(out, exist_ok=True)
        figures.mask_overlay_png(os.path.join(out, "masks.png"), *[list(t) for t in zip(*show)], num_labels=H.NUM_HIP_LABELS)
        return metrics, preds

    def headline(self, m):
        line = "IoU " + " ".join(f"{r} {m['iou'][r]:.3f}" for r in H.HIP_REGIONS if m["iou"][r] is not None)
        for r, c in m["classification"].items():
            line += f"; {r} accuracy {c['accuracy']:.3f}"
        if m.get("baseline"):
            line += f"; majority class {m['baseline']['accuracy']:.3f}"
        return line

    def predict(self, bundle, input_path, out, options):
        from .. import figures

        scan = read_scan(input_path)
        if scan.is_volume:
            raise ValueError(f"{input_path}: the hip task takes a radiograph (2-D), got a volume of shape {scan.array.shape}")
        unit = to_unit(scan, *bundle["window"])
        pred = segment_scan(bundle["segmenter"], unit, bundle["seg_size"])
        name = input_name(input_path)
        regions = self.classify_regions(bundle, unit, pred)
        res: Dict[str, Any] = {"_name": name, "labels": {str(k): v for k, v in HIP_TABLE.items()}, "mask_sha1": mask_digest(pred),
                               "regions": {r: {"pixels": int(H.region_mask(torch.from_numpy(pred), r).sum()), **regions.get(r, {})}
                                           for r in H.HIP_REGIONS},
                               "who_rule": "normal >= -1.0, osteopenia between, osteoporosis <= -2.5 (T-score)"}
        res["mask_nifti"] = write_mask_nifti(os.path.join(out, f"{name}_labels.nii.gz"), scan, pred)
        res["mask_png"] = write_mask_png(os.path.join(out, f"{name}_labels.png"), pred[0])
        res["region_masks"] = {r: write_mask_png(os.path.join(out, f"{name}_{r}.png"),
                                                 H.region_mask(torch.from_numpy(pred[0]), r).numpy().astype(np.uint8) * 255)
                               for r in H.HIP_REGIONS}
        title = ", ".join(f"{r}: {v['class']}" for r, v in regions.items()) or "regions (no classifier trained)"
        if options.get("_notice"):
            title += "\nSYNTHETIC-DATA MODEL: not a finding"
        res["picture"] = os.path.join(out, f"{name}.png")
        figures.mask_overlay_png(res["picture"], [unit[0]], [np.zeros_like(pred[0])], [pred[0]], [title],
                                 num_labels=H.NUM_HIP_LABELS, heading=PREDICTED)
        return res


TASK = HipTask()
