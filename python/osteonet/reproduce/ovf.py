"""Seed 002 (CNN/LSTM detection of osteoporotic vertebral fractures on CT) Table 1 on the built-in
sagittal stacks: generate the scans, split by patient (train / validation / test), train the slice
encoder and the four aggregators in two stages (:func:`osteonet.sequence.train_two_stage`), evaluate
every aggregator on the held-out scans through the scan pipeline, and write Table 1 (accuracy,
precision, recall, specificity, F1 with 95 % CIs, AUC) beside the paper's numbers, the ROC curves on
one picture, McNemar (and DeLong) comparisons between aggregators, the checkpoints and occlusion maps.

Presets: ``quick`` (CPU, a few minutes on 2 cores: 192 scans of 40 x 128 x 128 voxels, 64-pixel
slices, 8 centre slices per scan, short schedules; it shows the pipeline end to end and its numbers are
not comparable with the paper's) and ``paper`` (the paper's settings for a GPU: 1,432 scans, 224-pixel
slices, Adam lr 0.01 batch 192 for 400 epochs, then 600 epochs of stage 2 at lr 0.1 with the encoder's
FC layers at 1e-4; 129 test scans).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import metrics as om
from ..io import write_json, write_text

AGGREGATORS = ("max", "mean", "vote", "lstm")
LABELS = {"max": "CNN/max pooling", "mean": "CNN/mean pooling", "vote": "CNN/voting", "lstm": "CNN/LSTM"}
METRICS = ("accuracy", "precision", "recall", "specificity", "f1")
# Table 1 of the paper (129 test scans), value (95 % CI) in %. The Chinese column headers swap
# "precision" and "accuracy"; the columns are read by their formulas ((TP+TN)/all is accuracy).
PAPER_TABLE1 = {
    "radiologists": ("Radiologists' reports", {"accuracy": (88.4, 81.5, 93.3), "precision": (100.0, 97.2, 100.0),
                                                "recall": (81.5, 73.6, 87.7), "specificity": (100.0, 97.2, 100.0),
                                                "f1": (89.8, 83.4, 94.5)}),
    "max": (LABELS["max"], {"accuracy": (81.4, 73.6, 87.7), "precision": (83.5, 76.2, 89.6), "recall": (87.7, 80.6, 92.7),
                            "specificity": (70.8, 61.9, 78.2), "f1": (85.5, 78.0, 90.9)}),
    "mean": (LABELS["mean"], {"accuracy": (87.6, 80.6, 92.7), "precision": (95.8, 91.2, 98.7), "recall": (84.0, 76.2, 89.6),
                              "specificity": (93.7, 88.1, 97.3), "f1": (89.5, 82.5, 93.9)}),
    "vote": (LABELS["vote"], {"accuracy": (88.4, 81.5, 93.3), "precision": (97.1, 92.3, 99.1), "recall": (84.0, 76.2, 89.6),
                              "specificity": (95.8, 91.2, 98.7), "f1": (90.1, 83.4, 94.5)}),
    "lstm": (LABELS["lstm"], {"accuracy": (89.2, 82.5, 93.9), "precision": (97.2, 92.3, 99.1), "recall": (85.2, 78.0, 90.9),
                              "specificity": (95.8, 91.2, 98.7), "f1": (90.8, 84.3, 95.1)}),
}

PRESETS: Dict[str, Dict[str, Any]] = {
    # 192 scans -> 38 test, 24 validation, 130 training scans; 8 slices each.
    "quick": dict(n_scans=192, volume_size=(40, 128, 128), center_fraction=0.2, min_slices=1, image_size=64,
                  test_fraction=0.2, val_fraction=0.15, window=(400.0, 1800.0),
                  stage1_optimizer="adam", stage1_lr=1e-3, stage1_batch_size=32, stage1_epochs=12, stage1_patience=2,
                  stage2_optimizer="adam", stage2_lr=1e-3, stage2_encoder_fc_lr=1e-4, stage2_batch_size=8,
                  stage2_epochs=40, stage2_patience=5, stage2_augment=False, max_degrees=10.0, max_shift=0.1,
                  occlusion_slices=4),
    # The paper: 1,432 scans, 129 of them for testing; 512 -> 224 (the built-in stacks are 256 wide).
    "paper": dict(n_scans=1432, volume_size=(40, 256, 256), center_fraction=0.2, min_slices=1, image_size=224,
                  test_fraction=129 / 1432, val_fraction=0.1, window=(400.0, 1800.0),
                  stage1_optimizer="adam", stage1_lr=0.01, stage1_batch_size=192, stage1_epochs=400, stage1_patience=10,
                  stage2_optimizer="sgd", stage2_lr=0.1, stage2_encoder_fc_lr=1e-4, stage2_batch_size=16,
                  stage2_epochs=600, stage2_patience=10, stage2_augment=True, max_degrees=10.0, max_shift=0.1,
                  occlusion_slices=6),
}
_TRAIN_KEYS = ("image_size", "stage1_optimizer", "stage1_lr", "stage1_batch_size", "stage1_epochs", "stage1_patience",
               "stage2_optimizer", "stage2_lr", "stage2_encoder_fc_lr", "stage2_batch_size", "stage2_epochs",
               "stage2_patience", "stage2_augment", "max_degrees", "max_shift")


def load_scans(data: str, window=(400.0, 1800.0)) -> List[Dict[str, Any]]:
    """The built-in OVF folder (manifest.csv + NIfTI volumes) -> one dict per scan with its windowed
    sagittal volume (S x H x W in [0, 1], axis 0 sagittal), label and patient id."""
    from ..io import read_manifest, read_nifti
    from ..io import window as hu_window
    from ..sequence import reorient_to_sagittal

    scans = []
    for row in read_manifest(data, required=("path", "label", "patient_id")):
        vol, affine = read_nifti(os.path.join(data, row["path"]))
        sag = reorient_to_sagittal(hu_window(vol, *window), affine=affine)
        label = int(row.get("label_index") or (row["label"] == "fracture"))
        scans.append({"id": os.path.basename(row["path"]).split(".")[0], "path": row["path"], "patient_id": row["patient_id"],
                      "label": label, "volume": torch.from_numpy(sag.astype(np.float32))})
    return scans


def split_scans(scans: List[Dict[str, Any]], test_fraction: float, val_fraction: float, seed: int):
    """(train, val, test) lists of scans, patients never straddling, stratified by label."""
    from ..split import patient_split

    pids, labels = [s["patient_id"] for s in scans], [s["label"] for s in scans]
    rest, test = patient_split(pids, labels, test_fraction=test_fraction, seed=seed)
    if val_fraction > 0:
        tr, va = patient_split([pids[i] for i in rest], [labels[i] for i in rest], test_fraction=val_fraction, seed=seed + 1)
        train, val = [rest[i] for i in tr], [rest[i] for i in va]
    else:
        train, val = rest, []
    return [scans[i] for i in train], [scans[i] for i in val], [scans[i] for i in test]


def centre_slices(volume: torch.Tensor, fraction: float, min_slices: int) -> torch.Tensor:
    from ..sequence import select_center_slices

    return select_center_slices(volume, fraction, min_slices)


def evaluate(models, pixel_mean: torch.Tensor, test: List[Dict[str, Any]], cfg: Dict[str, Any], seed: int):
    """Every aggregator on the test scans through :class:`osteonet.sequence.ScanPipeline` (the same path
    as ``osteonet predict --task ovf``) -> per-aggregator report rows, scores and predictions."""
    from ..sequence import ScanPipeline

    y = np.array([s["label"] for s in test], dtype=np.int64)
    out = {}
    for name, (enc, agg) in models.items():
        pipe = ScanPipeline(enc, agg, center_fraction=cfg["center_fraction"], min_slices=cfg["min_slices"],
                            image_size=cfg["image_size"], threshold=0.5, pixel_mean=pixel_mean)
        p = np.array([float(pipe.predict_volume(s["volume"])["probability"]) for s in test])
        pred = (p >= 0.5).astype(np.int64)
        delong_ok = min(int(y.sum()), int(len(y) - y.sum())) >= 2  # DeLong's variance needs two of each
        rep = om.classification_report(y, pred, p if delong_ok else None, num_classes=2, ci_method="clopper-pearson",
                                       seed=seed)
        pos = rep["per_class"][1]
        row = {"method": LABELS[name], "aggregator": name, "n": int(len(y)),
               "confusion_matrix": np.asarray(rep["confusion_matrix"]).tolist()}
        for key, entry in (("accuracy", rep["accuracy"]), ("precision", pos["ppv"]), ("recall", pos["sensitivity"]),
                           ("specificity", pos["specificity"]), ("f1", pos["f1"])):
            row[key] = 100 * float(entry["value"])
            row[f"{key}_ci"] = [None if v != v else 100 * float(v) for v in entry["ci"]]
        row["auc"] = float(om.roc_auc(y, p)) if len(set(y.tolist())) == 2 else None
        row["auc_ci"] = [float(v) for v in rep["auc"]["ci"]] if delong_ok else None
        out[name] = {"row": row, "scores": p, "pred": pred}
    return y, out


def comparisons(y: np.ndarray, results: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """McNemar's exact test on the paired correct/incorrect table, and DeLong's test of the AUCs, for
    every pair of aggregators."""
    rows = []
    for a, b in itertools.combinations(list(results), 2):
        c = om.compare_readers(y, results[a]["pred"], results[b]["pred"], exact=True)
        row = {"a": a, "b": b, "accuracy_a": 100 * c["accuracy_a"], "accuracy_b": 100 * c["accuracy_b"],
               "paired_table": np.asarray(c["paired_table"]).tolist(),
               "mcnemar_statistic": float(c["mcnemar"]["statistic"]), "mcnemar_p": float(c["mcnemar"]["p_value"])}
        if min(int(y.sum()), int(len(y) - y.sum())) >= 2:
            d = om.delong_test(y, results[a]["scores"], results[b]["scores"])
            row["delong_p"] = float(d["p_value"])
        rows.append(row)
    return rows


def _pct(v, lo_hi=None) -> str:
    if v is None:
        return "-"
    if lo_hi is None or None in lo_hi:
        return f"{v:.1f}"
    return f"{v:.1f} ({lo_hi[0]:.1f}~{lo_hi[1]:.1f})"


def tables(rows: List[Dict[str, Any]], mcnemar_rows: List[Dict[str, Any]]) -> str:
    md = ["### Table 1: scan-level diagnosis of OVF, ours (95 % CI) and [the paper's]", "",
          "| Method | Accuracy % | Precision % | Recall % | Specificity % | F1 % | AUC |", "|---|---|---|---|---|---|---|"]
    label, paper = PAPER_TABLE1["radiologists"]
    md.append(f"| {label} (paper only) | " + " | ".join(f"[{_pct(paper[m][0], paper[m][1:])}]" for m in METRICS) + " | - |")
    for r in rows:
        paper = PAPER_TABLE1[r["aggregator"]][1]
        cells = [f"{_pct(r[m], r[m + '_ci'])} [{_pct(paper[m][0], paper[m][1:])}]" for m in METRICS]
        auc = "-" if r["auc"] is None else f"{r['auc']:.3f}" + (
            "" if r["auc_ci"] is None else f" ({r['auc_ci'][0]:.3f}~{r['auc_ci'][1]:.3f})")
        md.append(f"| {r['method']} | " + " | ".join(cells) + f" | {auc} |")
    md += ["", "### Paired comparisons between aggregators (same test scans)", "",
           "| A | B | accuracy A % | accuracy B % | both right / A only / B only / both wrong | McNemar exact p | DeLong AUC p |",
           "|---|---|---|---|---|---|---|"]
    for c in mcnemar_rows:
        t = c["paired_table"]
        md.append(f"| {LABELS[c['a']]} | {LABELS[c['b']]} | {c['accuracy_a']:.1f} | {c['accuracy_b']:.1f} | "
                  f"{t[0][0]} / {t[0][1]} / {t[1][0]} / {t[1][1]} | {c['mcnemar_p']:.3g} | "
                  f"{'-' if c.get('delong_p') is None or c['delong_p'] != c['delong_p'] else format(c['delong_p'], '.3g')} |")
    return "\n".join(md) + "\n"


def _display(img: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Upsampled (bilinear) for a readable picture."""
    img = torch.as_tensor(img, dtype=torch.float32)
    if img.shape[-1] >= size:
        return img
    return torch.nn.functional.interpolate(img[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def occlusion_maps(models, pixel_mean: torch.Tensor, test: List[Dict[str, Any]], cfg: Dict[str, Any], folder: str,
                   count: int) -> List[str]:
    """Occlusion heat maps (the LSTM's encoder) over the centre slice of a few test scans, fractured first."""
    from ..sequence import grey_to_rgb, occlusion_sensitivity, resize_slices, save_occlusion_overlay, subtract_pixel_mean

    enc = models["lstm" if "lstm" in models else next(iter(models))][0]
    order = sorted(range(len(test)), key=lambda i: -test[i]["label"])
    picks = order[: (count + 1) // 2] + [i for i in order if test[i]["label"] == 0][: count // 2]
    size = cfg["image_size"]
    patch = max(4, size // 7)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in dict.fromkeys(picks):
        s = test[i]
        sl = centre_slices(s["volume"], cfg["center_fraction"], cfg["min_slices"])
        grey = resize_slices(sl[len(sl) // 2][None, None], size)
        x = grey_to_rgb(subtract_pixel_mean(grey, pixel_mean))[0]
        occ = occlusion_sensitivity(enc, x, patch_size=patch, stride=max(2, patch // 2))
        path = os.path.join(folder, f"{s['id']}_{'fracture' if s['label'] else 'no_fracture'}.png")
        save_occlusion_overlay(_display(grey[0, 0]), _display(occ["heatmap"]), path,
                               title=f"{s['id']} label {s['label']}, slice p {occ['base_probability']:.2f}")
        paths.append(path)
    return paths


def reproduce(out: str, preset: str = "quick", seed: int = 0, aggregators: Optional[Sequence[str]] = None,
              data: Optional[str] = None, progress: bool = True, overrides: Optional[Dict[str, Any]] = None) -> Dict:
    """Runs the reproduction; returns {"rows", "mcnemar", "markdown", "seconds"}. Writes DIR/table.json,
    DIR/table.md, DIR/roc.png, DIR/encoder.pt + DIR/<aggregator>.pt, DIR/occlusion/*.png.
    ``overrides`` replaces preset entries (e.g. a tiny configuration for tests)."""
    from .. import figures
    from ..sequence import save_ovf_checkpoints, train_two_stage
    from ..synth import generate_ovf_dataset
    from ..train import seed_everything

    if preset not in PRESETS:
        raise ValueError(f"reproduce ovf: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    cfg = dict(PRESETS[preset])
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise ValueError(f"reproduce ovf: unknown override(s) {unknown}; valid: {sorted(cfg)}")
    cfg.update(overrides or {})
    aggregators = list(aggregators or AGGREGATORS)
    bad = [a for a in aggregators if a not in AGGREGATORS]
    if bad:
        raise ValueError(f"reproduce ovf: unknown aggregator(s) {bad}; valid: {list(AGGREGATORS)}")
    t_start = time.time()
    log = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
    os.makedirs(out, exist_ok=True)
    data = data or os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "manifest.csv")):
        log(f"generating {cfg['n_scans']} built-in sagittal CT stacks {tuple(cfg['volume_size'])} in {data}")
        generate_ovf_dataset(data, cfg["n_scans"], seed=seed, size=tuple(cfg["volume_size"]), progress=progress)
    scans = load_scans(data, cfg["window"])
    train, val, test = split_scans(scans, cfg["test_fraction"], cfg["val_fraction"], seed)
    count = lambda part: f"{len(part)} scans ({sum(s['label'] for s in part)} fractured)"  # noqa: E731
    log(f"patient-level split: train {count(train)}, validation {count(val)}, test {count(test)}")
    sel = lambda part: [centre_slices(s["volume"], cfg["center_fraction"], cfg["min_slices"]) for s in part]  # noqa: E731
    seed_everything(seed)
    t0 = time.time()
    result = train_two_stage(sel(train), [s["label"] for s in train], sel(val) or None,
                             [s["label"] for s in val] or None, aggregators, seed=seed, log=log if progress else None,
                             **{k: cfg[k] for k in _TRAIN_KEYS})
    train_seconds = time.time() - t0
    log(f"two-stage training: {train_seconds:.0f} s")
    paths = save_ovf_checkpoints(out, result, center_fraction=cfg["center_fraction"], min_slices=cfg["min_slices"],
                                 window=cfg["window"])
    y, res = evaluate(result.models, result.pixel_mean, test, cfg, seed)
    rows = [res[a]["row"] for a in aggregators]
    mc = comparisons(y, res)
    curves = {}
    for a in aggregators:
        if res[a]["row"]["auc"] is not None:
            fpr, tpr, _ = om.roc_curve(y, res[a]["scores"], drop_intermediate=False)
            curves[LABELS[a]] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": res[a]["row"]["auc"]}
    figures.roc_png(os.path.join(out, "roc.png"), curves, title=f"OVF, {len(test)} test scans ({preset} preset)")
    occ = occlusion_maps(result.models, result.pixel_mean, test, cfg, os.path.join(out, "occlusion"),
                         cfg["occlusion_slices"])
    seconds = time.time() - t_start
    md = tables(rows, mc)
    header = (f"# Seed 002 (CNN/LSTM vertebral fractures) reproduction ({preset} preset, built-in synthetic sagittal "
              f"CT, seed {seed})\n\n{len(test)} test scans ({int(y.sum())} fractured), threshold 0.5. Ours with 95 % CIs "
              "(accuracy, precision, recall, specificity: Clopper-Pearson; F1: percentile bootstrap; AUC: DeLong), "
              "the paper's in brackets (129 test scans). Wall time "
              f"{seconds:.0f} s (training {train_seconds:.0f} s).\n\n")
    write_text(os.path.join(out, "table.md"), header + md)
    cfg_json = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    write_json(os.path.join(out, "table.json"), {
        "preset": preset, "seed": seed, "config": cfg_json, "rows": rows, "mcnemar": mc,
        "paper": {k: {"method": v[0], **{m: list(x) for m, x in v[1].items()}} for k, v in PAPER_TABLE1.items()},
        "split": {"train": len(train), "val": len(val), "test": len(test), "test_fractured": int(y.sum())},
        "history": result.history, "checkpoints": {k: os.path.basename(v) for k, v in paths.items()},
        "roc": "roc.png", "occlusion": [os.path.relpath(p, out) for p in occ],
        "test_scans": [{"id": s["id"], "path": os.path.join(os.path.relpath(data, out), s["path"]), "label": s["label"],
                        "scores": {a: float(res[a]["scores"][i]) for a in aggregators}} for i, s in enumerate(test)],
        "seconds": seconds, "train_seconds": train_seconds})
    return {"rows": rows, "mcnemar": mc, "markdown": header + md, "seconds": seconds}
