"""Augmentations and preprocessing: each takes and returns ``(image, target)`` and moves the boxes and
masks with the image.

``target`` is a dict (it may be empty): ``boxes`` (N x 4, x1 y1 x2 y2 in pixels) move with the image;
``masks`` move with it too, either one per box (N x H x W, instance masks, kept or dropped with their
box) or one label map (H x W, integer class per pixel); geometric transforms resample masks by nearest
neighbour, so labels stay labels. Intensity transforms (``ColorJitter``, ``HUWindow``,
``SubtractPixelMean``, ``GreyToRGB``) leave the target alone.

Random draws come from torch's global generator, so a seeded run (and a resumed one) augments alike.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Compose", "RandomHorizontalFlip", "Resize", "RandomResize", "RandomRotation", "RandomTranslation", "ColorJitter",
           "HUWindow", "SubtractPixelMean", "GreyToRGB"]

Target = Dict[str, torch.Tensor]


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _keep(target: Target, keep: torch.Tensor) -> Target:
    n = target["boxes"].shape[0]
    per_box = lambda k, v: isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n and not (k == "masks" and v.dim() == 2)
    return {k: (v[keep] if per_box(k, v) else v) for k, v in target.items()}


def _check_masks(image: torch.Tensor, target: Target, where: str) -> None:
    m = target.get("masks")
    if m is None:
        return
    if not isinstance(m, torch.Tensor) or m.dim() not in (2, 3) or tuple(m.shape[-2:]) != tuple(image.shape[-2:]):
        got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise ValueError(f"{where}: masks must be H x W or N x H x W with the image's H x W = {tuple(image.shape[-2:])}, got {got}")


def _warp_masks(target: Target, fn: Callable[[torch.Tensor], torch.Tensor]) -> Target:
    """Applies a geometric warp ``fn`` (on a float N x 1 x H x W batch, nearest) to the masks, keeping their dtype."""
    m = target.get("masks")
    if m is None:
        return target
    target = dict(target)
    x = m.to(torch.float32)
    x = x[None, None] if m.dim() == 2 else x[:, None]
    y = fn(x)
    y = y[0, 0] if m.dim() == 2 else y[:, 0]
    target["masks"] = y.round().to(m.dtype) if not m.dtype.is_floating_point else y
    return target


def _clip_boxes(target: Target, boxes: torch.Tensor, h: int, w: int, min_size: float) -> Target:
    """``boxes`` (moved) clipped to the W x H image; boxes left narrower than ``min_size`` are dropped
    with everything that is per box (labels, instance masks); ``area`` follows the clipped boxes."""
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h)
    target["boxes"] = boxes
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    target = _keep(target, keep)
    if "area" in target:
        t = target["boxes"]
        target["area"] = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    return target


def _boxes(target: Target) -> torch.Tensor:
    return target.get("boxes", torch.zeros(0, 4))


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
        _check_masks(image, target, "RandomHorizontalFlip")
        w = image.shape[-1]
        target = dict(target)
        if "boxes" in target:
            b = target["boxes"].clone()
            b[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
            target["boxes"] = b
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image.flip(-1), target


def _resize(image, target, out_h: int, out_w: int):
    _check_masks(image, target, "Resize")
    h, w = image.shape[-2:]
    image = F.interpolate(image[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
    target = _warp_masks(dict(target), lambda m: F.interpolate(m, size=(out_h, out_w), mode="nearest"))
    if "boxes" in target:
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
    narrower than ``min_size`` are dropped (with their instance masks); masks turn with the image
    (nearest neighbour, zero outside)."""
    _check_masks(image, target, "RandomRotation")
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
    target = _warp_masks(dict(target), lambda m: F.grid_sample(m, grid.expand(m.shape[0], -1, -1, -1).to(m.dtype),
                                                                mode="nearest", padding_mode="zeros", align_corners=False))
    b = _boxes(target)
    if b.numel():
        xs = b[:, [0, 2, 2, 0]] - cx
        ys = b[:, [1, 1, 3, 3]] - cy
        rx = c * xs + s * ys + cx
        ry = -s * xs + c * ys + cy
        nb = torch.stack([rx.min(1).values, ry.min(1).values, rx.max(1).values, ry.max(1).values], 1)
        target = _clip_boxes(target, nb, h, w, min_size)
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


def translate(image: torch.Tensor, target: Target, dx: int, dy: int, min_size: float = 1.0):
    """Shifts by whole pixels (``dx`` right, ``dy`` down), same size, zeros shifted in; boxes move and are
    clipped to the image, boxes left narrower than ``min_size`` are dropped (with their instance masks);
    masks move with the image."""
    _check_masks(image, target, "RandomTranslation")
    h, w = image.shape[-2:]
    dx, dy = int(dx), int(dy)

    def shift(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        if abs(dx) < w and abs(dy) < h:
            out[..., yd, xd] = x[..., ys, xs]
        return out

    target = dict(target)
    if "masks" in target:
        target["masks"] = shift(target["masks"])
    b = _boxes(target)
    if b.numel():
        nb = b + torch.tensor([dx, dy, dx, dy], dtype=b.dtype)
        target = _clip_boxes(target, nb, h, w, min_size)
    return shift(image), target


class RandomTranslation:
    """Shifts by whole pixels drawn uniformly from [-max_shift, max_shift] times the width (x) and the
    height (y) (seed 002's random horizontal shift is ``RandomTranslation(0.1, vertical=False)``)."""

    def __init__(self, max_shift: float = 0.1, vertical: bool = True, p: float = 1.0) -> None:
        if not 0 <= max_shift < 1:
            raise ValueError(f"RandomTranslation: needs 0 <= max_shift < 1 (a fraction of the size), got max_shift={max_shift}")
        self.max_shift, self.vertical, self.p = float(max_shift), vertical, p

    def __call__(self, image, target):
        if float(torch.rand(())) >= self.p:
            return image, target
        h, w = image.shape[-2:]
        dx = round(_uniform(-self.max_shift, self.max_shift) * w)
        dy = round(_uniform(-self.max_shift, self.max_shift) * h) if self.vertical else 0
        return translate(image, target, dx, dy)


class HUWindow:
    """CT intensity window to [0, 1]: values in Hounsfield units, ``center`` +- ``width``/2 mapped to 0..1
    and clipped (bone: center 400, width 1800; the same arithmetic as ``osteonet.io.window``)."""

    def __init__(self, center: float = 400.0, width: float = 1800.0) -> None:
        if width <= 0:
            raise ValueError(f"HUWindow: width must be positive, got width={width}")
        self.center, self.width = float(center), float(width)

    def __call__(self, image, target):
        lo = self.center - self.width / 2.0
        return ((image.to(torch.float32) - lo) / self.width).clamp(0.0, 1.0), target


class SubtractPixelMean:
    """Subtracts a per-pixel mean image (seed 002: the training set's mean slice), or a scalar or
    per-channel mean; the mean must broadcast against the image."""

    def __init__(self, mean) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32)

    def __call__(self, image, target):
        try:
            return image - self.mean.to(image.dtype), target
        except RuntimeError:
            raise ValueError(f"SubtractPixelMean: mean of shape {tuple(self.mean.shape)} does not broadcast "
                             f"against an image of shape {tuple(image.shape)}") from None


class GreyToRGB:
    """Copies a one-channel image (1 x H x W or H x W) to three channels, for ImageNet-shaped backbones."""

    def __call__(self, image, target):
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"GreyToRGB: expected a 1 x H x W (or H x W) image, got shape {tuple(image.shape)}")
        return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image, target


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
