"""Task ``classification``: one class per image (seed 001's DXA/X-ray classifiers; the real X-rays of
../shared/data), any registered backbone with any attention.

Layout: ``manifest.csv`` with ``path`` (an image: PNG/JPEG, a DICOM file, or a NIfTI / DICOM series
whose middle slice is used) and ``label`` (any names; normal / osteopenia / osteoporosis are kept in
clinical order), optionally ``patient_id`` (or ``source_id``): the split keeps each id whole.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics as om
from .base import INIT_WEIGHTS, Option, Samples, Task, init_weights_options, load_init_weights
from .inputs import input_name, read_scan, to_unit
from .layout import group_column, groups_of, image_shape, manifest, where

WHO = ["normal", "osteopenia", "osteoporosis"]


def class_list(labels: Sequence[str]) -> List[str]:
    """Classes in clinical order when they are WHO classes, else sorted."""
    found = sorted(set(labels))
    if set(found) <= set(WHO):
        return [c for c in WHO if c in found]
    return found


def load_input(path: str, size: int, window: Tuple[float, float]) -> torch.Tensor:
    """An image (its middle slice for a volume) as 1 x size x size float in [0, 1]: 8-bit / 255, 16-bit by
    its maximum, DICOM and NIfTI through the intensity window."""
    scan = read_scan(path)
    arr = to_unit(scan, *window)
    x = torch.from_numpy(np.ascontiguousarray(arr[arr.shape[0] // 2])).float()[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.25


class ManifestImages(torch.utils.data.Dataset):
    """(normalised 1 x S x S image, class index) for the samples ``indices``; ``augment``: flips, ±10°
    rotation and small shifts (the papers' light augmentation)."""

    def __init__(self, samples: Samples, indices: Sequence[int], classes: List[str], size: int,
                 window: Tuple[float, float], augment: bool = False) -> None:
        self.samples, self.indices, self.classes = samples, list(indices), classes
        self.size, self.window, self.augment = size, window, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        s = self.samples
        j = self.indices[i]
        x = load_input(os.path.join(s.folder, s.ids[j]), self.size, self.window)
        if self.augment:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            angle = float(torch.empty(()).uniform_(-10, 10)) * np.pi / 180
            tx, ty = (float(v) for v in torch.empty(2).uniform_(-0.06, 0.06))
            theta = torch.tensor([[np.cos(angle), -np.sin(angle), tx], [np.sin(angle), np.cos(angle), ty]], dtype=torch.float32)
            grid = F.affine_grid(theta[None], [1, 1, self.size, self.size], align_corners=False)
            x = F.grid_sample(x[None], grid, align_corners=False, padding_mode="border")[0]
        return normalise(x), self.classes.index(s.strata[j])


def predict_loader(model: torch.nn.Module, loader) -> Dict[str, np.ndarray]:
    model.eval()
    ys, probs = [], []
    with torch.no_grad():
        for x, y in loader:
            probs.append(torch.softmax(model(x), 1))
            ys.append(y)
    p = torch.cat(probs).numpy()
    return {"y_true": torch.cat(ys).numpy(), "probs": p, "y_pred": p.argmax(1)}


def _ci(k: int, n: int) -> Optional[List[float]]:
    return [float(v) for v in om.proportion_ci(int(k), int(n))] if n else None


def report(pred: Dict[str, np.ndarray], classes: List[str], seed: int = 0) -> Dict[str, Any]:
    """accuracy, f1_macro, per-class precision/recall/specificity with 95 % CIs, confusion matrix, AUCs."""
    k = len(classes)
    t, p = pred["y_true"], pred["y_pred"]
    scores = pred["probs"][:, 1] if k == 2 else pred["probs"]
    # DeLong's interval needs two samples of each class (one-vs-rest for every class)
    delong_ok = all(2 <= int(np.sum(t == c)) <= len(t) - 2 for c in (range(1, 2) if k == 2 else range(k)))
    rep = om.classification_report(t, p, y_score=scores if delong_ok else None, num_classes=k, seed=seed)
    cm = np.asarray(rep["confusion_matrix"])
    out: Dict[str, Any] = {"n": int(len(t)), "classes": classes, "confusion_matrix": cm.tolist(),
                           "accuracy": float(np.mean(t == p)),
                           "accuracy_ci": [float(v) for v in rep["accuracy"]["ci"]],
                           "f1_macro": float(om.f1_score(t, p, average="macro", num_classes=k)),
                           "balanced_accuracy": float(om.balanced_accuracy(t, p))}
    prec = om.precision(t, p, average=None, num_classes=k)
    rec = om.recall(t, p, average=None, num_classes=k)
    spec = om.specificity(t, p, average=None, num_classes=k)
    per = {}
    for i, c in enumerate(classes):
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]
        tn = cm.sum() - tp - fp - fn
        per[c] = {"precision": float(prec[i]), "precision_ci": _ci(tp, tp + fp), "recall": float(rec[i]),
                  "recall_ci": _ci(tp, tp + fn), "specificity": float(spec[i]), "specificity_ci": _ci(tn, tn + fp)}
    out["per_class"] = per
    try:
        if k == 2:
            out["auc"] = float(om.roc_auc(t, scores))
            if delong_ok:
                out["auc_ci"] = [float(v) for v in rep["auc"]["ci"]]
        else:
            out["auc_macro_ovr"] = float(om.roc_auc(t, scores, average="macro", multi_class="ovr"))
    except ValueError as e:  # a class absent from the evaluated samples
        out["auc_note"] = str(e)
    if not delong_ok and "auc_note" not in out:
        out["auc_note"] = "no DeLong interval: a class has fewer than two samples here"
    return out


