"""Task ``bmd`` (seed 003, opportunistic CT screening): a U-Net segments the vertebral body on axial CT
slices; a DenseNet-121 regresses trabecular BMD (mg/cm³) from the matted body; the ACR class follows
(normal > 120, osteopenia 80-120, osteoporosis < 80 mg/cm³).

Layout: ``manifest.csv`` with ``image`` (one axial slice: PNG windowed as the built-in CT, or DICOM),
``mask`` (the vertebral body; values from ``labels.csv``, one label besides the background), ``bmd``
(trabecular QCT BMD of that vertebra, mg/cm³), ``patient_id``, optional ``level`` (L1..L4).

Prediction takes a CT (NIfTI or DICOM series; or one slice): every slice is segmented, slices whose
bodies overlap and lie within ``max_gap_mm`` of each other form one vertebra, and each vertebra gets the
mean BMD of its slices, its ACR class and its own label in the mask (NIfTI in the input's geometry).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import clinical
from .. import metrics as om
from .base import Option, Samples, Task
from .inputs import input_name, read_scan, to_unit, write_mask_nifti, write_mask_png
from .layout import image_shape, number, where
from .segmentation import (SEGMENTER_OPTIONS, FlipDataset, build_segmenter, check_pairs, group_bootstrap, load_pair,
                           mask_digest, middle, overlap_scores, read_pairs, segment, segment_scan, segmentation_stage, PREDICTED,
                           segmenter_arch, _f)

ACR_NAMES = ["normal", "osteopenia", "osteoporosis"]


def seg_options(defaults: Dict[str, Any]) -> Dict[str, Option]:
    """The segmenter's options as ``seg_*`` (``seg_size`` is its input side), with task defaults."""
    out = {}
    for k, opt in SEGMENTER_OPTIONS.items():
        if k in ("window_center", "window_width"):
            continue
        name = "seg_size" if k == "image_size" else f"seg_{k}"
        out[name] = Option(defaults.get(name, opt.default), opt.kind, opt.help, opt.choices, opt.minimum, opt.nullable)
    return out


def seg_view(o: Dict[str, Any]) -> Dict[str, Any]:
    """The ``seg_*`` options (and the window) under the segmentation task's names."""
    out = {("image_size" if k == "seg_size" else k[4:]): v for k, v in o.items() if k.startswith("seg_")}
    out.update(window_center=o["window_center"], window_width=o["window_width"])
    return out


def crops_input(crops: torch.Tensor) -> torch.Tensor:
    return (crops - 0.25) / 0.25


def mat_regions(unit: torch.Tensor, regions: torch.Tensor, crop_size: int, margin: float,
                fallback: Optional[torch.Tensor] = None, chunk: int = 16):
    """Cut-outs (N x 1 x crop x crop, grey in [0, 1]) of the bool regions (N x H x W) of [0, 1] images
    (N x H x W), see osteonet.bmd.mat_batch; and which regions were empty."""
    from ..bmd import mat_batch

    crops, empty = [], []
    for i in range(0, unit.shape[0], chunk):
        fb = None if fallback is None else fallback[i:i + chunk]
        c, e = mat_batch(unit[i:i + chunk].unsqueeze(1).float(), regions[i:i + chunk], crop_size, margin, fallback=fb)
        crops.append(c)
        empty += e
    return torch.cat(crops), empty


def train_on_crops(build, crops: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float, out_dir: str,
                   seed: int, progress: bool, resume: bool, step):
    """A model that reads matted cut-outs (the BMD regressor, a hip region's classifier): seeded, AdamW,
    cosine schedule, random flips; ``build()`` makes it, ``step`` is its Trainer step."""
    from .. import train as ot

    ot.seed_everything(seed)
    model = build()
    loader = torch.utils.data.DataLoader(FlipDataset(crops_input(crops), y), batch_size=batch_size, shuffle=True,
                                         drop_last=len(y) > batch_size)
    opt = ot.create_optimizer("adamw", model, lr=lr, weight_decay=1e-4)
    trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, epochs)), epochs=epochs, out_dir=out_dir,
                         seed=seed, progress=progress)
    trainer.fit(loader, step, resume=resume)
    return model.eval()


def vertebrae(pred: np.ndarray, spacing_mm: float, max_gap_mm: float) -> List[List[int]]:
    """Slices of a body-mask stack grouped into vertebrae: consecutive slices (at most ``max_gap_mm``
    apart) whose masks overlap belong to one vertebra. Returns the slice indices of each, in order."""
    groups: List[List[int]] = []
    for s in range(pred.shape[0]):
        if not pred[s].any():
            continue
        if groups and (s - groups[-1][-1]) * spacing_mm <= max_gap_mm and (pred[s] & pred[groups[-1][-1]]).any():
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


