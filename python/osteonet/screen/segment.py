"""osteonet's own vertebral-body segmentation for the screen (used when no masks are given).

A 2-D U-Net (osteonet.segmentation, classic, base 8 channels, depth 4) labels sagittal slices resampled to
1.5 mm pixels (HU windowed at 400/1800) into background, vertebral body, intervertebral disc and sacrum;
sagittal slices are taken every 1.5 mm across the patient and every CT voxel takes the label of the
nearest segmented slice. Bodies are the face-connected components of the body class (at least 2 ml),
the discs keeping them apart; levels are counted up from the sacrum (the lowest body above it is L5,
i.e. five lumbar vertebrae are assumed), and without a sacrum in view the bodies stay unnamed (V1, V2,
... from the head).

The shipped weights (weights/spine_unet.pt) were trained on synthetic CT only (osteonet.synth.spine),
by ``python -m osteonet.screen.segment --out DIR`` (docs/screen.md gives the exact command): they show
the pipeline working end to end, not a segmentation of real patients; pass your own weights for the same
architecture with ``seg_checkpoint`` (``--seg-checkpoint``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .labels import LEVELS, LabelTable, load_table

__all__ = ["SEG_CLASSES", "PIXEL_MM", "MODEL_CONFIG", "DEFAULT_CHECKPOINT", "create_spine_segmenter",
           "load_spine_segmenter", "segment_vertebrae", "predict_classes", "name_bodies", "training_slices",
           "train_spine_segmenter"]

SEG_CLASSES = ("background", "vertebral_body", "disc", "sacrum")
PIXEL_MM = 1.5
WINDOW = (400.0, 1800.0)
MODEL_CONFIG = {"name": "unet", "in_chans": 1, "num_classes": 4, "base_channels": 8, "depth": 4}
DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "spine_unet.pt")
MIN_BODY_ML, MIN_SACRUM_ML = 2.0, 5.0
SYNTHETIC_NOTE = ("The vertebrae were segmented by osteonet's own U-Net, trained on synthetic CT only "
                  "(osteonet.synth.spine): on real CT it may miss, merge or misname vertebrae; review "
                  "segmentation.nii.gz, or give masks (--masks) or your own weights (--seg-checkpoint).")


def create_spine_segmenter():
    from ..segmentation import create_segmenter

    cfg = dict(MODEL_CONFIG)
    return create_segmenter(cfg.pop("name"), **cfg)


def load_spine_segmenter(checkpoint: Optional[str] = None):
    """The U-Net with the shipped weights, or with `checkpoint` (a file osteonet.train.save_checkpoint
    wrote for this architecture), in eval mode."""
    from ..train import load_checkpoint

    path = checkpoint or DEFAULT_CHECKPOINT
    if not os.path.exists(path):
        raise ValueError(f"{path}: segmentation checkpoint not found" + ("" if checkpoint else
                         " (the package ships it; reinstall osteonet)"))
    model = create_spine_segmenter()
    load_checkpoint(path, model, restore_rng=False)
    return model.eval(), path


def _to_sagittal(affine: np.ndarray):
    """nibabel orientation transforms between the array and sagittal order (L, I, P: slices towards
    the patient's left, rows towards the feet, columns towards the back) and the sagittal spacing."""
    from nibabel import orientations as ornt

    start = ornt.io_orientation(affine)
    target = ornt.axcodes2ornt(("L", "I", "P"))
    fwd, back = ornt.ornt_transform(start, target), ornt.ornt_transform(target, start)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    sp = [0.0, 0.0, 0.0]
    for src, (dst, _flip) in enumerate(fwd):
        sp[int(dst)] = float(spacing[src])
    return fwd, back, sp


def _window(hu: np.ndarray) -> np.ndarray:
    from ..io import window

    return (window(hu, *WINDOW) - 0.5) / 0.25


def _resample(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=tuple(int(s) for s in size), mode="nearest")
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)


