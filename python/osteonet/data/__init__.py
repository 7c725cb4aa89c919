"""osteonet.data: data sets and augmentations (detection over COCO-style JSON for now)."""

from . import transforms
from .coco import CocoDetection, collate, read_image

__all__ = ["CocoDetection", "collate", "read_image", "transforms"]