class BmdTask(Task):
    name = "bmd"
    title = "vertebral-body U-Net + DenseNet-121 BMD regression, ACR classes (seed 003)"
    layout = ("manifest.csv: image (one axial CT slice: PNG or DICOM), mask (vertebral body), bmd (mg/cm³), patient_id, "
              "optional level; labels.csv: value, name (one label besides the background)")
    inputs = "a CT volume (NIfTI or DICOM series) or one axial slice (PNG, DICOM)"
    options = {
        **seg_options({"seg_size": 128, "seg_epochs": 12, "seg_lr": 2e-3, "seg_class_weights": "none"}),
        "crop_size": Option(64, "int", "side of the matted vertebral-body cut-out", minimum=8),
        "margin": Option(0.1, "float", "cut-out margin around the body's box (fraction)", minimum=0.0),
        "regressor": Option("densenet121", "str", "regression backbone (one output)"),
        "reg_epochs": Option(20, "int", "regression epochs", minimum=1),
        "reg_batch_size": Option(16, "int", "regression batch size", minimum=2),
        "reg_lr": Option(1e-3, "float", "regression AdamW learning rate (cosine)", minimum=0.0),
        "window_center": Option(400.0, "float", "HU window centre for DICOM / NIfTI (the built-in PNGs use 400)"),
        "window_width": Option(1800.0, "float", "HU window width for DICOM / NIfTI (the built-in PNGs use 1800)", minimum=1.0),
    }
    predict_options = {
        "max_gap_mm": Option(6.0, "float", "slices further apart belong to different vertebrae", minimum=0.0),
    }

    def check_options(self, o, where_):
        segmenter_arch(seg_view(o), 2)

    def read(self, folder: str) -> Samples:
        s = read_pairs(folder, self.name, extra=("bmd",), default_labels={0: "background", 1: "vertebral_body"})
        if len(s.info["labels"]) != 2:
            raise ValueError(f"{os.path.join(folder, 'labels.csv')}: the bmd layout has one label besides the background "
                             f"(the vertebral body), got {s.info['labels']}")
        values = [number(folder, r, "bmd", 1.0, 400.0, "trabecular BMD in mg/cm³") for r in s.rows]
        s.strata = [int(c) for c in clinical.acr_class(np.asarray(values))]
        s.info["bmd"] = values
        return s

    def check_data(self, folder: str) -> Dict[str, Any]:
        s = self.read(folder)
        for r in s.rows:
            if len(image_shape(os.path.join(folder, r["image"]))) != 2:
                raise ValueError(f"{where(folder, r)}: field 'image' names a volume; the bmd layout takes one axial "
                                 "slice per row (with that vertebra's bmd)")
        check_pairs(s)
        return {**s.counts(), "by_acr_class": {ACR_NAMES[k]: s.strata.count(k) for k in range(3)}}

    def baseline_facts(self, samples, train):
        return {"training_mean_bmd": float(np.mean([samples.info["bmd"][i] for i in train]))}

    # ------------------------------------------------------------------------------------------ models
    def fit(self, samples, train, o, run_dir, seed, resume, progress):
        from .. import bmd as B

        window = (o["window_center"], o["window_width"])
        seg, arch, unit, labels, _, _ = segmentation_stage(samples, train, seg_view(o), self.stage_dir(run_dir, "segmentation"),
                                                         seed, progress, resume, 2, "train --task bmd")
        pred_tr = segment(seg, unit, o["seg_size"])
        # The regressor learns from the segmentation's cut-outs (the reference mask only where it found nothing).
        crops_tr, _ = mat_regions(unit, pred_tr > 0, o["crop_size"], o["margin"], fallback=labels > 0)
        bmd = np.asarray(samples.info["bmd"])
        scaler = B.TargetScaler.fit(bmd[train])
        reg = train_on_crops(lambda: B.create_bmd_regressor(o["regressor"], in_chans=1), crops_tr,
                             torch.from_numpy(scaler.normalize(bmd[train])).float(), o["reg_epochs"], o["reg_batch_size"],
                             o["reg_lr"], self.stage_dir(run_dir, "regression"), seed, progress, resume,
                             B.regression_step("mse"))
        bundle = {"segmenter": seg, "regressor": reg.eval(), "scaler": scaler, "seg_size": o["seg_size"],
                  "crop_size": o["crop_size"], "margin": o["margin"], "window": list(window),
                  "labels": samples.info["labels"]}
        part = {"architecture": {"segmenter": arch, "regressor": {"name": o["regressor"], "in_chans": 1, "outputs": 1}},
                "labels": {str(k): v for k, v in samples.info["labels"].items()},
                "preprocessing": {"seg_size": o["seg_size"], "crop_size": o["crop_size"], "margin": o["margin"],
                                  "window": list(window), "target_scaler": scaler.state_dict(), "units": "mg/cm³"},
                "checkpoints": {"segmenter": "segmentation/last.pt", "regressor": "regression/last.pt"}}
        return bundle, part

    def load(self, card, run_dir):
        from .. import bmd as B
        from ..train import load_checkpoint

        seg = build_segmenter(card["architecture"]["segmenter"])
        load_checkpoint(os.path.join(run_dir, card["checkpoints"]["segmenter"]), seg, restore_rng=False)
        reg = B.create_bmd_regressor(card["architecture"]["regressor"]["name"], in_chans=1)
        load_checkpoint(os.path.join(run_dir, card["checkpoints"]["regressor"]), reg, restore_rng=False)
        pre = card["preprocessing"]
        return {"segmenter": seg.eval(), "regressor": reg.eval(), "scaler": B.TargetScaler(**pre["target_scaler"]),
                "seg_size": pre["seg_size"], "crop_size": pre["crop_size"], "margin": pre["margin"],
                "window": pre["window"], "labels": {int(k): v for k, v in card["labels"].items()}}

    # ------------------------------------------------------------------------------------------ inference
    @staticmethod
    def slice_bmd(bundle, unit: np.ndarray, pred: np.ndarray) -> Tuple[np.ndarray, List[bool]]:
        """BMD (mg/cm³) of each slice's matted body (the whole slice where the mask is empty, flagged)."""
        from .. import bmd as B

        crops, empty = mat_regions(torch.from_numpy(np.ascontiguousarray(unit)), torch.from_numpy(pred > 0),
                                   bundle["crop_size"], bundle["margin"])
        return B.predict_bmd(bundle["regressor"], crops_input(crops), bundle["scaler"]), empty

    def _one(self, bundle, samples, j):
        unit, truth, scan = load_pair(samples, j, tuple(bundle["window"]))
        pred = segment_scan(bundle["segmenter"], unit, bundle["seg_size"])
        values, empty = self.slice_bmd(bundle, unit, pred)
        return unit, truth, pred, float(values[0]), bool(empty[0])

    def evaluate(self, bundle, samples, indices, out, seed=0, baseline=None):
        from .. import bmd as B
        from .. import figures

        os.makedirs(out, exist_ok=True)
        levels = [r.get("level", "") for r in samples.rows]
        true = np.array([samples.info["bmd"][j] for j in indices])
        pred_bmd, dice, preds, shown = [], [], [], {}
        for j in indices:
            unit, truth, pred, value, empty = self._one(bundle, samples, j)
            d = overlap_scores(pred, truth, 2)[0][0]
            pred_bmd.append(value)
            dice.append(d)
            preds.append({"id": samples.ids[j], "level": levels[j], "bmd_reference": samples.info["bmd"][j],
                          "bmd": value, "acr_class": ACR_NAMES[int(clinical.acr_class(value))],
                          "acr_class_reference": ACR_NAMES[samples.strata[j]], "dice": _f(d), "empty_mask": empty,
                          "mask_sha1": mask_digest(pred)})
            if levels[j] not in shown:
                shown[levels[j]] = (middle(unit), middle(truth), middle(pred), f"{levels[j] or samples.ids[j]} Dice {d:.3f}")
        pred_bmd = np.array(pred_bmd)
        dice = np.array(dice)
        groups = [samples.groups[j] for j in indices]
        lev = [levels[j] for j in indices]
        per_level = {lv: _f(np.nanmean(dice[[k for k, l in enumerate(lev) if l == lv]]))
                     for lv in sorted(set(lev)) if lv}
        metrics: Dict[str, Any] = {"dice_per_level": per_level, "dice_mean": _f(np.nanmean(dice)),
                                   "dice_mean_ci": group_bootstrap(dice, groups, seed)}
        if len(true) >= 4:
            agree = B.bmd_agreement(true, pred_bmd)
            metrics.update(pearson=agree["pearson"], bland_altman=agree["bland_altman"], mae=agree["mae"],
                           rmse=agree["rmse"], class_accuracy=agree["class_accuracy"],
                           class_accuracy_ci=agree["class_accuracy_ci"], confusion_matrix=agree["confusion_matrix"])
            up = sorted(set(groups))
            pt_true = np.array([true[[k for k, g in enumerate(groups) if g == q]].mean() for q in up])
            pt_pred = np.array([pred_bmd[[k for k, g in enumerate(groups) if g == q]].mean() for q in up])
            metrics["pearson_patient"] = om.pearson(pt_true, pt_pred) if len(up) >= 4 else None
            figures.bland_altman_png(os.path.join(out, "bland_altman.png"), true, pred_bmd, agree["bland_altman"],
                                     "(mg/cm³)", "Bland–Altman: predicted vs reference BMD")
            figures.scatter_png(os.path.join(out, "bmd_scatter.png"), true, pred_bmd, "BMD (mg/cm³)",
                                f"BMD: r = {agree['pearson']['r']:.3f}")
        else:
            metrics["note"] = f"agreement statistics need at least 4 slices, got {len(true)}"
        metrics["empty_predicted_masks"] = int(sum(p["empty_mask"] for p in preds))
        metrics["n_patients"] = len(set(groups))
        mean = (baseline or {}).get("training_mean_bmd")
        if mean is not None:
            base = np.full(len(true), mean)
            k = int(np.sum(clinical.acr_class(base) == clinical.acr_class(true)))
            metrics["baseline"] = {"method": "every slice gets the training split's mean BMD", "bmd": mean,
                                   "mae": float(np.mean(np.abs(base - true))), "class_accuracy": k / len(true),
                                   "class_accuracy_ci": [float(v) for v in om.proportion_ci(k, len(true))]}
        os.makedirs(out, exist_ok=True)
        imgs, truths, ps, titles = zip(*[shown[k] for k in sorted(shown)])
        figures.mask_overlay_png(os.path.join(out, "masks_over_images.png"), list(imgs), list(truths), list(ps),
                                 list(titles), zoom_margin=0.6)
        return metrics, preds

    def headline(self, m):
        if "pearson" not in m:
            return f"Dice {m['dice_mean']:.3f}"
        p = m["pearson"]
        line = (f"Dice {m['dice_mean']:.3f}, Pearson r {p['r']:.3f} (95 % CI {p['ci_low']:.3f}-{p['ci_high']:.3f}), "
                f"MAE {m['mae']:.1f} mg/cm³, ACR accuracy {m['class_accuracy']:.3f}")
        if m.get("baseline"):
            line += f"; training-mean baseline MAE {m['baseline']['mae']:.1f}, ACR accuracy {m['baseline']['class_accuracy']:.3f}"
        return line

    def predict(self, bundle, input_path, out, options):
        from .. import figures

        scan = read_scan(input_path)
        unit = to_unit(scan, *bundle["window"])
        pred = segment_scan(bundle["segmenter"], unit, bundle["seg_size"])
        from ..segmentation import keep_largest_component

        body = np.stack([keep_largest_component(torch.from_numpy(p > 0)).numpy() for p in pred])
        groups = vertebrae(body, scan.spacing[0] if scan.is_volume else 1.0, options["max_gap_mm"])
        values, _ = self.slice_bmd(bundle, unit, pred) if groups else (np.zeros(0), [])
        labels = np.zeros(pred.shape, dtype=np.uint8)
        found = []
        # numbered from the most superior (the slice axis runs towards superior)
        for k, sl in enumerate(sorted(groups, key=lambda g: -g[0]), 1):
            v = float(np.mean(values[sl]))
            labels[sl] = np.where(body[sl], k, labels[sl])
            found.append({"label": k, "slices": [int(s) for s in sl], "bmd_mg_cm3": v,
                          "acr_class": ACR_NAMES[int(clinical.acr_class(v))]})
        name = input_name(input_path)
        res: Dict[str, Any] = {"_name": name, "vertebrae": found, "units": "mg/cm³",
                               "acr_rule": "normal > 120, osteopenia 80-120, osteoporosis < 80 mg/cm³",
                               "numbering": "label 1 is the most superior vertebral body found; levels are not identified",
                               "mask_sha1": mask_digest(pred)}
        if not found:
            res["note"] = "no vertebral body found"
        res["mask_nifti"] = write_mask_nifti(os.path.join(out, f"{name}_vertebrae.nii.gz"), scan, labels)
        if not scan.is_volume:
            res["mask_png"] = write_mask_png(os.path.join(out, f"{name}_vertebrae.png"), labels[0])
        shown = [v["slices"][len(v["slices"]) // 2] for v in found[:4]] or [len(unit) // 2]
        titles = [f"label {v['label']}: {v['bmd_mg_cm3']:.0f} mg/cm³ {v['acr_class']}" for v in found[:4]] or ["no body found"]
        if options.get("_notice"):
            titles = [t + "\nSYNTHETIC-DATA MODEL: not a finding" for t in titles]
        res["picture"] = os.path.join(out, f"{name}.png")
        figures.mask_overlay_png(res["picture"], [unit[s] for s in shown], [np.zeros_like(labels[s]) for s in shown],
                                 [(labels[s] > 0).astype(np.uint8) for s in shown], titles, zoom_margin=0.6,
                                 heading=PREDICTED)
        return res


TASK = BmdTask()