def sagittal_stack(hu: np.ndarray, affine: np.ndarray):
    """The CT as sagittal slices every 1.5 mm across, each resampled to 1.5 mm pixels:
    (tensor N x 1 x H x W, lateral indices of the slices, sagittal array shape, sagittal spacing)."""
    from nibabel import orientations as ornt

    fwd, _, sp = _to_sagittal(affine)
    sag = ornt.apply_orientation(hu, fwd)
    step = max(1, int(round(PIXEL_MM / sp[0])))
    idx = np.arange(step // 2, sag.shape[0], step)
    size = (max(16, int(round(sag.shape[1] * sp[1] / PIXEL_MM))), max(16, int(round(sag.shape[2] * sp[2] / PIXEL_MM))))
    x = torch.from_numpy(np.ascontiguousarray(_window(sag[idx].astype(np.float32)), dtype=np.float32))[:, None]
    return _resample(x, size, "bilinear"), idx, sag.shape, sp


def predict_classes(model, hu: np.ndarray, affine: np.ndarray, batch: int = 16, progress: bool = False) -> np.ndarray:
    """The class (SEG_CLASSES index) of every voxel of `hu` (its own layout), uint8."""
    from nibabel import orientations as ornt

    x, idx, sag_shape, sp = sagittal_stack(hu, affine)
    _, back, _ = _to_sagittal(affine)
    h, w = x.shape[2:]
    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(x, (0, pw, 0, ph), value=float(_window(np.array([-1000.0]))[0]))
    out = np.zeros((len(idx), sag_shape[1], sag_shape[2]), np.uint8)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(idx), desc="segmenting", unit="slice", file=sys.stderr)
        except ImportError:  # pragma: no cover
            bar = None
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            logits = model(x[i:i + batch])[:, :, :h, :w]
            logits = _resample(logits, sag_shape[1:], "bilinear")
            out[i:i + batch] = logits.argmax(1).numpy().astype(np.uint8)
            if bar is not None:
                bar.update(min(batch, len(idx) - i))
    if bar is not None:
        bar.close()
    # Every sagittal slice takes the nearest segmented one.
    nearest = np.clip(np.round((np.arange(sag_shape[0]) - idx[0]) / max(1, (idx[1] - idx[0]) if len(idx) > 1 else 1)),
                      0, len(idx) - 1).astype(int)
    return np.ascontiguousarray(ornt.apply_orientation(out[nearest], back))


