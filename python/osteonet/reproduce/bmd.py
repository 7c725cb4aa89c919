"""Seed 003 (opportunistic CT screening) on the built-in lumbar CT, as a preset of the ``bmd`` task
(osteonet.tasks.bmd; the code `osteonet train --task bmd` runs): U-Net segmentation of the vertebral
body (Dice per vertebra L1-L4), then a DenseNet-121 regressing BMD (mg/cm³) from the segmented, matted
vertebral body (Pearson r, Bland–Altman, ACR class accuracy), written beside the paper's numbers.

Presets: `quick` (CPU, a few minutes on 2 cores: 60 patients x 4 slices (L1-L4), segmentation at 128
pixels with a 16-channel U-Net, 64-pixel cut-outs; it shows the pipeline end to end and its numbers
are not comparable with the paper's) and `paper` (for a GPU: the paper's 1,449 patients split 586
training / 863 test by patient, 512-pixel classic U-Net, 224-pixel cut-outs, 100 epochs each; the
paper gives neither epochs nor optimiser, those are our choices).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

LEVELS = ("L1", "L2", "L3", "L4")
# The paper's numbers (three test sets from three vendors).
PAPER = {"dice_min_mean": [0.823, 0.786, 0.782], "pearson_r": "> 0.98"}

PRESETS: Dict[str, Dict[str, Any]] = {
    "quick": dict(n_patients=60, slices_per_patient=4, test_fraction=0.2, dicom=False,
                  seg_model="unet", seg_base_channels=16, seg_depth=4, seg_size=128, seg_epochs=12,
                  seg_batch_size=8, seg_lr=2e-3, crop_size=64, margin=0.1,
                  regressor="densenet121", reg_epochs=20, reg_batch_size=16, reg_lr=1e-3),
    "paper": dict(n_patients=1449, slices_per_patient=4, test_fraction=863 / 1449, dicom=False,
                  seg_model="unet", seg_base_channels=64, seg_depth=4, seg_size=512, seg_epochs=100,
                  seg_batch_size=8, seg_lr=1e-3, crop_size=224, margin=0.1,
                  regressor="densenet121", reg_epochs=100, reg_batch_size=32, reg_lr=1e-3),
}
#: preset keys that describe the generated data and the split, not the task
DATA_KEYS = ("n_patients", "slices_per_patient", "test_fraction", "dicom")


def _fmt(v, digits=3) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def reproduce(out: str, preset: str = "quick", seed: int = 0, data: Optional[str] = None,
              variants: Optional[List[str]] = None, progress: bool = True, overrides: Optional[Dict] = None) -> Dict:
    """Runs the reproduction; returns {"rows": [...], "markdown": str, "seconds"}. Writes OUT/table.json,
    table.md and the run folder OUT/run (model card, checkpoints, metrics, pictures: masks_over_images.png,
    bland_altman.png, bmd_scatter.png). `overrides` replaces preset entries (e.g. a tiny configuration
    for tests)."""
    from .. import tasks
    from ..synth import generate_ct_dataset
    from .table import metric, row, write_table

    if preset not in PRESETS:
        raise ValueError(f"reproduce bmd: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    if variants:
        raise ValueError(f"reproduce bmd: the reproduction has one method (U-Net + DenseNet-121), got variants={variants}")
    cfg = dict(PRESETS[preset])
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise ValueError(f"reproduce bmd: unknown override(s) {unknown}; valid: {sorted(cfg)}")
    cfg.update(overrides or {})
    t_start = time.time()
    data = data or os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "manifest.csv")):
        print(f"generating the built-in lumbar CT ({cfg['n_patients']} patients x {cfg['slices_per_patient']} slices) "
              f"in {data}", flush=True)
        generate_ct_dataset(data, cfg["n_patients"], cfg["slices_per_patient"], seed=seed, progress=progress,
                            dicom=cfg["dicom"])
    options = {k: v for k, v in cfg.items() if k not in DATA_KEYS}
    run = os.path.join(out, "run")
    card = tasks.train("bmd", data, run, options, seed=seed, test_fraction=cfg["test_fraction"], resume=True,
                       progress=progress, command=f"osteonet reproduce bmd --preset {preset} --seed {seed}")
    with open(os.path.join(run, "metrics.json")) as f:
        m = json.load(f)
    info = card["training_data"]
    dice = {lv: m["dice_per_level"].get(lv) for lv in LEVELS}
    dice["mean"] = m["dice_mean"]
    p, ba = m["pearson"], m["bland_altman"]
    pat = m.get("pearson_patient")
    method = f"{cfg['seg_model']} + {cfg['regressor']}"
    n_te, n_tr = info["test"]["samples"], info["train"]["samples"]
    print(f"      Dice {' '.join(f'{k} {_fmt(v)}' for k, v in dice.items())}; r {p['r']:.3f} bias {ba['bias']:.1f} mg/cm3 "
          f"class accuracy {m['class_accuracy']:.3f}", flush=True)
    md = [f"# Seed 003 reproduction ({preset} preset, built-in synthetic lumbar CT, seed {seed})", "",
          "Ours beside (the paper's). Dice on the test patients' slices at full resolution; BMD in mg/cm³ against the "
          "generator's QCT BMD; classes by the ACR rule (osteonet.clinical). 95 % intervals: Fisher (r), t (Bland–Altman), "
          "Wilson (accuracy).", "",
          "| Vertebra | L1 | L2 | L3 | L4 | mean |", "|---|---|---|---|---|---|",
          f"| Dice, {method} | " + " | ".join(_fmt(dice[k]) for k in LEVELS + ("mean",)) + " |",
          "| Dice, paper (minimum mean over L1-L4, three vendors) | | | | | 0.823 / 0.786 / 0.782 |", "",
          "| BMD regression | ours | paper |", "|---|---|---|",
          f"| Pearson r (95 % CI), per vertebra | {p['r']:.3f} ({p['ci_low']:.3f}-{p['ci_high']:.3f}) | > 0.98 |",
          f"| Pearson r, per patient (mean of vertebrae) | {_fmt(None if pat is None else pat['r'])} | > 0.98 |",
          f"| Bland–Altman bias (95 % CI), mg/cm³ | {ba['bias']:.1f} ({ba['bias_ci'][0]:.1f} to {ba['bias_ci'][1]:.1f}) | - |",
          f"| limits of agreement, mg/cm³ | {ba['loa_low']:.1f} to {ba['loa_high']:.1f} | - |",
          f"| MAE / RMSE, mg/cm³ | {m['mae']:.1f} / {m['rmse']:.1f} | - |",
          f"| ACR class accuracy (95 % CI) | {100 * m['class_accuracy']:.1f} % ({100 * m['class_accuracy_ci'][0]:.1f}-"
          f"{100 * m['class_accuracy_ci'][1]:.1f}) | - |",
          f"| test slices / patients | {n_te} / {m['n_patients']} | 863 patients |", "",
          "Pictures: run/masks_over_images.png, run/bland_altman.png, run/bmd_scatter.png. Run folder (model card, "
          "checkpoints): run/ (run/segmentation/last.pt, run/regression/last.pt).", ""]
    markdown = "\n".join(md)
    cells = {f"dice_{lv}": metric(dice[lv]) for lv in LEVELS}
    cells["dice_mean"] = metric(dice["mean"], m.get("dice_mean_ci"), paper="0.823 / 0.786 / 0.782 (minimum mean, three vendors)")
    cells["pearson_r"] = metric(p["r"], [p["ci_low"], p["ci_high"]], paper=PAPER["pearson_r"])
    cells["pearson_r_patient"] = metric(None if pat is None else pat["r"], None if pat is None else
                                        [pat["ci_low"], pat["ci_high"]], paper=PAPER["pearson_r"])
    cells["bland_altman_bias"] = metric(ba["bias"], ba["bias_ci"], unit="mg/cm³")
    cells["mae"] = metric(m["mae"], unit="mg/cm³")
    cells["rmse"] = metric(m["rmse"], unit="mg/cm³")
    cells["class_accuracy"] = metric(m["class_accuracy"], m["class_accuracy_ci"])
    rows = [row("003", method, cells, n=n_te, pearson_p=p["p_value"], bland_altman=ba,
                confusion_matrix=m["confusion_matrix"], n_test_patients=m["n_patients"], n_train_slices=n_tr,
                empty_predicted_masks=m["empty_predicted_masks"], baseline=m.get("baseline"))]
    wall = time.time() - t_start
    write_table(out, "bmd", "003", "Opportunistic CT screening: vertebral-body Dice and BMD regression", preset, seed,
                {**info, "folder": os.path.relpath(data, out)}, cfg, rows, markdown,
                files={"run": "run", "card": "run/model.json", "pictures": ["run/masks_over_images.png",
                                                                             "run/bland_altman.png", "run/bmd_scatter.png"]},
                timing={"seconds": wall})
    return {"rows": rows, "markdown": markdown, "seconds": wall}
