"""Segmentation (seeds 003, 004): U-Net (classic or with any osteonet backbone as encoder), U-Net++
with deep supervision, Dice / cross-entropy / combined losses, sliding-window inference and region
matting. C++: include/osteonet/segmentation/."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import _core
from .models import CppModule

__all__ = ["list_segmenters", "create_segmenter", "Segmenter", "dice_loss", "cross_entropy_loss", "combined_loss",
           "sliding_window_inference", "mat_region", "segmentation_step", "balanced_class_weights", "predict_labels", "keep_largest_component"]

_s = _core.segmentation


def list_segmenters() -> List[str]:
    return [e["name"] for e in _core.registry_entries("segmenter")]


def create_segmenter(name: str = "unet", in_chans: Optional[int] = None, num_classes: Optional[int] = None,
                     **options: Any) -> "Segmenter":
    """"unet" (in_chans=1, num_classes=2, encoder=None|"resnet34"|..., base_channels=64, depth=4) or
    "unet_plusplus" (base_channels=32, depth=4, deep_supervision=False, fast_inference=False); the same
    as ``osteonet.create_model(name, ...)``. Unknown names or keywords raise ValueError."""
    from .models import _check_family, create_model

    _check_family(name, "segmenter", "create_segmenter")
    if options.get("encoder", "") is None:
        options.pop("encoder")
    return create_model(name, num_classes=num_classes, in_chans=in_chans, **options)


class Segmenter(CppModule):
    """Logits N x num_classes x H x W. With deep supervision in training mode: a list of logits, one
    per U-Net++ head (average the losses); in eval: their mean (or the last with fast_inference)."""

    def __init__(self, cpp: Any, name: str, config: Dict[str, Any]) -> None:
        self.__dict__["_impl"] = _s.as_segmenter(cpp)
        super().__init__(cpp, name, config)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        self._check_not_fx(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.model_name}: expected a torch.Tensor, got {type(x).__name__}")
        self._sync()
        if self.training and self.config.get("deep_supervision"):
            return list(self._impl.forward_all(x))
        return self._impl.forward(x)

    @property
    def num_classes(self) -> int:
        return self._impl.num_classes

    @property
    def in_chans(self) -> int:
        return self._impl.in_chans


def dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = True, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss: softmax over C >= 2 classes (target: N x H x W indices) or a sigmoid for one
    channel (target: N x [1 x] H x W of 0/1)."""
    return _s.dice_loss(logits, target, include_background, eps)


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _s.cross_entropy_loss(logits, target)


def combined_loss(logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0, dice_weight: float = 1.0) -> torch.Tensor:
    return _s.combined_loss(logits, target, ce_weight, dice_weight)


def sliding_window_inference(model: Union["Segmenter", Callable[[torch.Tensor], torch.Tensor]], image: torch.Tensor,
                             window: Sequence[int], overlap: float = 0.5, blend: str = "gaussian") -> torch.Tensor:
    """Blends `model` over overlapping windows of `image` (N x C x H x W); a window covering the
    image runs the model once, so the result equals whole-image inference."""
    window = [int(w) for w in window]
    with torch.no_grad():
        if isinstance(model, Segmenter) and not model.python_modified():
            model._sync()
            return _s.sliding_window_segmenter(model._impl, image, window, overlap, blend)
        return _s.sliding_window_callable(model, image, window, overlap, blend)


def mat_region(image: torch.Tensor, mask: torch.Tensor, size: int = 224, margin: float = 0.1) -> torch.Tensor:
    """image · mask cropped to the mask's box (+ margin) and resized to size x size (C x H x W in and out)."""
    return _s.mat_region(image, mask, size, margin)


def segmentation_step(ce_weight: float = 1.0, dice_weight: float = 1.0,
                      class_weights: Optional[Sequence[float]] = None) -> Callable:
    """A training step for :class:`osteonet.train.Trainer`: ``batch = (images, labels)`` (N x C x H x W,
    N x H x W class indices), combined loss; with deep supervision, the mean over the heads' losses.
    `class_weights` (one per class) weight the cross-entropy term, e.g. :func:`balanced_class_weights`
    for small structures such as Ward's triangle."""
    w = None if class_weights is None else torch.as_tensor([float(v) for v in class_weights], dtype=torch.float32)

    def loss_of(logits, y):
        if w is None:
            return combined_loss(logits, y, ce_weight, dice_weight)
        if logits.shape[1] != w.numel():
            raise ValueError(f"segmentation_step: one class weight per class, got {w.numel()} weights for "
                             f"{logits.shape[1]} classes")
        return ce_weight * F.cross_entropy(logits, y, weight=w.to(logits)) + dice_weight * dice_loss(logits, y)

    def step(model, batch):
        x, y = batch
        out = model(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return sum(loss_of(o, y) for o in outs) / len(outs)

    return step


def balanced_class_weights(labels: torch.Tensor, num_classes: int, power: float = 0.5) -> List[float]:
    """Weights (frequency of each class in `labels`) ** -power, scaled to mean 1; absent classes get the
    largest weight."""
    counts = torch.bincount(labels.reshape(-1).long(), minlength=num_classes)[:num_classes].double()
    if counts.sum() == 0:
        raise ValueError("balanced_class_weights: labels are empty")
    freq = counts / counts.sum()
    w = torch.where(freq > 0, freq.clamp_min(1e-12) ** -power, torch.zeros_like(freq))
    w = torch.where(freq > 0, w, w.max())
    return (w / w.mean()).tolist()


def predict_labels(model: torch.nn.Module, images: torch.Tensor, out_size: Optional[Sequence[int]] = None,
                   batch_size: int = 8) -> torch.Tensor:
    """Class indices (N x H x W, int64) of `images` (N x C x h x w) in eval mode; with `out_size` the
    logits are first resized bilinearly to it (segment at a low resolution, measure at the original)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"predict_labels: images must be an N x C x H x W tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], max(1, int(batch_size))):
            logits = model(images[i:i + batch_size])
            if out_size is not None:
                logits = torch.nn.functional.interpolate(logits, size=tuple(int(s) for s in out_size), mode="bilinear",
                                                         align_corners=False)
            out.append(logits.argmax(1))
    model.train(was)
    return torch.cat(out)


def keep_largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected component of a 2-D mask (bool H x W); an empty mask stays empty. Removes
    the stray blobs a segmentation leaves, which would otherwise widen a matting box."""
    from scipy import ndimage

    m = mask.detach().cpu().numpy().astype(bool)
    if m.ndim != 2:
        raise ValueError(f"keep_largest_component: mask must be H x W, got shape {tuple(mask.shape)}")
    lab, n = ndimage.label(m, structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    if n <= 1:
        return torch.from_numpy(m)
    sizes = ndimage.sum(m, lab, index=range(1, n + 1))
    return torch.from_numpy(lab == (1 + int(sizes.argmax())))
