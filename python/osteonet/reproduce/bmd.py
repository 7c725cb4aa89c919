"""Seed 003 (opportunistic CT screening) on the built-in lumbar CT: U-Net segmentation of the vertebral
body (Dice per vertebra L1-L4), then a DenseNet-121 regressing BMD (mg/cm³) from the segmented,
matted vertebral body (Pearson r, Bland–Altman, ACR class accuracy), written beside the paper's numbers.

Presets: `quick` (CPU, a few minutes on 2 cores: 60 patients x 4 slices (L1-L4), segmentation at 128
pixels with a 16-channel U-Net, 64-pixel cut-outs; it shows the pipeline end to end and its numbers
are not comparable with the paper's) and `paper` (for a GPU: the paper's 1,449 patients split 586
training / 863 test by patient, 512-pixel classic U-Net, 224-pixel cut-outs, 100 epochs each; the
paper gives neither epochs nor optimiser, those are our choices).
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import bmd as B
from .. import figures
from .. import train as ot
from ..io import write_json, write_text
from ..segmentation import create_segmenter, predict_labels, segmentation_step

LEVELS = ("L1", "L2", "L3", "L4")
# The paper's numbers (three test sets from three vendors).
PAPER = {"dice_min_mean": [0.823, 0.786, 0.782], "pearson_r": "> 0.98"}

PRESETS = {
    "quick": dict(n_patients=60, slices_per_patient=4, test_fraction=0.2, dicom=False,
                  seg_model="unet", seg_options=dict(base_channels=16, depth=4), seg_size=128, seg_epochs=12,
                  seg_batch_size=8, seg_lr=2e-3, crop_size=64, margin=0.1,
                  regressor="densenet121", reg_epochs=20, reg_batch_size=16, reg_lr=1e-3),
    "paper": dict(n_patients=1449, slices_per_patient=4, test_fraction=863 / 1449, dicom=False,
                  seg_model="unet", seg_options=dict(base_channels=64, depth=4), seg_size=512, seg_epochs=100,
                  seg_batch_size=8, seg_lr=1e-3, crop_size=224, margin=0.1,
                  regressor="densenet121", reg_epochs=100, reg_batch_size=32, reg_lr=1e-3),
}


class FlipDataset(torch.utils.data.Dataset):
    """(x, y) pairs with a random horizontal flip of x (and of y when y is a label map)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, flip: bool = True) -> None:
        self.x, self.y, self.flip = x, y, flip

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        x, y = self.x[i], self.y[i]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
            if y.dim() >= 2:
                y = y.flip(-1)
        return x, y


def load_pngs(folder: str, rels: List[str]) -> torch.Tensor:
    """uint8 N x H x W of the PNGs at folder/rels."""
    from PIL import Image

    return torch.stack([torch.from_numpy(np.asarray(Image.open(os.path.join(folder, r)).convert("L")).copy()) for r in rels])


def to_input(images_u8: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
    """uint8 N x H x W -> float N x 1 x size x size, standardised around the grey of soft tissue."""
    x = images_u8.unsqueeze(1).float() / 255.0
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return (x - 0.5) / 0.25


def to_labels(masks: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
    """Label maps N x H x W (int) resized to size x size with nearest sampling."""
    if size is None or tuple(masks.shape[-2:]) == (size, size):
        return masks.long()
    return F.interpolate(masks.unsqueeze(1).float(), size=(size, size), mode="nearest").squeeze(1).long()


def train_segmenter(name: str, options: Dict, num_labels: int, x: torch.Tensor, y: torch.Tensor, cfg: Dict,
                    out_dir: str, seed: int, progress: bool, prefix: str = "seg", class_weights=None):
    ot.seed_everything(seed)
    model = create_segmenter(name, in_chans=1, num_classes=num_labels, **options)
    bs = cfg[f"{prefix}_batch_size"]
    loader = torch.utils.data.DataLoader(FlipDataset(x, y), batch_size=bs, shuffle=True, drop_last=len(x) > bs)
    opt = ot.create_optimizer("adamw", model, lr=cfg[f"{prefix}_lr"], weight_decay=1e-4)
    trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, cfg[f"{prefix}_epochs"])),
                         epochs=cfg[f"{prefix}_epochs"], out_dir=out_dir, seed=seed, progress=progress)
    trainer.fit(loader, segmentation_step(class_weights=class_weights))
    return model.eval()