def name_bodies(classes: np.ndarray, affine: np.ndarray) -> Tuple[np.ndarray, LabelTable, Dict[str, Any]]:
    """Vertebral bodies from a class map: components of the body class (>= 2 ml), counted up from the
    sacrum (VerSe numbering, table "osteonet"), or unnamed without a sacrum (table "vertebrae_body":
    1 body, 2 disc)."""
    from scipy import ndimage

    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    lab, n = ndimage.label(classes == 1)
    sizes = np.bincount(lab.reshape(-1), minlength=n + 1)[1:] * voxel_ml
    keep = [i + 1 for i in np.flatnonzero(sizes >= MIN_BODY_ML)]
    centres = ndimage.center_of_mass(np.ones(classes.shape, np.uint8), lab, keep) if keep else []
    world = [affine[:3, :3] @ np.asarray(c) + affine[:3, 3] for c in centres]
    order = [keep[i] for i in np.argsort([-w[2] for w in world])]  # head first
    sac, m = ndimage.label(classes == 3)
    sac_sizes = np.bincount(sac.reshape(-1), minlength=m + 1)[1:] * voxel_ml
    info: Dict[str, Any] = {"bodies_found": len(order), "sacrum_found": bool(m and sac_sizes.max() >= MIN_SACRUM_ML)}
    names: List[str] = []
    if info["sacrum_found"] and order:
        sac_centre = ndimage.center_of_mass(sac == (int(np.argmax(sac_sizes)) + 1))
        sac_world = affine[:3, :3] @ np.asarray(sac_centre) + affine[:3, 3]
        lowest = world[keep.index(order[-1])]
        if lowest[2] > sac_world[2] and np.linalg.norm(lowest - sac_world) < 90.0:
            upward = ["L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + [f"C{i}" for i in range(7, 2, -1)]
            names = list(reversed(upward[:len(order)])) if len(order) <= len(upward) else []
    if names:
        table = load_table("osteonet")
        value_of = {n: v for v, n in table.vertebrae.items()}
        out = np.zeros(classes.shape, np.uint8)
        for comp, name in zip(order, names):
            out[lab == comp] = value_of[name]
        info["levels"] = "counted up from the sacrum: the lowest body above it is L5 (five lumbar vertebrae assumed)"
        return out, table, info
    out = np.where(np.isin(lab, order), 1, 0).astype(np.uint8)
    out[(classes == 2) & (out == 0)] = 2
    info["levels"] = "unknown (no sacrum in view): bodies named V1, V2, ... from the head"
    return out, load_table("vertebrae_body"), info


def segment_vertebrae(vol, checkpoint: Optional[str] = None, progress: bool = False):
    """(label map on the CT's grid, its label table, info) for a CTVolume (osteonet.screen.read_ct)."""
    model, path = load_spine_segmenter(checkpoint)
    classes = predict_classes(model, vol.hu, vol.affine, progress=progress)
    labels, table, info = name_bodies(classes, vol.affine)
    info.update(source="osteonet", checkpoint=os.path.abspath(path), shipped=checkpoint is None,
                model=dict(MODEL_CONFIG), pixel_mm=PIXEL_MM,
                note=SYNTHETIC_NOTE if checkpoint is None else "The vertebrae were segmented by osteonet's U-Net with "
                f"the weights {os.path.abspath(path)}; review segmentation.nii.gz.")
    if not info["bodies_found"]:
        raise ValueError(f"{vol.path}: osteonet's segmentation found no vertebral body (at least {MIN_BODY_ML} ml); "
                         "give masks (--masks)")
    return labels, table, info


# ---- training (the recipe behind the shipped weights) ------------------------------------------------
def _random_spine(rng: np.random.Generator):
    from ..synth.spine import default_specs, spine_volume

    specs = default_specs(rng)
    for s in specs:
        if rng.random() < 0.3:
            s.deformity = str(rng.choice(["wedge", "biconcave", "crush"]))
            s.loss = float(rng.uniform(0.15, 0.5))
    axc = str(rng.choice(["SPL", "RAS", "LIP", "LPS", "SAR"]))
    inplane, slab = float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.8, 3.0))
    fov = np.array([rng.uniform(150, 230), rng.uniform(140, 200), rng.uniform(140, 200)])  # S, A, R extents (mm)
    axis_of = {"S": 0, "I": 0, "A": 1, "P": 1, "R": 2, "L": 2}
    spacing = [slab if axis_of[c] == 0 else inplane for c in axc]
    shape = [int(fov[axis_of[c]] / sp) for c, sp in zip(axc, spacing)]
    return spine_volume(shape=shape, spacing=spacing, axcodes=axc, specs=specs,
                        lordosis_deg=float(rng.uniform(10, 45)), roll_deg=float(rng.uniform(-10, 10)),
                        tilt_deg=float(rng.uniform(-10, 10)), oblique_deg=float(rng.uniform(-15, 15)),
                        center_level=str(rng.choice(["L1", "L2", "L3", "L4"])),
                        shift_mm=tuple(float(v) for v in rng.uniform(-25, 25, 3)),
                        noise_hu=float(rng.uniform(5, 25)), psf_mm=float(rng.uniform(0.3, 1.0)),
                        seed=int(rng.integers(1 << 30)))


