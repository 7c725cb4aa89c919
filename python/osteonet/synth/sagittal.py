"""Sagittal lumbar CT stacks with osteoporotic vertebral fractures graded by height loss (Genant
semi-quantitative grades: 0 none, 1 mild 20-25 %, 2 moderate 25-40 %, 3 severe > 40 %) of three
morphologies (wedge: anterior height lost; biconcave: the middle of both endplates; crush: the whole
body), with a per-scan label (fracture: any grade >= 1). Texture and density follow the patient's BMD
as in ct.py; a fractured body is also denser near the collapsed endplate (compressed trabeculae).

Volume layout: array [x (left->right, sagittal slice index), y (superior->inferior), z (anterior->
posterior)] in HU, with an affine (nibabel/RAS) describing it, so loaders can reorient it.
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np
from scipy import ndimage

GENANT_LOSS = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 0.60)}
MORPHOLOGIES = ("wedge", "biconcave", "crush")
VERTEBRAE = ("T11", "T12", "L1", "L2", "L3", "L4")


@dataclasses.dataclass
class SagittalScan:
    hu: np.ndarray  # int16 [X, Y, Z]
    affine: np.ndarray  # 4x4 RAS
    grades: List[int]  # per vertebra (VERTEBRAE order)
    morphologies: List[str]
    label: int  # 1: at least one fracture
    bmd: float


def _height_profile(morph: str, loss: float, z: np.ndarray) -> np.ndarray:
    """Remaining height fraction along the antero-posterior coordinate z in [0, 1] (0 anterior)."""
    if morph == "wedge":
        return 1.0 - loss * (1.0 - z)
    if morph == "biconcave":
        return 1.0 - loss * np.sin(np.pi * z)
    return np.full_like(z, 1.0 - loss)


def sagittal_scan(rng: np.random.Generator, bmd: float, fractured: bool, size: Tuple[int, int, int] = (40, 256, 256),
                  spacing_mm: Tuple[float, float, float] = (1.0, 0.9, 0.9), noise_hu: float = 15.0) -> SagittalScan:
    """One sagittal stack: six vertebrae (T11-L4) with discs; if `fractured`, one to three vertebrae
    (more likely with low BMD) get a Genant grade and a morphology."""
    nx, ny, nz = size
    sx, sy, sz = spacing_mm
    hu = np.full(size, 45.0)  # soft tissue / muscle
    grades, morphs = [0] * len(VERTEBRAE), [""] * len(VERTEBRAE)
    if fractured:
        n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        for v in rng.choice(np.arange(1, len(VERTEBRAE)), size=n, replace=False):  # T12-L4 fracture most
            grades[v] = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2] if bmd > 90 else [0.25, 0.4, 0.35]))
            morphs[v] = str(rng.choice(MORPHOLOGIES, p=[0.55, 0.3, 0.15]))
    y = np.arange(ny) * sy
    z = np.arange(nz) * sz
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    body_h, disc_h = 25.0 + rng.normal(0, 1), 9.0 + rng.normal(0, 0.6)
    depth = 32.0 + rng.normal(0, 1.5)
    z0 = nz * sz * 0.28 + rng.normal(0, 3)  # anterior edge of the bodies
    y_top = (ny * sy - len(VERTEBRAE) * (body_h + disc_h)) / 2
    half_width = 21.0 + rng.normal(0, 1)
    marrow = -30.0 + 60.0 * np.clip(bmd / 200.0, 0, 1)
    bv = float(np.clip((bmd + 10.0 - marrow) / (1200.0 - marrow), 0.02, 0.4))
    # Trabecular network field in the sagittal plane, shared across nearby sagittal slices (3-D-ish).
    noise = rng.standard_normal((nx, ny, nz))
    band = ndimage.gaussian_filter(noise, (1.5 / sx, 0.5 / sy, 0.5 / sz)) - ndimage.gaussian_filter(noise, (3 / sx, 1.5 / sy, 1.5 / sz))
    net = -np.abs(band) >= np.quantile(-np.abs(band), 1 - bv)
    zz = (z[None, :] - z0) / depth  # 0 anterior .. 1 posterior
    in_depth = (zz >= 0) & (zz <= 1)
    for v in range(len(VERTEBRAE)):
        top = y_top + v * (body_h + disc_h)
        loss = float(rng.uniform(*GENANT_LOSS[grades[v]])) if grades[v] else 0.0
        frac_h = _height_profile(morphs[v] or "crush", loss, np.clip(zz, 0, 1)) if grades[v] else np.ones_like(zz)
        # Height lost from the superior endplate (biconcave: both endplates, half each).
        h = body_h * frac_h
        if morphs[v] == "biconcave":
            y_lo, y_hi = top + (body_h - h) / 2, top + body_h - (body_h - h) / 2
        else:
            y_lo, y_hi = top + body_h - h, np.full_like(h, top + body_h)
        inside2d = in_depth & (y[:, None] >= y_lo) & (y[:, None] <= y_hi)  # [ny, nz]
        disc2d = in_depth & (y[:, None] > top + body_h) & (y[:, None] < top + body_h + disc_h)
        for i, xv in enumerate(x):
            if abs(xv) > half_width:
                continue
            shrink = np.sqrt(max(0.0, 1 - (xv / half_width) ** 2))  # narrower laterally
            keep = inside2d & (zz <= shrink)
            cortex = keep & ~ndimage.binary_erosion(keep, iterations=1)
            trab = np.where(net[i], 1200.0, marrow)
            if grades[v]:
                # Compressed trabeculae: denser band under the collapsed endplate.
                band_mask = keep & (y[:, None] < y_lo + 4.0)
                trab = np.where(band_mask, trab + 250.0, trab)
            hu[i][keep] = trab[keep]
            hu[i][cortex] = 900.0 + 400 * np.clip(bmd / 200, 0, 1)
            hu[i][disc2d & (zz <= shrink)] = 85.0
    # Spinal canal (CSF) posterior to the bodies in central slices.
    canal = (np.abs(x)[:, None, None] < 9.0) & ((z[None, None, :] - z0 - depth - 3) > 0) & ((z[None, None, :] - z0 - depth - 3) < 16)
    hu[np.broadcast_to(canal, hu.shape)] = 10.0
    hu = ndimage.gaussian_filter(hu, (0.6, 0.8, 0.8))
    hu += ndimage.gaussian_filter(rng.standard_normal(hu.shape), 0.6) * noise_hu * 2.0
    hu = np.clip(hu, -1024, 3071).round().astype(np.int16)
    # RAS affine: x -> R (slice index left->right), y -> inferior, z -> posterior.
    affine = np.array([[sx, 0, 0, 0], [0, 0, -sz, 0], [0, -sy, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    return SagittalScan(hu=hu, affine=affine, grades=grades, morphologies=morphs, label=int(any(grades)), bmd=bmd)
