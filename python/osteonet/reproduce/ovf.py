"""Seed 002 (CNN/LSTM detection of osteoporotic vertebral fractures on CT) Table 1 on the built-in
sagittal stacks, as a preset of the ``ovf`` task (osteonet.tasks.ovf; the code `osteonet train --task
ovf` runs): generate the scans, split by patient (train / validation / test), train the slice encoder
and the four aggregators in two stages, evaluate every aggregator on the held-out scans, and write
Table 1 (accuracy, precision, recall, specificity, F1 with 95 % CIs, AUC) beside the paper's numbers,
the ROC curves, McNemar (and DeLong) comparisons between aggregators, the run folder (model card,
checkpoints) and occlusion maps. The built-in stacks hold the spine only, so the paper's rule (the
centre 5 %, here 20 %, of the sagittal slices) selects the slices (``slices=centre``).

Presets: ``quick`` (CPU, a few minutes on 2 cores: 192 scans of 40 x 128 x 128 voxels, 64-pixel
slices, 8 centre slices per scan, short schedules; it shows the pipeline end to end and its numbers are
not comparable with the paper's) and ``paper`` (the paper's settings for a GPU: 1,432 scans, 224-pixel
slices, Adam lr 0.01 batch 192 for 400 epochs, then 600 epochs of stage 2 at lr 0.1 with the encoder's
FC layers at 1e-4; 129 test scans).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence


from ..tasks.inputs import input_name

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
#: preset keys that are the ovf task's options (the others describe the generated data and the split)
TASK_KEYS = ("image_size", "center_fraction", "min_slices", "val_fraction", "stage1_optimizer", "stage1_lr",
             "stage1_batch_size", "stage1_epochs", "stage1_patience", "stage2_optimizer", "stage2_lr",
             "stage2_encoder_fc_lr", "stage2_batch_size", "stage2_epochs", "stage2_patience", "stage2_augment",
             "max_degrees", "max_shift", "occlusion_slices")


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


def reproduce(out: str, preset: str = "quick", seed: int = 0, data: Optional[str] = None,
              variants: Optional[Sequence[str]] = None, progress: bool = True,
              overrides: Optional[Dict[str, Any]] = None) -> Dict:
    """Runs the reproduction; returns {"rows", "mcnemar", "markdown", "seconds"}. Writes OUT/table.json,
    OUT/table.md, the run folder OUT/run (model.json, encoder.pt + <aggregator>.pt, roc.png, occlusion/).
    ``variants``: aggregators (default all four); ``overrides`` replaces preset entries (e.g. a tiny
    configuration for tests)."""
    from .. import tasks
    from ..synth import generate_ovf_dataset
    from .table import metric, row, write_table

    if preset not in PRESETS:
        raise ValueError(f"reproduce ovf: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    cfg = dict(PRESETS[preset])
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise ValueError(f"reproduce ovf: unknown override(s) {unknown}; valid: {sorted(cfg)}")
    cfg.update(overrides or {})
    aggregators = list(variants or AGGREGATORS)
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
    options = {k: cfg[k] for k in TASK_KEYS}
    options.update(aggregators=aggregators, slices="centre", window_center=cfg["window"][0], window_width=cfg["window"][1])
    run = os.path.join(out, "run")
    card = tasks.train("ovf", data, run, options, seed=seed, test_fraction=cfg["test_fraction"], resume=True,
                       progress=progress, command=f"osteonet reproduce ovf --preset {preset} --seed {seed}")
    with open(os.path.join(run, "metrics.json")) as f:
        m = json.load(f)
    with open(os.path.join(run, "predictions.json")) as f:
        scans = json.load(f)
    rows = [{"method": LABELS[a], "aggregator": a, **m["aggregators"][a]} for a in aggregators]
    mc = m["comparisons"]
    info = card["training_data"]
    n_test, fractured = len(scans), int(m["fractured"])
    seconds = time.time() - t_start
    md = tables(rows, mc)
    header = (f"# Seed 002 (CNN/LSTM vertebral fractures) reproduction ({preset} preset, built-in synthetic sagittal "
              f"CT, seed {seed})\n\n{n_test} test scans ({fractured} fractured), threshold 0.5. Ours with 95 % CIs "
              "(accuracy, precision, recall, specificity: Clopper-Pearson; F1: percentile bootstrap; AUC: DeLong), "
              "the paper's in brackets (129 test scans). Wall time "
              f"{seconds:.0f} s (training {card['seconds']:.0f} s).\n\n")
    table_rows = [row("002", PAPER_TABLE1["radiologists"][0], {k: metric(None, paper=PAPER_TABLE1["radiologists"][1][k][0],
                                                                           unit="%") for k in METRICS},
                      table="Table 1", details={"paper_ci": {k: list(PAPER_TABLE1["radiologists"][1][k][1:]) for k in METRICS}})]
    for r in rows:
        paper = PAPER_TABLE1[r["aggregator"]][1]
        cells = {k: metric(r[k], r[f"{k}_ci"], paper=paper[k][0], unit="%") for k in METRICS}
        cells["auc"] = metric(r["auc"], r["auc_ci"], paper=None)
        table_rows.append(row("002", r["method"], cells, table="Table 1", n=r["n"], variant=r["aggregator"],
                              confusion_matrix=r["confusion_matrix"], paper_ci={k: list(paper[k][1:]) for k in METRICS}))
    cfg_json = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    write_table(out, "ovf", "002", "CNN/LSTM vertebral fractures on CT: Table 1", preset, seed,
                {**info, "folder": os.path.relpath(data, out)}, cfg_json, table_rows, header + md,
                extras={"mcnemar": mc, "split": {"train": info["train"]["samples"] - card["validation"]["scans"],
                                                 "val": card["validation"]["scans"], "test": n_test,
                                                 "test_fractured": fractured},
                        "epochs_trained": card["epochs_trained"],
                        "test_scans": [{"id": input_name(s["id"]), "path": os.path.join(os.path.relpath(data, out), s["id"]),
                                        "label": s["label"], "scores": s["probability"]} for s in scans]},
                files={"run": "run", "card": "run/model.json", "roc": "run/roc.png",
                       "occlusion": [os.path.join("run", p) for p in m["occlusion"]],
                       "checkpoints": {k: os.path.join("run", v) for k, v in card["checkpoints"].items()}},
                timing={"seconds": seconds, "train_seconds": card["seconds"]})
    return {"rows": rows, "mcnemar": mc, "markdown": header + md, "seconds": seconds}
