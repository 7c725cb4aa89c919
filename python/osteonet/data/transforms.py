"""Detection augmentations: each takes and returns ``(image, target)`` and moves the boxes with the image.

Random draws come from torch's global generator, so a seeded run (and a resumed one) augments alike.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Compose", "RandomHorizontalFlip", "Resize", "RandomResize", "RandomRotation", "ColorJitter"]

Target = Dict[str, torch.Tensor]


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _keep(target: Target, keep: torch.Tensor) -> Target:
    n = target["boxes"].shape[0]
    return {k: (v[keep] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v) for k, v in target.items()}


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> Tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomHorizontalFlip:
    """Mirrors left-right with probability ``p``: x1' = W - x2, x2' = W - x1."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image, target):
        if float(torch.rand(())) >= self.p:
            return image, target
        w = image.shape[-1]
        target = dict(target)
        b = target["boxes"].clone()
        b[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
        target["boxes"] = b
        return image.flip(-1), target


def _resize(image, target, out_h: int, out_w: int):
    h, w = image.shape[-2:]
    image = F.interpolate(image[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
    target = dict(target)
    scale = torch.tensor([out_w / w, out_h / h, out_w / w, out_h / h], dtype=target["boxes"].dtype)
    target["boxes"] = target["boxes"] * scale
    if "area" in target:
        target["area"] = target["area"] * (out_w / w) * (out_h / h)
    return image, target


class Resize:
    """To ``size`` = (H, W); boxes scaled per axis."""

    def __init__(self, size: Tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image, target):
        return _resize(image, target, *self.size)


class RandomResize:
    """Scales both sides by one factor drawn uniformly from [min_scale, max_scale]."""

    def __init__(self, min_scale: float = 0.8, max_scale: float = 1.2) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"RandomResize: needs 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, image, target):
        s = _uniform(self.min_scale, self.max_scale)
        h, w = image.shape[-2:]
        return _resize(image, target, max(1, round(h * s)), max(1, round(w * s)))


def rotate(image: torch.Tensor, target: Target, degrees: float, min_size: float = 1.0):
    """Rotates by ``degrees`` (counter-clockwise on screen) about the image centre, same size, zeros
    outside; each box becomes the bounds of its rotated corners, clipped to the image; boxes left
    narrower than ``min_size`` are dropped."""
    h, w = image.shape[-2:]
    th = math.radians(degrees)
    c, s = math.cos(th), math.sin(th)
    cx, cy = w / 2.0, h / 2.0
    # Output pixel centre (u, v) samples the input at the inverse rotation (y grows downwards, so a
    # counter-clockwise turn on screen is x' = c x + s y, y' = -s x + c y about the centre).
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
    du, dv = u - cx, v - cy
    src_x = c * du - s * dv + cx
    src_y = s * du + c * dv + cy
    grid = torch.stack([2 * src_x / w - 1, 2 * src_y / h - 1], dim=-1)[None].to(image.dtype)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    b = target["boxes"]
    target = dict(target)
    if b.numel():
        xs = b[:, [0, 2, 2, 0]] - cx
        ys = b[:, [1, 1, 3, 3]] - cy
        rx = c * xs + s * ys + cx
        ry = -s * xs + c * ys + cy
        nb = torch.stack([rx.min(1).values, ry.min(1).values, rx.max(1).values, ry.max(1).values], 1)
        nb[:, [0, 2]] = nb[:, [0, 2]].clamp(0, w)
        nb[:, [1, 3]] = nb[:, [1, 3]].clamp(0, h)
        target["boxes"] = nb
        keep = ((nb[:, 2] - nb[:, 0]) >= min_size) & ((nb[:, 3] - nb[:, 1]) >= min_size)
        target = _keep(target, keep)
        if "area" in target:
            t = target["boxes"]
            target["area"] = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    return out, target


class RandomRotation:
    """Rotates by an angle drawn uniformly from [-degrees, degrees] (small angles: the axis-aligned
    bounds of a rotated box grow with the angle)."""

    def __init__(self, degrees: float = 5.0, p: float = 1.0) -> None:
        self.degrees, self.p = float(degrees), p

    def __call__(self, image, target):
        if float(torch.rand(())) >= self.p:
            return image, target
        return rotate(image, target, _uniform(-self.degrees, self.degrees))


class ColorJitter:
    """Brightness (x factor) and contrast (about the mean) factors drawn from [1 - b, 1 + b] and
    [1 - c, 1 + c], values clamped to [0, 1]; boxes unchanged."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2) -> None:
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, image, target):
        b = _uniform(1 - self.brightness, 1 + self.brightness)
        c = _uniform(1 - self.contrast, 1 + self.contrast)
        image = image * b
        mean = image.mean()
        image = ((image - mean) * c + mean).clamp(0, 1)
        return image, target
