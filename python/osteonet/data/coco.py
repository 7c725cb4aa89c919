"""Detection data in COCO's JSON layout over image files (PNG, JPEG, DICOM)."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .._errors import first_line

__all__ = ["CocoDetection", "read_image", "collate"]


def read_image(path: str, channels: int = 3, window: Tuple[float, float] = (400.0, 1800.0)) -> torch.Tensor:
    """A PNG/JPEG/DICOM as a C x H x W float tensor in [0, 1] (8- and 16-bit; grey replicated to 3
    channels when ``channels`` is 3). DICOM (``.dcm``/``.dicom``) goes to modality units (HU for CT)
    through its rescale slope and intercept, then through ``window`` = (center, width), by default the
    bone window that osteonet's PNGs of the built-in CT use. An unreadable file raises one ValueError
    naming it."""
    from PIL import Image, UnidentifiedImageError

    if os.path.splitext(path)[1].lower() in (".dcm", ".dicom"):
        from ..io import read_dicom, window as hu_window

        arr = hu_window(read_dicom(path)[0], *window)[..., None].astype(np.float64)
        return _channels(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float(), channels)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64) / 65535.0
                arr = arr[..., None]
            else:
                img = img.convert("L" if channels == 1 else "RGB")
                arr = np.asarray(img, dtype=np.float64) / 255.0
                if arr.ndim == 2:
                    arr = arr[..., None]
    except FileNotFoundError:
        raise ValueError(f"image {path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"image {path}: not a readable PNG/JPEG ({first_line(e)})") from None
    return _channels(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float(), channels)


def _channels(t: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 3 and t.shape[0] == 1:
        return t.expand(3, -1, -1).clone()
    if channels == 1 and t.shape[0] == 3:
        return t.mean(0, keepdim=True)
    return t


def collate(batch: List[Tuple[torch.Tensor, Dict[str, torch.Tensor]]]):
    """For torch's DataLoader: images and targets as lists (detection images may differ in size)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class CocoDetection(torch.utils.data.Dataset):
    """``(image, target)`` pairs from a COCO-style annotation file: ``image`` C x H x W float in [0, 1],
    ``target`` with ``boxes`` (K x 4, x1 y1 x2 y2 pixels), ``labels`` (K, int64, 1..num_categories in the
    order of increasing category id; 0 is the background), ``image_id``, ``area``, ``iscrowd``.

    Args:
        root: folder the images' ``file_name`` are relative to.
        ann_file: the JSON file (``images``, ``annotations``, ``categories``).
        transforms: ``transforms(image, target) -> (image, target)`` (see osteonet.data.transforms).
        channels: 3 (RGB; grey replicated) or 1.
        skip_empty: leave out images without annotations (training); keep them for evaluation.

    Raises ValueError naming the file for a missing/invalid JSON, a box outside its image or with no
    area, an annotation of an unknown image or category, and (on access) an unreadable image.
    """

    def __init__(self, root: str, ann_file: str, transforms: Optional[Callable] = None, channels: int = 3,
                 skip_empty: bool = False) -> None:
        if channels not in (1, 3):
            raise ValueError(f"CocoDetection: channels must be 1 or 3, got channels={channels}")
        self.root, self.ann_file, self.transforms, self.channels = root, ann_file, transforms, channels
        try:
            with open(ann_file) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"annotations {ann_file}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"annotations {ann_file}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"annotations {ann_file}: expected a JSON object, got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"annotations {ann_file}: needs a list '{key}'")
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.categories = [str(c.get("name", c["id"])) for c in cats]
        self._label = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        images = {}
        for img in data["images"]:
            try:
                images[int(img["id"])] = {"file_name": str(img["file_name"]), "width": img.get("width"),
                                          "height": img.get("height"), "anns": []}
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"annotations {ann_file}: an image entry needs 'id' and 'file_name', got {img!r}") from None
        for ann in data["annotations"]:
            where = f"annotations {ann_file}: annotation {ann.get('id', '?')}"
            iid = ann.get("image_id")
            if iid not in images:
                raise ValueError(f"{where}: unknown image_id={iid!r}")
            if ann.get("category_id") not in self._label:
                raise ValueError(f"{where}: unknown category_id={ann.get('category_id')!r}")
            bbox = ann.get("bbox")
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise ValueError(f"{where}: bbox must be [x, y, width, height], got bbox={bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            if not (w > 0 and h > 0):
                raise ValueError(f"{where}: bbox must have a positive width and height, got bbox={bbox!r}")
            im = images[iid]
            if x < 0 or y < 0 or (im["width"] and x + w > im["width"] + 1e-3) or (im["height"] and y + h > im["height"] + 1e-3):
                raise ValueError(f"{where}: bbox lies outside the {im['width']}x{im['height']} image "
                                 f"'{im['file_name']}', got bbox={bbox!r}")
            im["anns"].append((x, y, x + w, y + h, self._label[ann["category_id"]], float(ann.get("area", w * h)),
                               int(ann.get("iscrowd", 0))))
        self.ids = [i for i in sorted(images) if images[i]["anns"] or not skip_empty]
        self._images = images

    @property
    def num_classes(self) -> int:
        """Categories plus the background (what a detector's ``num_classes`` takes)."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, index: int) -> Dict[str, torch.Tensor]:
        """The annotations of one image without reading the image."""
        im = self._images[self.ids[index]]
        a = im["anns"]
        return {
            "boxes": torch.tensor([r[:4] for r in a], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([r[4] for r in a], dtype=torch.int64),
            "image_id": torch.tensor(self.ids[index], dtype=torch.int64),
            "area": torch.tensor([r[5] for r in a], dtype=torch.float32),
            "iscrowd": torch.tensor([r[6] for r in a], dtype=torch.int64),
        }

    def __getitem__(self, index: int):
        im = self._images[self.ids[index]]
        image = read_image(os.path.join(self.root, im["file_name"]), self.channels)
        target = self.target(index)
        if im["width"] and im["height"] and tuple(image.shape[1:]) != (im["height"], im["width"]):
            raise ValueError(f"image {os.path.join(self.root, im['file_name'])}: is {image.shape[2]}x{image.shape[1]}, "
                             f"the annotations say {im['width']}x{im['height']}")
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
