"""The screen's inputs: the CT (a DICOM series folder read strictly, or a NIfTI file) in HU, and label
maps that must lie on the CT's voxel grid. Every problem is one ValueError naming the file; nothing is
written before the inputs have passed.

Arrays are kept C-contiguous for the C++ core without copying: a NIfTI volume (stored with its first
axis fastest) is viewed transposed, with its affine's columns reversed; `CTVolume.to_file_layout`
turns an array on the CT's grid back into the file's axis order for writing."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..io import read_dicom_series, read_nifti

__all__ = ["CTVolume", "read_ct", "read_label_map", "match_grid"]


@dataclasses.dataclass
class CTVolume:
    hu: np.ndarray  # C-contiguous, float32 or int16, HU
    affine: np.ndarray  # 4 x 4 voxel (of `hu`) -> RAS mm
    path: str
    kind: str  # "dicom" or "nifti"
    meta: Dict[str, Any]
    transposed: bool = False  # `hu` is the file's array transposed (NIfTI)

    @property
    def file_affine(self) -> np.ndarray:
        return self.affine[:, [2, 1, 0, 3]] if self.transposed else self.affine

    @property
    def file_shape(self) -> Tuple[int, ...]:
        return tuple(reversed(self.hu.shape)) if self.transposed else tuple(self.hu.shape)

    def to_file_layout(self, arr: np.ndarray) -> np.ndarray:
        return arr.T if self.transposed else arr

    def nifti_view(self, arr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(array, affine) for writing an array on the CT's grid as NIfTI without copying: the axes
        reversed (NIfTI stores the first axis fastest). For a NIfTI CT this is the file's own layout;
        for a DICOM series, column, row, slice order (as dcm2niix writes a series)."""
        return arr.T, self.affine[:, [2, 1, 0, 3]]

    @property
    def spacing(self) -> Tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def _nifti_header_checks(path: str, img) -> None:
    hdr = img.header
    aff = np.asarray(img.affine, np.float64)
    zooms = np.asarray(hdr.get_zooms()[:3], np.float64)
    cols = np.linalg.norm(aff[:3, :3], axis=0)
    if np.any(zooms <= 0):
        raise ValueError(f"{path}: contradictory spacing: the header's voxel sizes must be positive, got pixdim={tuple(zooms)}")
    if not np.allclose(cols, zooms, rtol=1e-3, atol=1e-4):
        raise ValueError(f"{path}: contradictory spacing: pixdim {tuple(np.round(zooms, 4))} mm but the affine's voxel "
                         f"steps are {tuple(np.round(cols, 4))} mm")
    scode, qcode = int(hdr["sform_code"]), int(hdr["qform_code"])
    if scode > 0 and qcode > 0:
        q, s = hdr.get_qform(), hdr.get_sform()
        tol = 1e-3 * max(1.0, float(cols.max()))
        if not np.allclose(q, s, atol=tol):
            raise ValueError(f"{path}: contradictory geometry: the qform and the sform disagree by "
                             f"{float(np.abs(q - s).max()):.4g} (mm or direction cosine)")


def read_ct(path: str) -> CTVolume:
    """A CT in HU from a DICOM series folder (osteonet.io.read_dicom_series(strict=True): CT modality,
    one orientation and spacing, no missing or duplicated slice, real rescale slope and intercept) or a
    NIfTI file (3-D, or 4-D with one volume; pixdim, qform and sform consistent)."""
    import nibabel as nib

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_ct: expected a path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: CT not found")
    if os.path.isdir(path):
        vol, affine, meta = read_dicom_series(path, strict=True)
        ct = CTVolume(np.ascontiguousarray(vol, dtype=np.float32), affine, path, "dicom", meta)
    elif path.lower().endswith((".nii", ".nii.gz")):
        try:
            img = nib.load(path)
        except Exception as e:
            raise ValueError(f"{path}: unreadable NIfTI ({type(e).__name__})") from None
        _nifti_header_checks(path, img)
        scaled = getattr(img.dataobj, "slope", 1.0) != 1.0 or getattr(img.dataobj, "inter", 0.0) != 0.0
        stored = img.get_data_dtype()
        keep = not scaled and stored == np.int16  # HU as int16: no conversion, no copy
        data, affine = read_nifti(path, dtype=None if keep else np.float32)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"{path}: expected a 3-D CT volume, got shape {tuple(data.shape)}")
        meta = {"shape": list(data.shape), "dtype": str(stored), "scaled": bool(scaled)}
        if data.flags.f_contiguous and not data.flags.c_contiguous:
            ct = CTVolume(data.T, affine[:, [2, 1, 0, 3]], path, "nifti", meta, transposed=True)
        else:
            ct = CTVolume(np.ascontiguousarray(data), affine, path, "nifti", meta)
    else:
        raise ValueError(f"{path}: expected a DICOM series folder or a NIfTI file (.nii, .nii.gz), got "
                         f"{os.path.basename(path)!r}")
    if ct.hu.dtype != np.int16 and not np.isfinite(ct.hu).all():
        raise ValueError(f"{path}: the CT has NaN or infinite values")
    return ct


