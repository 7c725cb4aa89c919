"""Image classification on a folder with a manifest.csv (the format of ../shared/data and of the
built-in generators): data set, patient-level split, training and evaluation with every metric and
its confidence interval. Used by `osteonet train/evaluate/predict --task classification`."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as om
from .io import read_image, read_manifest, write_json


def load_image(path: str, size: int) -> torch.Tensor:
    """A grey image as 1 x size x size float in [0, 1] (8-bit scaled, 16-bit scaled by its max)."""
    arr = read_image(path)
    scale = 255.0 if arr.max() <= 255 else float(arr.max())
    x = torch.from_numpy(arr / scale).float()[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]


class ManifestImages(torch.utils.data.Dataset):
    """(image 1 x S x S normalised, class index) for the rows `indices` of a manifest folder."""

    def __init__(self, folder: str, rows: List[Dict[str, str]], indices: Sequence[int], classes: List[str], size: int,
                 augment: bool = False) -> None:
        self.folder, self.rows, self.indices = folder, rows, list(indices)
        self.classes, self.size, self.augment = classes, size, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        r = self.rows[self.indices[i]]
        x = load_image(os.path.join(self.folder, r["path"]), self.size)
        if self.augment:  # flips and small shifts; rotation ±10° (the papers' light augmentation)
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            angle = float(torch.empty(()).uniform_(-10, 10)) * np.pi / 180
            tx, ty = (float(v) for v in torch.empty(2).uniform_(-0.06, 0.06))
            theta = torch.tensor([[np.cos(angle), -np.sin(angle), tx], [np.sin(angle), np.cos(angle), ty]], dtype=torch.float32)
            grid = F.affine_grid(theta[None], [1, 1, self.size, self.size], align_corners=False)
            x = F.grid_sample(x[None], grid, align_corners=False, padding_mode="border")[0]
        return (x - 0.5) / 0.25, self.classes.index(r["label"])


def class_list(rows: List[Dict[str, str]]) -> List[str]:
    """Classes in clinical order when they are WHO classes, else sorted."""
    found = sorted({r["label"] for r in rows})
    order = ["normal", "osteopenia", "osteoporosis"]
    if set(found) <= set(order):
        return [c for c in order if c in found]
    return found


def predict_loader(model: torch.nn.Module, loader) -> Dict[str, np.ndarray]:
    model.eval()
    ys, probs = [], []
    with torch.no_grad():
        for x, y in loader:
            probs.append(torch.softmax(model(x), 1))
            ys.append(y)
    p = torch.cat(probs).numpy()
    return {"y_true": torch.cat(ys).numpy(), "probs": p, "y_pred": p.argmax(1)}


def report(pred: Dict[str, np.ndarray], classes: List[str], seed: int = 0) -> Dict[str, Any]:
    """accuracy, f1_macro, per-class precision/recall/specificity with 95 % CIs, confusion matrix, AUCs."""
    k = len(classes)
    t, p = pred["y_true"], pred["y_pred"]
    scores = pred["probs"][:, 1] if k == 2 else pred["probs"]
    rep = om.classification_report(t, p, y_score=scores, num_classes=k, seed=seed)
    out: Dict[str, Any] = {"n": int(len(t)), "classes": classes,
                           "confusion_matrix": np.asarray(rep["confusion_matrix"]).tolist(),
                           "accuracy": float(np.mean(t == p)),
                           "accuracy_ci": [float(v) for v in rep["accuracy"]["ci"]],
                           "f1_macro": float(om.f1_score(t, p, average="macro", num_classes=k)),
                           "balanced_accuracy": float(om.balanced_accuracy(t, p))}
    prec = om.precision(t, p, average=None, num_classes=k)
    rec = om.recall(t, p, average=None, num_classes=k)
    spec = om.specificity(t, p, average=None, num_classes=k)
    cm = np.asarray(rep["confusion_matrix"])
    per = {}
    for i, c in enumerate(classes):
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]
        tn = cm.sum() - tp - fp - fn
        per[c] = {"precision": float(prec[i]), "precision_ci": [float(v) for v in om.proportion_ci(int(tp), int(tp + fp))] if tp + fp else None,
                  "recall": float(rec[i]), "recall_ci": [float(v) for v in om.proportion_ci(int(tp), int(tp + fn))] if tp + fn else None,
                  "specificity": float(spec[i]), "specificity_ci": [float(v) for v in om.proportion_ci(int(tn), int(tn + fp))] if tn + fp else None}
    out["per_class"] = per
    try:
        if k == 2:
            out["auc"] = float(om.roc_auc(t, scores))
        else:
            out["auc_macro_ovr"] = float(om.roc_auc(t, scores, average="macro", multi_class="ovr"))
    except ValueError as e:  # a class absent from the test split
        out["auc_note"] = str(e)
    return out


def roc_curves(pred: Dict[str, np.ndarray], classes: List[str]) -> Dict[str, Dict[str, Any]]:
    curves = {}
    for i, c in enumerate(classes if len(classes) > 2 else classes[1:]):
        idx = classes.index(c)
        y = (pred["y_true"] == idx).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = om.roc_curve(y, pred["probs"][:, idx])
        curves[c] = {"fpr": np.asarray(fpr).tolist(), "tpr": np.asarray(tpr).tolist(), "auc": float(om.roc_auc(y, pred["probs"][:, idx]))}
    return curves


def save_model_card(run: str, config: Dict[str, Any]) -> None:
    write_json(os.path.join(run, "model.json"), config)


def load_model_card(checkpoint: str) -> Dict[str, Any]:
    card = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "model.json")
    if not os.path.exists(card):
        raise ValueError(f"{checkpoint}: no model.json beside it (train with `osteonet train`, which writes one)")
    with open(card) as f:
        return json.load(f)