def predict_full(model, images_u8: torch.Tensor, seg_size: int, chunk: int = 16) -> torch.Tensor:
    """Label maps (uint8 N x H x W) at the images' own size from a segmenter run at seg_size."""
    out = [predict_labels(model, to_input(images_u8[i:i + chunk], seg_size), out_size=images_u8.shape[-2:]).to(torch.uint8)
           for i in range(0, images_u8.shape[0], chunk)]
    return torch.cat(out)


def mat_regions(images_u8: torch.Tensor, regions: torch.Tensor, cfg: Dict, fallback: Optional[torch.Tensor] = None,
                chunk: int = 16):
    """Cut-outs (N x 1 x crop x crop, grey in [0, 1]) of the bool regions (N x H x W), see osteonet.bmd.mat_batch."""
    crops, empty = [], []
    for i in range(0, images_u8.shape[0], chunk):
        full = images_u8[i:i + chunk].unsqueeze(1).float() / 255.0
        fb = None if fallback is None else fallback[i:i + chunk]
        c, e = B.mat_batch(full, regions[i:i + chunk], cfg["crop_size"], cfg["margin"], fallback=fb)
        crops.append(c)
        empty += e
    return torch.cat(crops), empty


def crops_input(crops: torch.Tensor) -> torch.Tensor:
    return (crops - 0.25) / 0.25