def roc_curves(pred: Dict[str, np.ndarray], classes: List[str]) -> Dict[str, Dict[str, Any]]:
    curves = {}
    for c in (classes if len(classes) > 2 else classes[1:]):
        idx = classes.index(c)
        y = (pred["y_true"] == idx).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = om.roc_curve(y, pred["probs"][:, idx])
        curves[c] = {"fpr": np.asarray(fpr).tolist(), "tpr": np.asarray(tpr).tolist(), "auc": float(om.roc_auc(y, pred["probs"][:, idx]))}
    return curves


def majority_baseline(y_true: np.ndarray, classes: List[str], majority: Optional[str]) -> Optional[Dict[str, Any]]:
    """Accuracy (95 % Wilson CI) of always answering the training split's most common class."""
    if majority is None or majority not in classes:
        return None
    k = int(np.sum(y_true == classes.index(majority)))
    return {"method": "always the training split's most common class", "class": majority,
            "accuracy": k / len(y_true), "accuracy_ci": _ci(k, len(y_true))}


class ClassificationTask(Task):
    name = "classification"
    title = "image classification (seed 001; the X-rays of ../shared/data)"
    layout = ("manifest.csv: path (PNG/JPEG, DICOM, or a volume's middle slice), label; optional patient_id or "
              "source_id (kept whole by the split)")
    inputs = "an image (PNG/JPEG), a DICOM file, or a NIfTI / DICOM series (its middle slice)"
    options = {
        "model": Option("resnet18", "str", "registered backbone (osteonet.list_models())"),
        "attention": Option(None, "str", "attention in the backbone: se, eca, sk, ds", nullable=True),
        "image_size": Option(224, "int", "input side in pixels", minimum=16),
        "epochs": Option(10, "int", "training epochs", minimum=1),
        "batch_size": Option(16, "int", "batch size", minimum=2),
        "lr": Option(1e-3, "float", "learning rate (cosine schedule)", minimum=0.0),
        "optimizer": Option("adamw", "choice", "optimiser", choices=("sgd", "adam", "adamw")),
        "weight_decay": Option(1e-4, "float", "weight decay", minimum=0.0),
        "augment": Option(True, "bool", "flips, ±10° rotations, small shifts while training"),
        "val_fraction": Option(0.0, "float", "share of the training groups held out to pick the best epoch "
                                             "(0: the last epoch)", minimum=0.0),
        "window_center": Option(400.0, "float", "HU window centre for DICOM / NIfTI inputs"),
        "window_width": Option(1800.0, "float", "HU window width for DICOM / NIfTI inputs", minimum=1.0),
        "init_weights": INIT_WEIGHTS,
    }

    def check_options(self, o: Dict[str, Any], where_: str) -> None:
        import osteonet

        if o["model"] not in osteonet.list_models():
            from .._errors import nearest

            raise ValueError(f"{where_}: unknown model {o['model']!r}; did you mean "
                             f"{nearest(o['model'], osteonet.list_models())!r}?")
        if o["val_fraction"] >= 1.0:
            raise ValueError(f"{where_}: val_fraction must be in [0, 1), got val_fraction={o['val_fraction']}")

    # -------------------------------------------------------------------------------- data
    def read(self, folder: str) -> Samples:
        rows = manifest(folder, self.name, ("path", "label"), files=("path",))
        col = group_column(rows, folder)
        ids = [r["path"] for r in rows]
        return Samples(folder, ids, groups_of(rows, col, ids), [r["label"] for r in rows], rows, col,
                       {"classes": class_list([r["label"] for r in rows])})

    def check_data(self, folder: str) -> Dict[str, Any]:
        s = self.read(folder)
        if len(s.info["classes"]) < 2:
            raise ValueError(f"{os.path.join(folder, 'manifest.csv')}: field 'label' needs at least 2 classes, got "
                             f"{s.info['classes']}")
        for r in s.rows:
            shape = image_shape(os.path.join(folder, r["path"]))
            if min(shape[-2:]) < 8:
                raise ValueError(f"{where(folder, r)}: field 'path' names a {'x'.join(map(str, shape))} image; "
                                 "expected at least 8 x 8 pixels")
        return s.counts()

    def baseline_facts(self, samples: Samples, train: List[int]) -> Dict[str, Any]:
        labels = [samples.strata[i] for i in train]
        return {"majority_class": max(sorted(set(labels)), key=labels.count)}

    # -------------------------------------------------------------------------------- models
    def _build(self, arch: Dict[str, Any]) -> torch.nn.Module:
        import osteonet

        return osteonet.create_model(arch["name"], num_classes=arch["num_classes"], in_chans=arch["in_chans"],
                                     attention=arch["attention"], **arch["options"])

    def fit(self, samples, train, o, run_dir, seed, resume, progress):
        from .. import train as ot
        from ..split import patient_split

        classes = samples.info["classes"]
        if len(classes) < 2:
            raise ValueError(f"train --task classification: need at least 2 classes, got {classes}")
        window = (o["window_center"], o["window_width"])
        arch = {"name": o["model"], "num_classes": len(classes), "in_chans": 1, "attention": o["attention"],
                "options": {"aux_logits": False} if o["model"] == "inception_v3" else {}}
        arch["options"].update(init_weights_options(o["init_weights"], o["model"], {}))
        val: List[int] = []
        if o["val_fraction"] > 0:
            a, b = patient_split([samples.groups[i] for i in train], [samples.strata[i] for i in train],
                                 test_fraction=o["val_fraction"], seed=seed + 1)
            train, val = [train[i] for i in a], [train[i] for i in b]
        ot.seed_everything(seed)
        model = self._build(arch)
        init = load_init_weights(model, o["init_weights"], f"train --task {self.name}") if o["init_weights"] else None
        train_ds = ManifestImages(samples, train, classes, o["image_size"], window, augment=o["augment"])
        # drop_last: a final batch of one sample breaks BatchNorm on pooled features in training
        loader = torch.utils.data.DataLoader(train_ds, batch_size=o["batch_size"], shuffle=True,
                                             drop_last=len(train_ds) > o["batch_size"])
        eval_fn = None
        if val:
            vl = torch.utils.data.DataLoader(ManifestImages(samples, val, classes, o["image_size"], window),
                                             batch_size=o["batch_size"])
            eval_fn = lambda m, epoch: {"val_accuracy": report(predict_loader(m, vl), classes)["accuracy"]}  # noqa: E731
        opt = ot.create_optimizer(o["optimizer"], model, lr=o["lr"], weight_decay=o["weight_decay"])
        stage = self.stage_dir(run_dir, "classifier")
        trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, o["epochs"])), epochs=o["epochs"],
                             out_dir=stage, seed=seed, monitor="val_accuracy" if val else "train_loss",
                             mode="max" if val else "min", keep_best=bool(val), progress=progress)
        history = trainer.fit(loader, ot.classification_step(), eval_fn, resume=resume)
        from .. import figures

        if ot.distributed.is_main_process():
            figures.training_curves_png(os.path.join(run_dir, "training_curves.png"), history)
        bundle = {"model": model.eval(), "classes": classes, "image_size": o["image_size"], "window": list(window)}
        part = {"init_weights": init, "architecture": {"classifier": arch}, "classes": classes,
                "preprocessing": {"image_size": o["image_size"], "window": list(window), "grey": True,
                                  "normalise": "(x - 0.5) / 0.25 of [0, 1] values"},
                "checkpoints": {"classifier": f"classifier/{'best' if val else 'last'}.pt"},
                "validation": {"samples": len(val)} if val else None}
        return bundle, part

    def load(self, card, run_dir):
        from ..train import load_checkpoint

        model = self._build(card["architecture"]["classifier"])
        load_checkpoint(os.path.join(run_dir, card["checkpoints"]["classifier"]), model, restore_rng=False)
        pre = card["preprocessing"]
        return {"model": model.eval(), "classes": card["classes"], "image_size": pre["image_size"], "window": pre["window"]}

    # -------------------------------------------------------------------------------- evaluation
    def evaluate(self, bundle, samples, indices, out, seed=0, baseline=None):
        from .. import figures

        classes = bundle["classes"]
        unknown = sorted({samples.strata[i] for i in indices} - set(classes))
        if unknown:
            raise ValueError(f"{os.path.join(samples.folder, 'manifest.csv')}: field 'label' holds {unknown}, which "
                             f"are not among the model's classes {classes}")
        ds = ManifestImages(samples, indices, classes, bundle["image_size"], tuple(bundle["window"]))
        # one image at a time, as predict: a convolution's float sums depend on the batch it runs in
        pred = predict_loader(bundle["model"], torch.utils.data.DataLoader(ds, batch_size=1))
        rep = report(pred, classes, seed=seed)
        base = majority_baseline(pred["y_true"], classes, (baseline or {}).get("majority_class"))
        if base:
            rep["baseline"] = base
        os.makedirs(out, exist_ok=True)
        figures.confusion_matrix_png(os.path.join(out, "confusion_matrix.png"), rep["confusion_matrix"], classes)
        figures.roc_png(os.path.join(out, "roc.png"), roc_curves(pred, classes))
        preds = [{"id": samples.ids[j], "label": samples.strata[j], "class": classes[int(pred["y_pred"][k])],
                  "probabilities": dict(zip(classes, (float(v) for v in pred["probs"][k])))}
                 for k, j in enumerate(indices)]
        return rep, preds

    def headline(self, m):
        ci = m.get("accuracy_ci") or [float("nan")] * 2
        line = f"accuracy {m['accuracy']:.3f} (95 % CI {ci[0]:.3f}-{ci[1]:.3f}), F1 macro {m['f1_macro']:.3f}"
        if m.get("baseline"):
            line += f"; majority class ({m['baseline']['class']}) {m['baseline']['accuracy']:.3f}"
        return line

    def predict(self, bundle, input_path, out, options):
        from .. import figures

        classes = bundle["classes"]
        x = load_input(input_path, bundle["image_size"], tuple(bundle["window"]))
        model = bundle["model"].eval()
        with torch.no_grad():
            probs = torch.softmax(model(normalise(x)[None]), 1)[0].tolist()
        best = int(np.argmax(probs))
        name = input_name(input_path)
        lines = [f"{classes[best]} ({probs[best]:.2f})"] + [f"{c}: {p:.2f}" for c, p in zip(classes, probs)]
        if options.get("_notice"):
            lines.append("SYNTHETIC-DATA MODEL: not a finding")
        picture = os.path.join(out, f"{name}.png")
        figures.image_with_text_png(picture, x[0].numpy(), lines)
        return {"_name": name, "class": classes[best], "probabilities": dict(zip(classes, probs)), "picture": picture}


TASK = ClassificationTask()
