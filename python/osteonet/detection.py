"""Faster R-CNN detectors (DSNet, seed 000) and detection ops backed by osteonet's C++ core.

Input and output formats are torchvision's: a list of C x H x W images (values in [0, 1]); in
training, targets as dicts with ``boxes`` (K x 4, x1 y1 x2 y2) and ``labels`` (K, int64), returning a
dict of losses; in evaluation, a list of dicts with ``boxes``, ``labels`` and ``scores``. Parameter
names equal torchvision's, so ``load_state_dict(torchvision_model.state_dict())`` works for
``fasterrcnn_resnet50_fpn`` and ``fasterrcnn_mobilenet_v3_large_fpn``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from . import _core
from .models import CppModule

__all__ = ["create_detector", "Detector", "DETECTOR_NAMES", "nms", "batched_nms", "roi_align", "box_iou"]

DETECTOR_NAMES = tuple(e["name"] for e in _core.registry_entries("detector"))

def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.nms`` on LibTorch ops (indices kept, by decreasing score)."""
    return _core.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.batched_nms``: NMS within each category of ``idxs``."""
    return _core.batched_nms(boxes, scores, idxs, float(iou_threshold))


def roi_align(input: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align`` (rois as K x 5 tensor) on LibTorch ops, differentiable w.r.t. ``input``."""
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    return _core.roi_align(input, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of N x 4 and M x 4 boxes."""
    return _core.box_iou(a, b)


def create_detector(name: str = "fasterrcnn", backbone: Optional[str] = None, attention: Optional[str] = None,
                    num_classes: Optional[int] = None, fpn: Optional[bool] = None, **options: Any) -> "Detector":
    """Builds a Faster R-CNN as a ``torch.nn.Module`` (the same as ``osteonet.create_model(name, ...)``).

    Args:
        name: ``"fasterrcnn"`` (any supported backbone) or torchvision's ``"fasterrcnn_resnet50_fpn"`` /
            ``"fasterrcnn_mobilenet_v3_large_fpn"`` (backbone and fpn fixed: passing them is an error).
        backbone: resnet18/34/50/101, dsnet_resnet50, vgg16(_bn), mobilenet_v2, mobilenet_v3_large
            (default resnet50).
        attention: ``None``/``"none"``, ``"se"``, ``"eca"``, ``"sk"``, ``"ds"`` (``attention_placement`` and
            ``attn_*`` keywords as in :func:`osteonet.create_model`).
        num_classes: classes including the background (default 91, COCO's).
        fpn: a feature pyramid over the body (else the body's last map alone; default True).
        **options: torchvision's FasterRCNN keywords and defaults: ``min_size`` (800), ``max_size`` (1333),
            ``rpn_pre_nms_top_n_train/test``, ``rpn_post_nms_top_n_train/test``, ``rpn_nms_thresh``,
            ``rpn_fg_iou_thresh``, ``rpn_bg_iou_thresh``, ``rpn_batch_size_per_image``,
            ``rpn_positive_fraction``, ``rpn_score_thresh``, ``box_score_thresh``, ``box_nms_thresh``,
            ``box_detections_per_img``, ``box_fg_iou_thresh``, ``box_bg_iou_thresh``,
            ``box_batch_size_per_image``, ``box_positive_fraction``; plus ``fpn_channels`` (256) and
            ``representation_size`` (1024); ``frozen_bn`` (ResNet bodies: torchvision's FrozenBatchNorm2d,
            the layout of its pretrained COCO weights) and ``trainable_backbone_layers`` (torchvision's
            rule; default 3 with ``frozen_bn``, else all). ``osteonet.models.model_info(name)["options"]``
            lists them with their defaults.
    """
    from .models import _check_family, create_model

    _check_family(name, "detector", "create_detector")
    if backbone is not None and not isinstance(backbone, str):
        raise TypeError(f"create_detector: backbone must be a str, got {type(backbone).__name__}")
    if fpn is not None and not isinstance(fpn, bool):
        raise TypeError(f"create_detector: fpn must be a bool, got {type(fpn).__name__}")
    given = {k: v for k, v in (("backbone", backbone), ("fpn", fpn)) if v is not None}
    return create_model(name, num_classes=num_classes, attention=attention, **given, **options)


def _check_images(images: Any, where: str) -> List[torch.Tensor]:
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images.unbind(0))
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"{where}: expected a list of C x H x W tensors, got {type(images).__name__}")
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{where}: image {i} must be a torch.Tensor, got {type(img).__name__}")
        if img.dim() != 3:
            raise ValueError(f"{where}: image {i} must be C x H x W, got shape {tuple(img.shape)}")
    return list(images)


class Detector(CppModule):
    """A Faster R-CNN. ``forward(images, targets=None)``: losses (training) or detections (eval).

    Its tensor-in, tensor-out submodules (body stages, FPN blocks, the RPN head's convolutions,
    ``roi_heads.box_head``, ``roi_heads.box_predictor``) can be hooked or replaced, e.g. torchvision's
    fine-tuning idiom ``model.roi_heads.box_predictor = FastRCNNPredictor(1024, num_classes)``; the
    parts that take images and targets (transform, backbone, rpn, roi_heads) cannot."""

    def forward(self, images: Sequence[torch.Tensor], targets: Optional[List[Dict[str, torch.Tensor]]] = None) -> Any:
        self._check_not_fx(images)
        images = _check_images(images, self.model_name)
        if self.training and targets is None:
            raise ValueError(f"{self.model_name}: targets are required in training mode")
        if targets is not None:
            if not isinstance(targets, (list, tuple)):
                raise TypeError(f"{self.model_name}: targets must be a list of dicts, got {type(targets).__name__}")
            targets = [dict(t) if isinstance(t, dict) else t for t in targets]
        self._sync()
        return self._cpp.forward(images, targets if self.training else None)

    @property
    def num_classes(self) -> int:
        """Classes including the background, also after ``roi_heads.box_predictor`` was replaced."""
        predictor = self._module_at("roi_heads.box_predictor")
        slot = self._osteonet_state.slots.get(id(predictor))
        if slot is not None and not slot.modified():
            return self._cpp.num_classes
        cls_score = getattr(predictor, "cls_score", None)
        if isinstance(cls_score, nn.Linear):
            return cls_score.out_features
        raise AttributeError(f"{self.model_name}.num_classes: roi_heads.box_predictor was replaced by a "
                             f"{type(predictor).__name__} without a cls_score Linear")

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}, num_classes={self._cpp.num_classes}"