def match_grid(arr: np.ndarray, affine: np.ndarray, ct: CTVolume, path: str, what: str) -> np.ndarray:
    """`arr` (a label map as stored, with its affine) on the CT's grid, as a C-contiguous array in the
    CT's internal layout. The same grid stored in another axis order or direction is reordered
    exactly; any other grid (shape, spacing, origin, orientation) is a ValueError."""
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D {what}, got shape {tuple(arr.shape)}")
    ct_aff, ct_shape = ct.file_affine, ct.file_shape
    tol = 1e-3 * max(1.0, max(ct.spacing))
    if arr.shape == ct_shape and np.allclose(affine, ct_aff, atol=tol):
        return np.ascontiguousarray(ct.to_file_layout(arr)) if ct.transposed else np.ascontiguousarray(arr)
    # Same voxels in another order: inv(A_ct) A_mask is a signed permutation with an integer shift.
    t = np.linalg.inv(ct_aff) @ np.asarray(affine, np.float64)
    p = np.round(t[:3, :3])
    shift = t[:3, 3]
    is_perm = (np.allclose(t[:3, :3], p, atol=1e-4) and np.all(np.abs(p).sum(0) == 1) and np.all(np.abs(p).sum(1) == 1)
               and np.allclose(shift, np.round(shift), atol=1e-3))
    if is_perm:
        # Mask axis m maps to CT axis c with sign; build the CT-layout array by transposing and flipping.
        axes = [int(np.flatnonzero(p[:, m])[0]) for m in range(3)]
        signs = [int(p[axes[m], m]) for m in range(3)]
        out_shape = [0, 0, 0]
        for m in range(3):
            out_shape[axes[m]] = arr.shape[m]
        ok = tuple(out_shape) == tuple(ct_shape)
        for m in range(3):
            c = axes[m]
            lo = shift[c] if signs[m] > 0 else shift[c] - (arr.shape[m] - 1)
            ok = ok and abs(lo) < 1e-3
        if ok:
            moved = np.transpose(arr, np.argsort(axes))
            for c in range(3):
                if signs[list(axes).index(c)] < 0:
                    moved = np.flip(moved, axis=c)
            return np.ascontiguousarray(ct.to_file_layout(moved))
    raise ValueError(f"{path}: the {what} is not on the CT's voxel grid: shape {tuple(arr.shape)} with voxel steps "
                     f"{tuple(np.round(np.linalg.norm(affine[:3, :3], axis=0), 4))} mm at origin "
                     f"{tuple(np.round(affine[:3, 3], 3))}, CT shape {tuple(ct_shape)} with steps "
                     f"{tuple(np.round(np.linalg.norm(ct_aff[:3, :3], axis=0), 4))} mm at origin {tuple(np.round(ct_aff[:3, 3], 3))}")


_LABEL_DTYPES = (np.uint8, np.int16, np.uint16, np.int32)


def read_label_map(path: str, ct: CTVolume, what: str = "label map") -> np.ndarray:
    """An integer label map (NIfTI) on the CT's grid, in the CT's internal layout (see match_grid),
    as uint8, int16, uint16 or int32. Non-integer or negative values are a ValueError."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_label_map: expected a path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: {what} not found")
    if not path.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: expected the {what} as a NIfTI file (.nii, .nii.gz), got {os.path.basename(path)!r}")
    data, affine = read_nifti(path, dtype=None)
    data = match_grid(data, affine, ct, path, what)
    if data.dtype.type not in _LABEL_DTYPES:
        if np.issubdtype(data.dtype, np.floating):
            if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
                raise ValueError(f"{path}: a {what} must hold integer labels, got non-integer values")
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if lo < 0:
            raise ValueError(f"{path}: label values must be >= 0, got min={lo:g}")
        if hi >= 2 ** 31:
            raise ValueError(f"{path}: label values must be below 2^31, got max={hi:g}")
        data = data.astype(np.uint8 if hi < 256 else np.int32)
    elif data.dtype == np.int16 and data.size and int(data.min()) < 0:
        raise ValueError(f"{path}: label values must be >= 0, got min={int(data.min())}")
    elif data.dtype == np.int32 and data.size and int(data.min()) < 0:
        raise ValueError(f"{path}: label values must be >= 0, got min={int(data.min())}")
    return np.ascontiguousarray(data)