def training_slices(n_volumes: int, seed: int = 0, crop: int = 96, progress: bool = True):
    """Sagittal training slices (N x 1 x crop x crop inputs, N x crop x crop classes) from random
    synthetic spines, prepared exactly as at inference."""
    from nibabel import orientations as ornt

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for v in range(n_volumes):
        vol = _random_spine(rng)
        classes = np.zeros(vol.hu.shape, np.uint8)
        classes[vol.bodies == 1] = 1
        classes[vol.bodies == 2] = 2
        classes[vol.vertebrae == 25] = 3
        x, idx, sag_shape, sp = sagittal_stack(vol.hu, vol.affine)
        fwd, _, _ = _to_sagittal(vol.affine)
        sag_cls = ornt.apply_orientation(classes, fwd)[idx]
        y = _resample(torch.from_numpy(sag_cls.astype(np.float32))[:, None], x.shape[2:], "nearest")[:, 0].long()
        has = (y > 0).flatten(1).any(1).numpy()
        chosen = [i for i in range(len(idx)) if has[i] or rng.random() < 0.15]
        for i in chosen:
            xi, yi = x[i], y[i]
            h, w = xi.shape[1:]
            pad = (0, max(0, crop - w), 0, max(0, crop - h))
            xi = F.pad(xi, pad, value=float(_window(np.array([-1000.0]))[0]))
            yi = F.pad(yi, pad, value=0)
            h, w = xi.shape[1:]
            fg = torch.nonzero(yi > 0)
            if len(fg) and rng.random() < 0.8:
                cy, cx = fg[int(rng.integers(len(fg)))].tolist()
                top = int(np.clip(cy - crop // 2 + rng.integers(-20, 21), 0, h - crop))
                left = int(np.clip(cx - crop // 2 + rng.integers(-20, 21), 0, w - crop))
            else:
                top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            xs.append(xi[:, top:top + crop, left:left + crop])
            ys.append(yi[top:top + crop, left:left + crop])
        if progress:
            print(f"training slices: volume {v + 1}/{n_volumes}, {len(xs)} slices", file=sys.stderr, flush=True)
    return torch.stack(xs), torch.stack(ys)


def train_spine_segmenter(out: str, n_volumes: int = 24, epochs: int = 15, seed: int = 0, batch_size: int = 16,
                          lr: float = 3e-3, crop: int = 96, progress: bool = True) -> Dict[str, Any]:
    """Trains the screen's U-Net on synthetic spines (osteonet.synth.spine) and writes OUT/spine_unet.pt
    (model weights only) and OUT/train_log.json; returns the log. Seeded by `seed`."""
    from ..io import write_json
    from ..segmentation import balanced_class_weights, segmentation_step
    from ..train import Trainer, create_optimizer, make_schedule, save_checkpoint, seed_everything

    seed_everything(seed)
    x, y = training_slices(n_volumes, seed=seed, crop=crop, progress=progress)
    val_x, val_y = training_slices(max(2, n_volumes // 10), seed=seed + 1000, crop=crop, progress=progress)
    model = create_spine_segmenter()
    opt = create_optimizer("adamw", model, lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)

    class Slices(torch.utils.data.Dataset):  # contrast jitter of +-5 % (no flips: the slices are in patient order)
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i] * (1.0 + 0.1 * (torch.rand(1, generator=g).item() - 0.5)), y[i]

    loader = torch.utils.data.DataLoader(Slices(), batch_size=batch_size, shuffle=True, generator=g, drop_last=True)
    weights = balanced_class_weights(y, len(SEG_CLASSES))

    def dice_of(m, epoch):
        m.eval()
        with torch.no_grad():
            pred = torch.cat([m(val_x[i:i + 32]).argmax(1) for i in range(0, len(val_x), 32)])
        m.train()
        scores = {}
        for c in range(1, len(SEG_CLASSES)):
            p, t = pred == c, val_y == c
            denom = int(p.sum() + t.sum())
            scores[f"dice_{SEG_CLASSES[c]}"] = 2.0 * float((p & t).sum()) / denom if denom else 1.0
        return scores

    trainer = Trainer(model, opt, make_schedule("cosine", t_max=max(1, epochs)), epochs=epochs, seed=seed,
                      monitor="dice_vertebral_body", mode="max", progress=progress)
    history = trainer.fit(loader, segmentation_step(class_weights=weights), dice_of)
    os.makedirs(out, exist_ok=True)
    save_checkpoint(os.path.join(out, "spine_unet.pt"), model, epoch=epochs, history=history)
    log = {"n_volumes": n_volumes, "epochs": epochs, "seed": seed, "crop": crop, "slices": int(len(x)),
           "val_slices": int(len(val_x)),
           "class_weights": weights, "history": history, "final": history[-1] if history else {}}
    write_json(os.path.join(out, "train_log.json"), log)
    return log


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m osteonet.screen.segment",
                                description="Train the screen's vertebral-body U-Net on synthetic spines.")
    p.add_argument("--out", required=True)
    p.add_argument("--volumes", type=int, default=24)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    log = train_spine_segmenter(a.out, n_volumes=a.volumes, epochs=a.epochs, seed=a.seed)
    print({k: v for k, v in log["final"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
