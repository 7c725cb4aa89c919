"""Inputs as the tasks see them: any image, DICOM file, DICOM series folder or NIfTI becomes a stack of
2-D slices in one orientation (slices x rows x columns; CT volumes as DICOM displays axial slices:
rows towards posterior, columns towards the patient's left, slices towards superior), with its values
(HU for CT, grey levels for images), and what is needed to write a mask back in the input's geometry
(the same array layout and affine: a NIfTI overlays the input in any viewer).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..io import read_dicom, read_dicom_series, read_image, read_nifti, window, write_with
from .layout import volume_kind

__all__ = ["Scan", "read_scan", "input_name", "read_mask", "to_unit", "write_mask_nifti", "write_mask_png", "AXIAL_CODES"]

#: the slice/row/column directions of a DICOM series' array (z, y, x in LPS): what NIfTI volumes are turned into
AXIAL_CODES = ("S", "P", "L")


@dataclasses.dataclass
class Scan:
    """One input: ``array`` (S x H x W float32; S = 1 for a 2-D image), ``kind`` ("image", "dicom",
    "dicom-series", "nifti"), ``affine`` (4 x 4, the native array's voxel -> RAS mm), ``native_codes``
    (NIfTI: the axis codes of the stored array), ``spacing`` (slice, row, column mm; 1 where unknown)."""

    path: str
    kind: str
    array: np.ndarray
    affine: np.ndarray
    native_codes: Optional[Tuple[str, ...]] = None
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def is_volume(self) -> bool:
        return self.kind in ("dicom-series", "nifti")

    @property
    def in_modality_units(self) -> bool:
        """True when the values are physical (HU for CT: DICOM, NIfTI), False for grey levels (PNG, JPEG)."""
        return self.kind != "image"

    def to_native(self, stack: np.ndarray) -> np.ndarray:
        """An S x H x W array in this scan's orientation back to the file's own array layout."""
        stack = np.asarray(stack)
        if self.kind == "nifti":
            from ..sequence import reorient_to_sagittal

            return reorient_to_sagittal(stack, axcodes=AXIAL_CODES, target=self.native_codes)
        return stack if self.kind == "dicom-series" else stack[0]

    def name(self) -> str:
        return input_name(self.path)


def input_name(path: str) -> str:
    """The file or folder name of an input without its image/volume extension (names its outputs)."""
    base = os.path.basename(os.path.normpath(path))
    for ext in (".gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    return base or "input"


def _dicom_affine(meta: Dict[str, Any]) -> np.ndarray:
    o = np.asarray(meta["orientation"], dtype=np.float64)
    dy, dx = meta["pixel_spacing"]
    lps = np.eye(4)
    lps[:3, 0] = o[3:] * dy  # rows
    lps[:3, 1] = o[:3] * dx  # columns
    lps[:3, 3] = meta["position"]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_scan(path: str) -> Scan:
    """Reads ``path`` (see the module docstring). Errors are one ValueError naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: input not found")
    kind = volume_kind(path)
    if kind == "image":
        arr = read_image(path)
        if arr.ndim != 2:
            raise ValueError(f"{path}: expected a grey image, got an array of shape {arr.shape}")
        return Scan(path, kind, arr[None].astype(np.float32), np.eye(4))
    if kind == "dicom":
        arr, meta = read_dicom(path)
        if arr.ndim != 2:
            raise ValueError(f"{path}: expected one DICOM image, got an array of shape {arr.shape}")
        dy, dx = meta["pixel_spacing"]
        return Scan(path, kind, arr[None].astype(np.float32), _dicom_affine(meta), spacing=(1.0, dy, dx))
    if kind == "dicom-series":
        vol, affine, meta = read_dicom_series(path)
        return Scan(path, kind, vol.astype(np.float32), affine, spacing=tuple(float(v) for v in meta["spacing_zyx"]))
    from nibabel import orientations as ornt

    from ..sequence import reorient_to_sagittal

    data, affine = read_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D NIfTI volume, got shape {data.shape}")
    codes = tuple(ornt.aff2axcodes(affine))
    if None in codes:
        raise ValueError(f"{path}: its affine gives no direction for every axis, got axis codes {codes}")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    perm = [codes.index(c) if c in codes else codes.index({"S": "I", "P": "A", "L": "R"}[c]) for c in AXIAL_CODES]
    return Scan(path, kind, reorient_to_sagittal(data, affine=affine, target=AXIAL_CODES).astype(np.float32), affine,
                native_codes=codes, spacing=tuple(float(zooms[p]) for p in perm))


def read_mask(path: str, like: Optional[Scan] = None) -> np.ndarray:
    """A label map (PNG, DICOM, NIfTI) as an integer S x H x W stack in the orientation ``read_scan`` gives
    its image (NIfTI masks are reoriented like NIfTI images; without ``like`` by their own affine)."""
    scan = read_scan(path)
    arr = scan.array
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise ValueError(f"{path}: a mask must hold whole numbers (label values), got non-integer values")
    if like is not None and arr.shape != like.array.shape:
        raise ValueError(f"{path}: the mask is {'x'.join(map(str, arr.shape))} but its image {like.path} is "
                         f"{'x'.join(map(str, like.array.shape))} (slices x rows x columns)")
    return arr.astype(np.int64)


def to_unit(scan: Scan, window_center: float, window_width: float) -> np.ndarray:
    """Values in [0, 1]: DICOM / NIfTI through the intensity window (HU), 8-bit images / 255, 16-bit by
    their maximum (as the built-in PNGs, which are CT through the same window)."""
    if scan.in_modality_units:
        return window(scan.array, window_center, window_width)
    arr = scan.array
    top = float(arr.max()) if arr.size else 1.0
    return np.clip(arr / (255.0 if top <= 255 else top), 0.0, 1.0).astype(np.float32)


def write_mask_nifti(path: str, scan: Scan, stack: np.ndarray) -> str:
    """Writes an S x H x W label stack as NIfTI in ``scan``'s geometry (its array layout and affine)."""
    import nibabel as nib

    native = np.ascontiguousarray(scan.to_native(np.asarray(stack).astype(np.uint8)))
    img = nib.Nifti1Image(native, scan.affine)
    img.header.set_xyzt_units("mm")
    write_with(path, lambda tmp: nib.save(img, tmp))
    return path


def write_mask_png(path: str, labels2d: np.ndarray) -> str:
    """An H x W label map as an 8-bit PNG of the same size (values = labels)."""
    from ..synth.writers import write_png

    write_png(path, np.asarray(labels2d).astype(np.uint8))
    return path