def _fmt(v, digits=3) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def reproduce(out: str, preset: str = "quick", seed: int = 0, data: Optional[str] = None, progress: bool = True,
              overrides: Optional[Dict] = None) -> Dict:
    """Runs the reproduction; returns {"rows": [...], "markdown": str}. Writes DIR/table.json, table.md,
    pictures (masks_over_images.png, bland_altman.png, bmd_scatter.png) and checkpoints (*/last.pt).
    `overrides` replaces preset entries (e.g. a tiny configuration for tests)."""
    from ..io import read_manifest
    from ..split import patient_split
    from ..synth import generate_ct_dataset

    if preset not in PRESETS:
        raise ValueError(f"reproduce bmd: preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
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
    rows = read_manifest(data, required=("path", "patient_id", "level", "bmd", "mask_path"))
    if any(not r["mask_path"] for r in rows):
        raise ValueError(f"reproduce bmd: {data}/manifest.csv has slices without mask_path (generate with masks=True)")
    bmd = np.array([float(r["bmd"]) for r in rows])
    from .. import clinical
    classes = clinical.acr_class(bmd)
    tr, te = patient_split([r["patient_id"] for r in rows], list(classes), test_fraction=cfg["test_fraction"], seed=seed)
    print(f"patient-level split: {len(tr)} training and {len(te)} test slices", flush=True)
    images = load_pngs(data, [r["path"] for r in rows])
    masks = (load_pngs(data, [r["mask_path"] for r in rows]) > 127).to(torch.uint8)
    levels = [r["level"] for r in rows]

    # 1. U-Net segmentation of the vertebral body (binary), trained at seg_size.
    t0 = time.time()
    print(f"[1/2] {cfg['seg_model']} segmentation: {cfg['seg_epochs']} epochs at {cfg['seg_size']} px", flush=True)
    xs, ys = to_input(images[tr], cfg["seg_size"]), to_labels(masks[tr], cfg["seg_size"])
    seg = train_segmenter(cfg["seg_model"], cfg["seg_options"], 2, xs, ys, cfg, os.path.join(out, "segmentation"),
                          seed, progress)
    pred_tr, pred_te = predict_full(seg, images[tr], cfg["seg_size"]), predict_full(seg, images[te], cfg["seg_size"])
    # The regressor learns from the segmentation's cut-outs (the reference mask only where it found nothing).
    crops_tr, _ = mat_regions(images[tr], pred_tr > 0, cfg, fallback=masks[tr] > 0)
    crops_te, empty_te = mat_regions(images[te], pred_te > 0, cfg)
    from .. import metrics as om
    dice_te = np.asarray(om.dice(pred_te.long(), masks[te].long(), num_classes=2, reduction="none"))[:, 0]
    lev_te = [levels[i] for i in te]
    dice = {lv: float(np.nanmean([d for d, l in zip(dice_te, lev_te) if l == lv])) if lv in lev_te else None
            for lv in LEVELS}
    dice["mean"] = float(np.nanmean(dice_te))
    print(f"      Dice {' '.join(f'{k} {_fmt(v)}' for k, v in dice.items())} ({time.time() - t0:.0f} s)", flush=True)

    # 2. DenseNet-121 BMD regression on the matted vertebral body, normalised target.
    t0 = time.time()
    print(f"[2/2] {cfg['regressor']} BMD regression: {cfg['reg_epochs']} epochs on {cfg['crop_size']}-px cut-outs",
          flush=True)
    scaler = B.TargetScaler.fit(bmd[tr])
    ot.seed_everything(seed)
    reg = B.create_bmd_regressor(cfg["regressor"], in_chans=1)
    ytr = torch.from_numpy(scaler.normalize(bmd[tr])).float()
    bs = cfg["reg_batch_size"]
    loader = torch.utils.data.DataLoader(FlipDataset(crops_input(crops_tr), ytr), batch_size=bs, shuffle=True,
                                         drop_last=len(tr) > bs)
    opt = ot.create_optimizer("adamw", reg, lr=cfg["reg_lr"], weight_decay=1e-4)
    reg_dir = os.path.join(out, "regression")
    trainer = ot.Trainer(reg, opt, ot.make_schedule("cosine", t_max=max(1, cfg["reg_epochs"])), epochs=cfg["reg_epochs"],
                         out_dir=reg_dir, seed=seed, progress=progress)
    trainer.fit(loader, B.regression_step("mse"))
    write_json(os.path.join(reg_dir, "target_scaler.json"), scaler.state_dict())
    pred_bmd = B.predict_bmd(reg, crops_input(crops_te), scaler)
    true_bmd = bmd[te]
    agree = B.bmd_agreement(true_bmd, pred_bmd)
    # Per patient: the mean over the patient's vertebrae (the paper's "average BMD").
    pids = [rows[i]["patient_id"] for i in te]
    up = sorted(set(pids))
    pt_true = np.array([true_bmd[[j for j, p in enumerate(pids) if p == q]].mean() for q in up])
    pt_pred = np.array([pred_bmd[[j for j, p in enumerate(pids) if p == q]].mean() for q in up])
    r_patient = om.pearson(pt_true, pt_pred) if len(up) >= 4 else None
    ba = agree["bland_altman"]
    print(f"      r {agree['pearson']['r']:.3f} bias {ba['bias']:.1f} mg/cm3 class accuracy {agree['class_accuracy']:.3f} "
          f"({time.time() - t0:.0f} s)", flush=True)

    # Pictures.
    pick = []
    for lv in LEVELS:
        pick += [j for j, l in enumerate(lev_te) if l == lv][:1]
    figures.mask_overlay_png(os.path.join(out, "masks_over_images.png"), [images[te[j]].numpy() for j in pick],
                             [masks[te[j]].numpy() for j in pick], [pred_te[j].numpy() for j in pick],
                             [f"{lev_te[j]} Dice {dice_te[j]:.3f}" for j in pick], zoom_margin=0.6)
    figures.bland_altman_png(os.path.join(out, "bland_altman.png"), true_bmd, pred_bmd, ba, "(mg/cm³)",
                             "Bland–Altman: predicted vs reference BMD")
    figures.scatter_png(os.path.join(out, "bmd_scatter.png"), true_bmd, pred_bmd, "BMD (mg/cm³)",
                        f"BMD: r = {agree['pearson']['r']:.3f}")

    p = agree["pearson"]
    row = {"method": f"{cfg['seg_model']} + {cfg['regressor']}", "dice": dice,
           "pearson_r": p["r"], "pearson_ci": [p["ci_low"], p["ci_high"]], "pearson_p": p["p_value"],
           "pearson_r_patient": None if r_patient is None else r_patient["r"],
           "bland_altman": {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in ba.items()}, "mae": agree["mae"], "rmse": agree["rmse"],
           "class_accuracy": agree["class_accuracy"], "class_accuracy_ci": agree["class_accuracy_ci"],
           "confusion_matrix": agree["confusion_matrix"], "n_test_slices": len(te), "n_test_patients": len(up),
           "n_train_slices": len(tr), "empty_predicted_masks": int(sum(empty_te)), "paper": PAPER}
    md = [f"# Seed 003 reproduction ({preset} preset, built-in synthetic lumbar CT, seed {seed})", "",
          "Ours beside (the paper's). Dice on the test patients' slices at full resolution; BMD in mg/cm³ against the "
          "generator's QCT BMD; classes by the ACR rule (osteonet.clinical). 95 % intervals: Fisher (r), t (Bland–Altman), "
          "Wilson (accuracy).", "",
          "| Vertebra | L1 | L2 | L3 | L4 | mean |", "|---|---|---|---|---|---|",
          f"| Dice, {row['method']} | " + " | ".join(_fmt(dice[k]) for k in LEVELS + ("mean",)) + " |",
          "| Dice, paper (minimum mean over L1-L4, three vendors) | | | | | 0.823 / 0.786 / 0.782 |", "",
          "| BMD regression | ours | paper |", "|---|---|---|",
          f"| Pearson r (95 % CI), per vertebra | {p['r']:.3f} ({p['ci_low']:.3f}-{p['ci_high']:.3f}) | > 0.98 |",
          f"| Pearson r, per patient (mean of vertebrae) | {_fmt(row['pearson_r_patient'])} | > 0.98 |",
          f"| Bland–Altman bias (95 % CI), mg/cm³ | {ba['bias']:.1f} ({ba['bias_ci'][0]:.1f} to {ba['bias_ci'][1]:.1f}) | - |",
          f"| limits of agreement, mg/cm³ | {ba['loa_low']:.1f} to {ba['loa_high']:.1f} | - |",
          f"| MAE / RMSE, mg/cm³ | {agree['mae']:.1f} / {agree['rmse']:.1f} | - |",
          f"| ACR class accuracy (95 % CI) | {100 * agree['class_accuracy']:.1f} % ({100 * agree['class_accuracy_ci'][0]:.1f}-"
          f"{100 * agree['class_accuracy_ci'][1]:.1f}) | - |",
          f"| test slices / patients | {len(te)} / {len(up)} | 863 patients |", "",
          "Pictures: masks_over_images.png, bland_altman.png, bmd_scatter.png. Checkpoints: segmentation/last.pt, "
          "regression/last.pt (+ regression/target_scaler.json).", ""]
    markdown = "\n".join(md)
    wall = time.time() - t_start
    write_text(os.path.join(out, "table.md"), markdown)
    write_json(os.path.join(out, "table.json"), {"paper_id": "003", "preset": preset, "seed": seed, "config": cfg,
                                                 "wall_seconds": wall, "rows": [row]})
    return {"rows": [row], "markdown": markdown}
