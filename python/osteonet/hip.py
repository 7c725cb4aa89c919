"""Hip radiographs (seed 004): a multi-class segmentation (U-Net or U-Net++) of the femoral neck, greater
trochanter, Ward's triangle and total hip, each region matted out of the image and classified into WHO
T-score classes by a DenseNet121 (one per region, as the paper compares regions).

Label maps (osteonet.synth.generate_hip_dataset): 0 background, 1 femoral neck, 2 greater trochanter,
3 Ward's triangle, 4 the rest of the total hip. The regions overlap (Ward's triangle lies in the neck;
the total hip holds the neck and trochanter), so a region is a set of labels (HIP_LABELS) and the
segmenter predicts the 5 disjoint labels. The reproduction is osteonet/reproduce/hip.py.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

from . import metrics as om

__all__ = ["HIP_REGIONS", "HIP_LABELS", "NUM_HIP_LABELS", "region_mask", "region_masks", "region_iou",
           "create_region_classifier"]

HIP_REGIONS = ("femoral_neck", "greater_trochanter", "wards_triangle", "total_hip")
#: region -> the label-map values it covers
HIP_LABELS: Dict[str, tuple] = {"femoral_neck": (1, 3), "greater_trochanter": (2,), "wards_triangle": (3,),
                                "total_hip": (1, 2, 3, 4)}
NUM_HIP_LABELS = 5


def region_mask(labels: torch.Tensor, region: str) -> torch.Tensor:
    """Bool mask of `region` in a label map (any shape)."""
    if region not in HIP_LABELS:
        raise ValueError(f"region_mask: region must be one of {list(HIP_REGIONS)}, got region={region!r}")
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    out = torch.zeros(labels.shape, dtype=torch.bool)
    for v in HIP_LABELS[region]:
        out |= labels == v
    return out


def region_masks(labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {r: region_mask(labels, r) for r in HIP_REGIONS}


def region_iou(pred_labels: torch.Tensor, true_labels: torch.Tensor) -> Dict[str, np.ndarray]:
    """Per-image IoU of each region between predicted and reference label maps (N x H x W): region ->
    array of N (NaN where the region is absent from both)."""
    if tuple(pred_labels.shape) != tuple(true_labels.shape) or pred_labels.dim() != 3:
        raise ValueError(f"region_iou: label maps must both be N x H x W, got {tuple(pred_labels.shape)} and "
                         f"{tuple(true_labels.shape)}")
    out = {}
    for r in HIP_REGIONS:
        p, t = region_mask(pred_labels, r).long(), region_mask(true_labels, r).long()
        out[r] = np.asarray(om.iou(p, t, num_classes=2, reduction="none"))[:, 0]
    return out


def create_region_classifier(name: str = "densenet121", num_classes: int = 3, in_chans: int = 1,
                             **options: Any) -> torch.nn.Module:
    """A classifier of one matted region into T-score classes (0 normal, 1 osteopenia, 2 osteoporosis)."""
    import osteonet

    return osteonet.create_model(name, num_classes=num_classes, in_chans=in_chans, **options)
