"""Projection images: hip radiographs with femoral neck, greater trochanter, Ward's triangle and
total-hip masks and a T-score class (seed 004), and spine DXA-like AP images of L1-L4 with a binary
osteoporosis label (seed 001).

Projection model: pixel value = 1 - exp(-mu * path), path = soft-tissue thickness + bone thickness x
(BMD-dependent bone attenuation); trabecular bone adds a texture whose contrast falls with BMD;
then detector blur and noise. Bone shapes are analytic (ellipses and rotated boxes).
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np
from scipy import ndimage

HIP_REGIONS = ("femoral_neck", "greater_trochanter", "wards_triangle", "total_hip")


def _rot_box(yy, xx, cy, cx, half_len, half_wid, angle):
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (np.abs(u) <= half_len) & (np.abs(v) <= half_wid)


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


@dataclasses.dataclass
class HipImage:
    image: np.ndarray  # uint8 [H, W]
    masks: Dict[str, np.ndarray]  # region -> bool [H, W]
    t_score: float
    who_class: int


def hip_radiograph(rng: np.random.Generator, t_score: float, who_class: int, size: int = 384) -> HipImage:
    """A right-hip AP radiograph: pelvis/acetabulum arc, femoral head, neck (neck-shaft angle
    125-135°), greater trochanter, shaft; region masks as in seed 004."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    s = size / 384.0
    head_c = np.array([size * 0.30 + rng.normal(0, 6 * s), size * 0.38 + rng.normal(0, 6 * s)])  # (y, x)
    head_r = (34 + rng.normal(0, 2)) * s
    nsa = np.deg2rad(rng.uniform(125, 135))  # neck-shaft angle
    shaft_angle = np.deg2rad(rng.uniform(-8, 2))  # from vertical
    neck_dir = np.array([np.cos(np.pi - nsa + shaft_angle), np.sin(np.pi - nsa + shaft_angle)])  # (dy, dx) head->shaft
    neck_dir = np.array([abs(neck_dir[0]) * 0.7 + 0.3, abs(neck_dir[1])])
    neck_dir /= np.linalg.norm(neck_dir)
    neck_len = (55 + rng.normal(0, 3)) * s
    neck_c = head_c + neck_dir * (head_r + neck_len / 2 - 10 * s)
    neck_angle = np.arctan2(neck_dir[0], neck_dir[1])
    head = _ellipse(yy, xx, head_c[0], head_c[1], head_r, head_r)
    neck = _rot_box(yy, xx, neck_c[0], neck_c[1], neck_len / 2, (20 + rng.normal(0, 1)) * s, neck_angle)
    troch_c = neck_c + neck_dir * (neck_len / 2) + np.array([-18 * s, 22 * s])
    troch = _ellipse(yy, xx, troch_c[0], troch_c[1], 34 * s, 26 * s)
    inter_c = neck_c + neck_dir * (neck_len / 2 + 10 * s) + np.array([18 * s, -4 * s])
    inter = _ellipse(yy, xx, inter_c[0], inter_c[1], 32 * s, 30 * s)
    shaft_top = inter_c + np.array([25 * s, 0])
    shaft = _rot_box(yy, xx, shaft_top[0] + 80 * s, shaft_top[1] + 80 * s * np.tan(shaft_angle), 90 * s, 27 * s,
                     np.pi / 2 + shaft_angle)
    acetab = _ellipse(yy, xx, head_c[0], head_c[1], head_r + 10 * s, head_r + 10 * s) & ~_ellipse(
        yy, xx, head_c[0], head_c[1], head_r + 3 * s, head_r + 3 * s) & (yy < head_c[0] + 5 * s) & (xx < head_c[1] + head_r * 0.6)
    # Iliac wing above and medial to the acetabulum, and the ischium below it (outlines only).
    ilium = _ellipse(yy, xx, head_c[0] - head_r * 1.9, head_c[1] - head_r * 0.6, head_r * 1.6, head_r * 2.0)
    ischium = _ellipse(yy, xx, head_c[0] + head_r * 1.5, head_c[1] - head_r * 1.2, head_r * 0.9, head_r * 0.5)
    pelvis = (ilium | ischium) & ~_ellipse(yy, xx, head_c[0], head_c[1], head_r + 3 * s, head_r + 3 * s)
    femur = head | neck | troch | inter | shaft
    # Ward's triangle: the low-density area where the neck meets the intertrochanteric region.
    wards_c = neck_c + neck_dir * (neck_len * 0.22) + np.array([6 * s, 0])
    wards = _rot_box(yy, xx, wards_c[0], wards_c[1], 9 * s, 7 * s, neck_angle + np.pi / 4) & neck
    masks = {"femoral_neck": neck & ~head, "greater_trochanter": troch & ~neck, "wards_triangle": wards,
             "total_hip": (neck | troch | inter | (shaft & (yy < shaft_top[0] + 45 * s))) & ~head}
    # Attenuation: areal BMD from the T-score (young-adult total hip 1.0 g/cm², SD 0.12).
    abmd = float(np.clip(1.0 + 0.12 * t_score, 0.35, 1.4))
    thickness = ndimage.distance_transform_edt(femur) / (20 * s)
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.2 * s)
    bone = np.clip(thickness, 0, 1) * abmd * (1 + 0.25 * texture * (1.2 - abmd))
    bone[wards] *= 0.75
    path = 0.9 + 0.6 * bone + 0.35 * (acetab | pelvis) * abmd * (1 + 0.2 * texture)
    img = 1 - np.exp(-path * 1.2)
    img = ndimage.gaussian_filter(img, 1.0 * s) + rng.normal(0, 0.01, img.shape)
    img = (np.clip((img - img.min()) / (np.ptp(img) + 1e-9), 0, 1) * 255).astype(np.uint8)
    return HipImage(image=img, masks=masks, t_score=t_score, who_class=who_class)


def dxa_spine(rng: np.random.Generator, t_score: float, size: int = 256) -> np.ndarray:
    """An AP spine DXA-like image of L1-L4 (uint8); intensity ∝ areal BMD (young-adult L1-L4
    1.05 g/cm², SD 0.11) with trabecular mottle and soft-tissue background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    s = size / 256.0
    abmd = float(np.clip(1.05 + 0.11 * t_score, 0.3, 1.5))
    img = 0.15 + 0.03 * np.exp(-((xx - size / 2) / (90 * s)) ** 2)
    cx = size / 2 + rng.normal(0, 5 * s)
    for v in range(4):
        h, w = (36 + 2 * v) * s, (46 + 3 * v) * s
        cy = (30 + v * 52 + rng.normal(0, 2)) * s
        body = _rot_box(yy, xx, cy + h / 2, cx + rng.normal(0, 2 * s), w / 2, h / 2, rng.normal(0, 0.04))
        img = img + body * abmd * 0.55
        for side in (-1, 1):  # transverse processes
            img = img + _rot_box(yy, xx, cy + h * 0.3, cx + side * (w / 2 + 10 * s), 10 * s, 3 * s, 0) * abmd * 0.25
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5 * s)
    img = img * (1 + 0.08 * texture) + rng.normal(0, 0.015, img.shape)
    img = ndimage.gaussian_filter(img, 0.8 * s)
    return (np.clip(img / 1.0, 0, 1) * 255).astype(np.uint8)
