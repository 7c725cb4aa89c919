"""Task ``ovf`` (seed 002): osteoporotic vertebral fracture on CT scans by a ResNet-34 slice encoder and a
slice aggregator (max, mean, vote, LSTM), trained in two stages (osteonet.sequence.train_two_stage:
two osteonet.train.Trainer fits), on sagittal slices through the spine.

Layout: ``manifest.csv`` with ``path`` (a CT: NIfTI file or DICOM series folder, any orientation),
``label`` (fracture | no_fracture, or 1 | 0), ``patient_id`` (kept whole by the split), optionally
``mask`` (a vertebra mask volume of the same scan: its slices pick the sagittal slices).

Which sagittal slices are read (``slices``): ``spine`` (default) finds the spine, the bony column along
the posterior midline, takes the centre ``center_fraction`` of its left-right extent and crops the
sagittal images to ``crop_mm`` around it; ``mask`` does the same from the vertebra mask; ``centre``
takes the centre ``center_fraction`` of all sagittal slices (the paper's rule, for volumes centred on
the spine such as the built-in ones). Training and evaluation use the run's rule; prediction finds the
spine unless told otherwise (a user's scan need not be centred on it). Every prediction reports the
slices and columns it used.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import metrics as om
from .base import Option, Samples, Task
from .inputs import AXIAL_CODES, Scan, input_name, read_mask, read_scan, to_unit
from .layout import group_column, groups_of, image_shape, manifest, volume_kind, where

AGGREGATORS = ("max", "mean", "vote", "lstm")
LABEL_VALUES = {"fracture": 1, "no_fracture": 0, "1": 1, "0": 0}
TRAIN_KEYS = ("image_size", "stage1_optimizer", "stage1_lr", "stage1_batch_size", "stage1_epochs", "stage1_patience",
              "stage2_optimizer", "stage2_lr", "stage2_encoder_fc_lr", "stage2_batch_size", "stage2_epochs",
              "stage2_patience", "stage2_augment", "max_degrees", "max_shift")


# ------------------------------------------------------------------------------------------ slices
def codes_of(scan: Scan) -> Tuple[str, ...]:
    """The axis codes of ``scan.array``."""
    from nibabel import orientations as ornt

    return AXIAL_CODES if scan.kind == "nifti" else tuple(ornt.aff2axcodes(scan.affine))


def sagittal(scan: Scan, array: np.ndarray) -> np.ndarray:
    """``array`` (in ``scan``'s orientation) with axis 0 sagittal (osteonet.sequence.SAGITTAL_AXCODES)."""
    from ..sequence import reorient_to_sagittal

    return reorient_to_sagittal(array, axcodes=codes_of(scan))


def sagittal_spacing(scan: Scan) -> Tuple[float, float, float]:
    """mm per voxel along the sagittal array's axes (left-right, superior-inferior, anterior-posterior)."""
    codes = codes_of(scan)
    pair = {"L": "LR", "R": "LR", "S": "SI", "I": "SI", "A": "AP", "P": "AP"}
    return tuple(scan.spacing[[pair[c] for c in codes].index(axis)] for axis in ("LR", "SI", "AP"))


def find_spine(sag: np.ndarray, window: Tuple[float, float], bone_hu: float = 250.0,
               tissue_hu: float = -300.0) -> Dict[str, Any]:
    """The spine in a sagittal volume (S x H x W in [0, 1] through ``window``; slices left-right, rows
    superior-inferior, columns anterior-posterior): the vertical bony column near the left-right middle
    of the body, in its posterior part. Returns its slice range ``[first, last]``, the column of its
    bone ``column``, and ``score`` (the share of rows that are bone along that column; under 0.2 means
    no spine was found)."""
    lo = window[0] - window[1] / 2
    bone = sag > (bone_hu - lo) / window[1]
    tissue = sag > (tissue_hu - lo) / window[1]
    per_slice = tissue.mean(axis=(1, 2))
    body = np.nonzero(per_slice > 0.1 * per_slice.max())[0] if per_slice.max() > 0 else np.arange(sag.shape[0])
    l0, l1 = int(body.min()), int(body.max())
    cols = np.nonzero(tissue.any(axis=(0, 1)))[0]
    a0, a1 = (int(cols.min()), int(cols.max())) if cols.size else (0, sag.shape[2] - 1)
    c_lo = a0 + int(0.45 * (a1 - a0))  # the posterior part of the body: the spine lies there
    profile = bone[:, :, c_lo:a1 + 1].mean(axis=1)  # S x columns: share of rows that are bone
    score = profile.max(axis=1)
    score = np.convolve(score, np.ones(3) / 3, mode="same")
    mid, half = (l0 + l1) / 2, max(1, (l1 - l0) // 4)
    search = np.arange(max(l0, int(mid - half)), min(l1, int(mid + half)) + 1)
    best = int(search[np.argmax(score[search])])
    first = last = best
    while first > l0 and score[first - 1] >= 0.5 * score[best]:
        first -= 1
    while last < l1 and score[last + 1] >= 0.5 * score[best]:
        last += 1
    return {"first": first, "last": last, "column": int(c_lo + np.argmax(profile[best])), "score": float(score[best])}


def select_slices(sag: np.ndarray, mode: str, fraction: float, min_slices: int, window: Tuple[float, float],
                  spacing_ap_mm: float = 1.0, crop_mm: float = 120.0, mask_sag: Optional[np.ndarray] = None,
                  where_: str = "") -> Tuple[np.ndarray, Dict[str, Any]]:
    """The sagittal slices a scan is judged on (T x H x W) and what was chosen (see the module docstring)."""
    from ..sequence import center_slice_range

    info: Dict[str, Any] = {"mode": mode}
    cols = (0, sag.shape[2])
    if mode == "centre":
        first, last = 0, sag.shape[0] - 1
    elif mode == "mask":
        if mask_sag is None:
            raise ValueError(f"{where_}: slices=mask needs a vertebra mask (manifest column 'mask', or --set mask=PATH)")
        present = np.nonzero(mask_sag.reshape(mask_sag.shape[0], -1).any(1))[0]
        if present.size == 0:
            raise ValueError(f"{where_}: the vertebra mask is empty")
        first, last = int(present.min()), int(present.max())
        ap = np.nonzero(mask_sag.any(axis=(0, 1)))[0]
        centre_col = int((ap.min() + ap.max()) // 2)
        info["column"] = centre_col
    elif mode == "spine":
        found = find_spine(sag, window)
        info.update(spine_score=round(found["score"], 3))
        if found["score"] < 0.2:
            raise ValueError(f"{where_}: no spine found (at most {found['score']:.2f} of the rows are bone along the "
                             "posterior midline); pass --set slices=centre or a vertebra mask (slices=mask)")
        first, last, centre_col = found["first"], found["last"], found["column"]
        info["column"] = centre_col
    else:
        raise ValueError(f"{where_}: slices must be spine, mask or centre, got slices={mode!r}")
    start, count = center_slice_range(last - first + 1, fraction, min_slices)
    start += first
    if mode != "centre" and crop_mm > 0:
        half = int(round(crop_mm / max(spacing_ap_mm, 1e-6) / 2))
        if 2 * half < sag.shape[2]:
            c0 = min(max(0, info["column"] - half), sag.shape[2] - 2 * half)
            cols = (c0, c0 + 2 * half)
    info.update(range=[first, last], slice_indices=list(range(start, start + count)), columns=list(cols))
    return np.ascontiguousarray(sag[start:start + count, :, cols[0]:cols[1]]), info


# ------------------------------------------------------------------------------------------ the task
class OvfTask(Task):
    name = "ovf"
    title = "CNN/LSTM vertebral fracture on CT scans, two-stage training (seed 002)"
    layout = ("manifest.csv: path (NIfTI or DICOM series folder), label (fracture | no_fracture | 1 | 0), patient_id; "
              "optional mask (a vertebra mask of the scan, for slices=mask)")
    inputs = "a CT volume: NIfTI file or DICOM series folder, any orientation"
    options = {
        "aggregators": Option(list(AGGREGATORS), "list", "aggregators trained in stage 2", choices=AGGREGATORS),
        "image_size": Option(224, "int", "slice side the encoder reads (paper: 512 -> 224)", minimum=16),
        "slices": Option("spine", "choice", "which sagittal slices: spine, mask or centre", choices=("spine", "mask", "centre")),
        "center_fraction": Option(0.05, "float", "share of the spine's (or volume's) left-right extent read, "
                                                 "centred (paper: 5 %)", minimum=0.0),
        "min_slices": Option(1, "int", "at least this many slices", minimum=1),
        "crop_mm": Option(120.0, "float", "slices=spine/mask: anterior-posterior band kept around the spine (0: none)",
                          minimum=0.0),
        "window_center": Option(400.0, "float", "HU window centre"),
        "window_width": Option(1800.0, "float", "HU window width", minimum=1.0),
        "val_fraction": Option(0.15, "float", "share of the training patients validating both stages", minimum=0.0),
        "stage1_optimizer": Option("adam", "choice", "stage 1 optimiser", choices=("adam", "sgd")),
        "stage1_lr": Option(0.01, "float", "stage 1 learning rate (halved on plateau)", minimum=0.0),
        "stage1_batch_size": Option(192, "int", "stage 1 slices per batch", minimum=2),
        "stage1_epochs": Option(400, "int", "stage 1 epochs", minimum=1),
        "stage1_patience": Option(10, "int", "stage 1 plateau patience", minimum=0),
        "stage2_optimizer": Option("sgd", "choice", "stage 2 optimiser", choices=("adam", "sgd")),
        "stage2_lr": Option(0.1, "float", "stage 2 LSTM learning rate", minimum=0.0),
        "stage2_encoder_fc_lr": Option(1e-4, "float", "stage 2 rate of the encoder's FC layers", minimum=0.0),
        "stage2_batch_size": Option(16, "int", "stage 2 scans per batch", minimum=1),
        "stage2_epochs": Option(600, "int", "stage 2 epochs", minimum=0),
        "stage2_patience": Option(10, "int", "stage 2 plateau patience", minimum=0),
        "stage2_augment": Option(True, "bool", "stage 2 recomputes features of augmented slices every epoch"),
        "max_degrees": Option(10.0, "float", "augmentation: rotation (degrees)", minimum=0.0),
        "max_shift": Option(0.1, "float", "augmentation: horizontal shift (fraction of the width)", minimum=0.0),
        "occlusion_slices": Option(4, "int", "evaluation pictures: occlusion maps of this many scans", minimum=0),
    }
    predict_options = {
        "aggregator": Option(None, "choice", "the aggregator (default: lstm, else the first trained)",
                             choices=AGGREGATORS, nullable=True),
        "slices": Option("spine", "choice", "spine (default, whatever rule the model was trained with: a real scan "
                                            "need not be centred on the spine), mask or centre", choices=("spine", "mask", "centre")),
        "mask": Option(None, "str", "a vertebra mask of the input (for slices=mask)", nullable=True),
        "occlusion": Option(True, "bool", "an occlusion map over the highest-scoring slice"),
    }

    def check_options(self, o, where_):
        if not o["aggregators"]:
            raise ValueError(f"{where_}: option aggregators needs at least one of {list(AGGREGATORS)}, got aggregators=[]")
        if not 0 < o["center_fraction"] <= 1:
            raise ValueError(f"{where_}: center_fraction must be in (0, 1], got center_fraction={o['center_fraction']}")
        if o["val_fraction"] >= 1:
            raise ValueError(f"{where_}: val_fraction must be in [0, 1), got val_fraction={o['val_fraction']}")

    # ------------------------------------------------------------------------------------------ data
    def read(self, folder: str) -> Samples:
        rows = manifest(folder, self.name, ("path", "label"), files=("path", "mask"))
        labels = []
        for r in rows:
            if r["label"] not in LABEL_VALUES:
                raise ValueError(f"{where(folder, r)}: field 'label' must be fracture, no_fracture, 1 or 0, got label={r['label']!r}")
            if volume_kind(os.path.join(folder, r["path"])) not in ("nifti", "dicom-series"):
                raise ValueError(f"{where(folder, r)}: field 'path' must name a CT volume (a NIfTI file or a DICOM series "
                                 f"folder), got {r['path']!r}")
            labels.append(LABEL_VALUES[r["label"]])
        col = group_column(rows, folder)
        ids = [r["path"] for r in rows]
        return Samples(folder, ids, groups_of(rows, col, ids), labels, rows, col)

    def check_data(self, folder: str) -> Dict[str, Any]:
        s = self.read(folder)
        if len(set(s.strata)) < 2:
            raise ValueError(f"{os.path.join(folder, 'manifest.csv')}: field 'label' needs both fracture and no_fracture "
                             f"scans, got only {['no_fracture', 'fracture'][s.strata[0]]}")
        for r in s.rows:
            shape = image_shape(os.path.join(folder, r["path"]))
            if len(shape) < 3 or min(shape[:3]) < 2:
                raise ValueError(f"{where(folder, r)}: field 'path' names a {'x'.join(map(str, shape))} array; expected a "
                                 "3-D CT volume")
            if r.get("mask"):
                scan = read_scan(os.path.join(folder, r["path"]))
                read_mask(os.path.join(folder, r["mask"]), like=scan)
        return {**s.counts(), "fractured": int(sum(s.strata))}

    def load_scan(self, samples: Samples, j: int, o: Dict[str, Any], mode: Optional[str] = None):
        """(selected slices T x H' x W', the selection info, the full sagittal volume) of sample ``j``."""
        r = samples.rows[j]
        path = os.path.join(samples.folder, r["path"])
        mask = os.path.join(samples.folder, r["mask"]) if r.get("mask") else None
        return self.scan_slices(path, o, mode or o["slices"], mask)

    def scan_slices(self, path: str, o: Dict[str, Any], mode: str, mask: Optional[str] = None):
        scan = read_scan(path)
        if not scan.is_volume:
            raise ValueError(f"{path}: expected a CT volume (a DICOM series folder or a NIfTI file), got a 2-D image")
        window = (o["window_center"], o["window_width"])
        sag = sagittal(scan, to_unit(scan, *window))
        mask_sag = sagittal(scan, read_mask(mask, like=scan) > 0) if mask else None
        sel, info = select_slices(sag, mode, o["center_fraction"], o["min_slices"], window, sagittal_spacing(scan)[2],
                                  o["crop_mm"], mask_sag, where_=path)
        return sel, info, sag

    def fit(self, samples, train, o, run_dir, seed, resume, progress):
        from ..sequence import save_ovf_checkpoints, train_two_stage
        from ..split import patient_split
        from ..train import seed_everything

        val: List[int] = []
        if o["val_fraction"] > 0:
            a, b = patient_split([samples.groups[i] for i in train], [samples.strata[i] for i in train],
                                 test_fraction=o["val_fraction"], seed=seed + 1)
            train, val = [train[i] for i in a], [train[i] for i in b]
        sel = lambda part: [torch.from_numpy(self.load_scan(samples, j, o)[0]) for j in part]  # noqa: E731
        seed_everything(seed)
        log = (lambda msg: print(msg, flush=True)) if progress else None
        result = train_two_stage(sel(train), [samples.strata[j] for j in train], sel(val) or None,
                                 [samples.strata[j] for j in val] or None, o["aggregators"], seed=seed, log=log,
                                 out_dir=run_dir, resume=resume, **{k: o[k] for k in TRAIN_KEYS})
        paths = save_ovf_checkpoints(run_dir, result, center_fraction=o["center_fraction"], min_slices=o["min_slices"],
                                     window=(o["window_center"], o["window_width"]))
        bundle = self._bundle({name: (enc, agg) for name, (enc, agg) in result.models.items()}, result.pixel_mean, o)
        bundle["occlusion_slices"] = o["occlusion_slices"]
        part = {"architecture": {"encoder": dict(result.encoder.config, name="ovf_resnet34"),
                                 "aggregators": {k: dict(v[1].config) for k, v in result.models.items()}},
                "aggregators": list(result.models), "default_aggregator": "lstm" if "lstm" in result.models else
                list(result.models)[0],
                "preprocessing": {k: o[k] for k in ("image_size", "slices", "center_fraction", "min_slices", "crop_mm",
                                                    "window_center", "window_width")},
                "checkpoints": {k: os.path.basename(v) for k, v in paths.items()},
                "validation": {"scans": len(val), "patients": len({samples.groups[j] for j in val})},
                "epochs_trained": {k: len(v) for k, v in result.history.items()}, "threshold": 0.5,
                "occlusion_slices": o["occlusion_slices"]}
        return bundle, part

    @staticmethod
    def _bundle(models, pixel_mean, pre) -> Dict[str, Any]:
        from ..sequence import ScanPipeline

        o = {k: pre[k] for k in ("image_size", "slices", "center_fraction", "min_slices", "crop_mm", "window_center",
                                 "window_width")}
        pipes = {name: ScanPipeline(enc, agg, center_fraction=o["center_fraction"], min_slices=o["min_slices"],
                                    image_size=o["image_size"], threshold=0.5, pixel_mean=pixel_mean)
                 for name, (enc, agg) in models.items()}
        return {"models": models, "pipelines": pipes, "pixel_mean": pixel_mean, "options": o}

    def load(self, card, run_dir):
        from ..sequence import load_ovf_checkpoint

        models, mean = {}, None
        for name in card["aggregators"]:
            enc, agg, c = load_ovf_checkpoint(os.path.join(run_dir, card["checkpoints"][name]))
            models[name], mean = (enc, agg), c["pixel_mean"]
        bundle = self._bundle(models, mean, card["preprocessing"])
        bundle["default"] = card["default_aggregator"]
        bundle["occlusion_slices"] = card.get("occlusion_slices", 4)
        return bundle

    def checkpoint_options(self, checkpoint: str, card: Dict[str, Any]) -> Dict[str, Any]:
        """``--checkpoint RUN/max.pt`` picks the max aggregator."""
        stem = os.path.splitext(os.path.basename(checkpoint))[0]
        return {"aggregator": stem} if stem in card.get("aggregators", []) else {}

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, bundle, samples, indices, out, seed=0, baseline=None):
        from .. import figures

        o = bundle["options"]
        y = np.array([samples.strata[j] for j in indices], dtype=np.int64)
        scores = {name: [] for name in bundle["pipelines"]}
        records, selected = [], {}
        for j in indices:
            sl, info, _ = self.load_scan(samples, j, o)
            selected[j] = (sl, info)
            rec = {"id": samples.ids[j], "label": int(samples.strata[j]), "slice_indices": info["slice_indices"],
                   "columns": info["columns"], "probability": {}}
            for name, pipe in bundle["pipelines"].items():
                p = float(pipe.predict_slices(torch.from_numpy(sl))["probability"])
                scores[name].append(p)
                rec["probability"][name] = p
            records.append(rec)
        delong_ok = min(int(y.sum()), int(len(y) - y.sum())) >= 2  # DeLong's variance needs two of each
        per, preds = {}, {}
        for name, s in scores.items():
            p = np.array(s)
            pred = (p >= 0.5).astype(np.int64)
            rep = om.classification_report(y, pred, p if delong_ok else None, num_classes=2, ci_method="clopper-pearson",
                                           seed=seed)
            pos = rep["per_class"][1]
            row = {"n": int(len(y)), "confusion_matrix": np.asarray(rep["confusion_matrix"]).tolist()}
            for key, entry in (("accuracy", rep["accuracy"]), ("precision", pos["ppv"]), ("recall", pos["sensitivity"]),
                               ("specificity", pos["specificity"]), ("f1", pos["f1"])):
                row[key] = 100 * float(entry["value"])
                row[f"{key}_ci"] = [None if v != v else 100 * float(v) for v in entry["ci"]]
            row["auc"] = float(om.roc_auc(y, p)) if len(set(y.tolist())) == 2 else None
            row["auc_ci"] = [float(v) for v in rep["auc"]["ci"]] if delong_ok else None
            per[name], preds[name] = row, pred
        comparisons = []
        for a, b in itertools.combinations(list(scores), 2):
            c = om.compare_readers(y, preds[a], preds[b], exact=True)
            row = {"a": a, "b": b, "accuracy_a": 100 * c["accuracy_a"], "accuracy_b": 100 * c["accuracy_b"],
                   "paired_table": np.asarray(c["paired_table"]).tolist(),
                   "mcnemar_statistic": float(c["mcnemar"]["statistic"]), "mcnemar_p": float(c["mcnemar"]["p_value"])}
            if delong_ok:
                row["delong_p"] = float(om.delong_test(y, np.array(scores[a]), np.array(scores[b]))["p_value"])
            comparisons.append(row)
        curves = {}
        for name in scores:
            if per[name]["auc"] is not None:
                fpr, tpr, _ = om.roc_curve(y, np.array(scores[name]), drop_intermediate=False)
                curves[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": per[name]["auc"]}
        os.makedirs(out, exist_ok=True)
        figures.roc_png(os.path.join(out, "roc.png"), curves, title=f"OVF, {len(y)} scans")
        occ = self._occlusion_maps(bundle, samples, indices, selected, os.path.join(out, "occlusion"),
                                   int(bundle.get("occlusion_slices", 4)))
        majority = int(np.sum(y == 0)) >= int(np.sum(y == 1))
        k = int(np.sum(y == (0 if majority else 1)))
        metrics = {"aggregators": per, "comparisons": comparisons, "fractured": int(y.sum()), "threshold": 0.5,
                   "occlusion": [os.path.relpath(p, out) for p in occ], "roc": "roc.png",
                   "baseline": {"method": "always the more common label of these scans (an upper bound of a constant "
                                          "answer)", "label": "no_fracture" if majority else "fracture",
                                "accuracy": 100 * k / len(y),
                                "accuracy_ci": [100 * v for v in om.proportion_ci(k, len(y), "clopper-pearson")]},
                   "ci_method": "accuracy, precision, recall, specificity: Clopper-Pearson; F1: percentile bootstrap; AUC: DeLong"}
        return metrics, records

    @staticmethod
    def _occlusion_maps(bundle, samples, indices, selected, folder: str, count: int) -> List[str]:
        """Occlusion heat maps (the LSTM's encoder, else the first) over the middle selected slice of a few scans,
        fractured first."""
        from ..sequence import grey_to_rgb, occlusion_sensitivity, resize_slices, save_occlusion_overlay, subtract_pixel_mean

        if count <= 0:
            return []
        models = bundle["models"]
        enc = models["lstm" if "lstm" in models else next(iter(models))][0]
        size = bundle["options"]["image_size"]
        order = sorted(indices, key=lambda j: -samples.strata[j])
        picks = order[: (count + 1) // 2] + [j for j in order if samples.strata[j] == 0][: count // 2]
        patch = max(4, size // 7)
        os.makedirs(folder, exist_ok=True)
        paths = []
        for j in dict.fromkeys(picks):
            sl = torch.from_numpy(selected[j][0])
            grey = resize_slices(sl[len(sl) // 2][None, None], size)
            x = grey_to_rgb(subtract_pixel_mean(grey, bundle["pixel_mean"]))[0]
            occ = occlusion_sensitivity(enc, x, patch_size=patch, stride=max(2, patch // 2))
            ident = input_name(samples.ids[j])
            path = os.path.join(folder, f"{ident}_{'fracture' if samples.strata[j] else 'no_fracture'}.png")
            save_occlusion_overlay(_display(grey[0, 0]), _display(occ["heatmap"]), path,
                                   title=f"{ident} label {samples.strata[j]}, slice p {occ['base_probability']:.2f}")
            paths.append(path)
        return paths

    def headline(self, m):
        parts = []
        for name, r in m["aggregators"].items():
            ci = r["accuracy_ci"]
            parts.append(f"{name} accuracy {r['accuracy']:.1f} % ({ci[0]:.1f}-{ci[1]:.1f})" if None not in ci else
                         f"{name} accuracy {r['accuracy']:.1f} %")
        return "; ".join(parts) + f"; constant answer {m['baseline']['accuracy']:.1f} %"

    def predict(self, bundle, input_path, out, options):
        from ..sequence import grey_to_rgb, occlusion_sensitivity, resize_slices, save_occlusion_overlay, subtract_pixel_mean

        o = dict(bundle["options"])
        name_ = options.get("aggregator") or bundle.get("default") or next(iter(bundle["pipelines"]))
        if name_ not in bundle["pipelines"]:
            raise ValueError(f"predict --task ovf: aggregator {name_!r} was not trained; trained: {list(bundle['pipelines'])}")
        mode = options["slices"]
        sl, info, sag = self.scan_slices(input_path, o, mode, options.get("mask"))
        pipe = bundle["pipelines"][name_]
        outp = pipe.predict_slices(torch.from_numpy(sl))
        probs = outp["slice_probabilities"].reshape(-1)
        prob = float(outp["probability"])
        name = input_name(input_path)
        res: Dict[str, Any] = {
            "_name": name, "aggregator": name_, "probability": prob, "positive": prob >= 0.5, "threshold": 0.5,
            "label": "fracture" if prob >= 0.5 else "no_fracture", "sagittal_shape": list(sag.shape),
            "slices": info, "slice_indices": info["slice_indices"], "slice_probabilities": [float(p) for p in probs.tolist()],
            "orientation": "sagittal slices counted towards the patient's left; rows towards inferior; columns towards "
                           "posterior (columns [a, b) kept)"}
        size = o["image_size"]
        k = int(torch.argmax(probs))
        grey = resize_slices(torch.from_numpy(sl[k])[None, None], size)
        title = (f"{name_} p(fracture) {prob:.2f}; slice {info['slice_indices'][k]}: {float(probs[k]):.2f}"
                 + ("\nSYNTHETIC-DATA MODEL: not a finding" if options.get("_notice") else ""))
        if options["occlusion"]:
            x = grey_to_rgb(subtract_pixel_mean(grey, bundle["pixel_mean"]))[0]
            patch = max(4, size // 7)
            occ = occlusion_sensitivity(bundle["models"][name_][0], x, patch_size=patch, stride=max(2, patch // 2))
            res["picture"] = os.path.join(out, f"{name}_occlusion.png")
            save_occlusion_overlay(_display(grey[0, 0]), _display(occ["heatmap"]), res["picture"], title=title)
        else:  # the slice the answer rests on most, without the occlusion map
            from .. import figures

            res["picture"] = os.path.join(out, f"{name}.png")
            figures.image_with_text_png(res["picture"], _display(grey[0, 0]).numpy(), title.split("\n"))
        return res


def _display(img: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Upsampled (bilinear) for a readable picture."""
    img = torch.as_tensor(img, dtype=torch.float32)
    if img.shape[-1] >= size:
        return img
    return torch.nn.functional.interpolate(img[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]


TASK = OvfTask()
