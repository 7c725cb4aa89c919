"""Bone mineral density from CT (seed 003): the vertebral body is segmented (U-Net), cut out of the
slice ("matting": image x mask, cropped to the mask's box, resized), and a DenseNet-121 with a one-output
regression head predicts trabecular BMD in mg/cm³ from the cut-out; ACR classes follow from the BMD
(osteonet.clinical). The model learns a normalised target ((BMD - mean) / SD of the training set), and
everything it reports is in mg/cm³. The reproduction is osteonet/reproduce/bmd.py.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import clinical
from . import metrics as om
from .segmentation import keep_largest_component, mat_region

__all__ = ["TargetScaler", "create_bmd_regressor", "mat_batch", "regression_step", "predict_values", "predict_bmd",
           "bmd_agreement"]


class TargetScaler:
    """(y - mean) / std for training a regression head, and back to the original units."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"TargetScaler: std must be positive, got std={std}")
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def fit(cls, values: Sequence[float]) -> "TargetScaler":
        v = np.asarray(values, dtype=np.float64)
        if v.size < 2 or not np.all(np.isfinite(v)):
            raise ValueError(f"TargetScaler.fit: need at least 2 finite values, got {v.size} values")
        return cls(float(v.mean()), float(v.std()) or 1.0)

    def normalize(self, y):
        return (y - self.mean) / self.std

    def denormalize(self, z):
        return z * self.std + self.mean

    def state_dict(self) -> Dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    def __repr__(self) -> str:
        return f"TargetScaler(mean={self.mean:.4g}, std={self.std:.4g})"


def create_bmd_regressor(name: str = "densenet121", in_chans: int = 1, **options: Any) -> torch.nn.Module:
    """A registered backbone (DenseNet-121 as in seed 003) whose classifier is a single output: BMD
    (normalised) regression. Options as osteonet.create_model (e.g. ``dropout``)."""
    import osteonet

    return osteonet.create_model(name, num_classes=1, in_chans=in_chans, **options)


def mat_batch(images: torch.Tensor, masks: torch.Tensor, size: int = 64, margin: float = 0.1,
              largest_component: bool = True, fallback: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[bool]]:
    """Cut-outs (N x C x size x size) of the regions `masks` (N x H x W, bool or 0/1) in `images` (N x C x H x W).

    With `largest_component`, stray blobs are dropped first. An empty mask takes the matching mask of
    `fallback` (e.g. the reference mask while training) or, without one, the whole image; the second
    result says which masks were empty.
    """
    if not isinstance(images, torch.Tensor) or not isinstance(masks, torch.Tensor):
        raise TypeError(f"mat_batch: images and masks must be tensors, got {type(images).__name__} and {type(masks).__name__}")
    if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[1:]:
        raise ValueError(f"mat_batch: images must be N x C x H x W and masks N x H x W of the same N, H, W, got "
                         f"images={tuple(images.shape)} masks={tuple(masks.shape)}")
    crops, empty = [], []
    for i in range(images.shape[0]):
        m = masks[i].bool()
        if largest_component:
            m = keep_largest_component(m)
        is_empty = not bool(m.any())
        if is_empty:
            m = fallback[i].bool() if fallback is not None else torch.ones_like(m)
        crops.append(mat_region(images[i], m, size, margin))
        empty.append(is_empty)
    return torch.stack(crops), empty


def regression_step(loss: str = "mse") -> Callable:
    """A Trainer step for ``batch = (x, y)`` with y the normalised target (N): ``"mse"`` or ``"smooth_l1"``."""
    if loss not in ("mse", "smooth_l1"):
        raise ValueError(f"regression_step: loss must be 'mse' or 'smooth_l1', got loss={loss!r}")
    fn = torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.smooth_l1_loss

    def step(model, batch):
        x, y = batch
        return fn(model(x).reshape(-1), y.reshape(-1).to(torch.float32))

    return step


def predict_values(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """The model's single output for each of N inputs, in eval mode (float64 array of N)."""
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], max(1, int(batch_size))):
            out.append(model(x[i:i + batch_size]).reshape(-1).double())
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0)


def predict_bmd(model: torch.nn.Module, crops: torch.Tensor, scaler: TargetScaler, batch_size: int = 32) -> np.ndarray:
    """BMD in mg/cm³ of matted crops (N x C x S x S) from a regressor trained on ``scaler``-normalised targets."""
    return scaler.denormalize(predict_values(model, crops, batch_size))


def bmd_agreement(reference: Sequence[float], predicted: Sequence[float], alpha: float = 0.05) -> Dict[str, Any]:
    """How predicted BMD (mg/cm³) agrees with the reference: Pearson r with its Fisher interval,
    Bland–Altman (bias, limits, their intervals), MAE, RMSE, and the ACR class accuracy (Wilson interval)
    with its confusion matrix (classes 0 normal > 120, 1 osteopenia 80-120, 2 osteoporosis < 80)."""
    ref, pred = np.asarray(reference, np.float64), np.asarray(predicted, np.float64)
    if ref.shape != pred.shape or ref.ndim != 1 or ref.size < 4:
        raise ValueError(f"bmd_agreement: need two 1-D arrays of equal length >= 4, got shapes {ref.shape} and {pred.shape}")
    r = om.pearson(ref, pred, alpha)
    ba = om.bland_altman(ref, pred, alpha)
    ct, cp = clinical.acr_class(ref), clinical.acr_class(pred)
    correct = int((ct == cp).sum())
    lo, hi = om.proportion_ci(correct, ref.size, "wilson", alpha)
    return {"n": int(ref.size), "pearson": r, "bland_altman": {k: (list(v) if isinstance(v, (tuple, list)) else v)
                                                                 for k, v in ba.items()},
            "mae": om.mae(ref, pred), "rmse": om.rmse(ref, pred), "class_accuracy": correct / ref.size,
            "class_accuracy_ci": [lo, hi], "confusion_matrix": om.confusion_matrix(ct, cp, 3).tolist()}
