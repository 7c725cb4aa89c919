"""Readers for the formats hospitals use: DICOM files and series (sorted by position, HU through the
rescale slope/intercept), NIfTI (nibabel), PNG/JPEG, and folders with a manifest.csv. Every failure is
one ValueError naming the file and what was expected."""

from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["read_dicom", "read_dicom_series", "read_nifti", "read_image", "read_volume", "window", "read_manifest"]


def _must_exist(path: "str | os.PathLike", what: str, kind: str = "file") -> str:
    """``path`` as a str (``pathlib.Path`` accepted), checked to exist and to be a ``kind`` ("file", "folder"
    or "any"): a folder where a file is expected is one ValueError naming it, not IsADirectoryError."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{what}: expected a path (str or os.PathLike), got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\x00" in path:
        raise ValueError(f"{path!r}: {what} path contains a NUL byte")
    if not os.path.exists(path):
        raise ValueError(f"{path}: {what} not found")
    if kind == "file" and os.path.isdir(path):
        raise ValueError(f"{path}: expected a {what}, got a folder")
    if kind == "folder" and not os.path.isdir(path):
        raise ValueError(f"{path}: expected a {what}, got a file")
    return path


def _shorten(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[:n] + f"... ({len(s)} characters)"


def _reason(e: BaseException) -> str:
    """A library's exception as one short clause: its type and the first line of its message, cut."""
    lines = str(e).splitlines()
    return f"{type(e).__name__}: {_shorten(lines[0], 200)}" if lines and lines[0] else type(e).__name__


def read_dicom(path: str) -> Tuple[np.ndarray, Dict[str, object]]:
    """One DICOM image -> (float32 array in modality units — HU for CT — , metadata)."""
    import pydicom

    path = _must_exist(path, "DICOM file")
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except pydicom.errors.InvalidDicomError:
        raise ValueError(f"{path}: not a DICOM file (no DICM preamble)") from None
    except AttributeError:
        raise ValueError(f"{path}: DICOM file has no pixel data") from None
    except Exception as e:  # truncated pixel data, unsupported compression, ...
        raise ValueError(f"{path}: unreadable DICOM ({_reason(e)})") from None
    try:  # pydicom parses elements when first read: a damaged one raises here
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        data = pixels.astype(np.float32) * slope + intercept
        spacing = [float(v) for v in getattr(ds, "PixelSpacing", [1.0, 1.0])]
        meta = {"path": path, "modality": str(getattr(ds, "Modality", "")), "patient_id": str(getattr(ds, "PatientID", "")),
                "series_uid": str(getattr(ds, "SeriesInstanceUID", "")), "sop_uid": str(getattr(ds, "SOPInstanceUID", "")),
                "sop_class_uid": str(getattr(ds, "SOPClassUID", "")),
                "spacing_between_slices": float(getattr(ds, "SpacingBetweenSlices", 0) or 0), "pixel_spacing": spacing,
                "slice_thickness": float(getattr(ds, "SliceThickness", 0) or 0),
                "position": [float(v) for v in getattr(ds, "ImagePositionPatient", [0, 0, 0])],
                "orientation": [float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])],
                "instance": int(getattr(ds, "InstanceNumber", 0) or 0), "rescale": (slope, intercept)}
    except Exception as e:
        raise ValueError(f"{path}: unreadable DICOM header ({_reason(e)})") from None
    return data, meta


def read_dicom_series(folder: str, series_uid: Optional[str] = None,
                      strict: bool = False) -> Tuple[np.ndarray, np.ndarray, Dict[str, object]]:
    """A folder of one DICOM series -> (volume [Z, Y, X] float32, 4x4 RAS affine (nibabel's convention),
    metadata). Slices are sorted by their position along the slice normal (InstanceNumber when the
    geometry is absent). With ``strict`` (measurements in mm need it), the series must be CT with one
    orientation and pixel spacing, slices at distinct, evenly spaced positions along the normal (no
    missing or duplicated slice, no gantry-tilt shear) agreeing with any SpacingBetweenSlices header;
    each violation is one ValueError."""
    import pydicom

    folder = _must_exist(folder, "DICOM series folder", "folder")
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: expected a folder of DICOM files, got a file")
    slices = []
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isdir(p) or name.startswith("."):
            continue
        try:
            pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue  # non-DICOM files (README, thumbs) are skipped
        slices.append(read_dicom(p))
    if not slices:
        raise ValueError(f"{folder}: no DICOM files found")
    uids = sorted({m["series_uid"] for _, m in slices})
    if series_uid is None and len(uids) > 1:
        raise ValueError(f"{folder}: {len(uids)} DICOM series found, pass series_uid= one of {uids}")
    if series_uid is not None:
        slices = [s for s in slices if s[1]["series_uid"] == series_uid]
        if not slices:
            raise ValueError(f"{folder}: no slice of series {series_uid}")
    shapes = {a.shape for a, _ in slices}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: slices differ in size, got {sorted(shapes)}")
    o = np.array(slices[0][1]["orientation"], dtype=np.float64)
    row, col = o[:3], o[3:]
    normal = np.cross(row, col)
    if strict:
        _check_series(folder, [m for _, m in slices], normal)
    keys = [float(np.dot(normal, m["position"])) for _, m in slices]
    if len(set(np.round(keys, 4))) == len(keys):
        order = np.argsort(keys)
    else:
        order = np.argsort([m["instance"] for _, m in slices])
    slices = [slices[i] for i in order]
    volume = np.stack([a for a, _ in slices]).astype(np.float32, copy=False)
    first = slices[0][1]
    dy, dx = first["pixel_spacing"]
    dz = float(np.dot(normal, np.subtract(slices[-1][1]["position"], first["position"])) / (len(slices) - 1)) \
        if len(slices) > 1 else (first["slice_thickness"] or 1.0)
    # Voxel (k=z, j=y, i=x) -> LPS mm, then LPS -> RAS.
    lps = np.eye(4)
    lps[:3, 0] = normal * dz
    lps[:3, 1] = col * dy
    lps[:3, 2] = row * dx
    lps[:3, 3] = first["position"]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    meta = {"patient_id": first["patient_id"], "series_uid": first["series_uid"], "slices": len(slices),
            "spacing_zyx": (abs(dz), dy, dx), "files": [m["path"] for _, m in slices],
            "sop_uids": [m["sop_uid"] for _, m in slices], "sop_class_uid": first["sop_class_uid"],
            "positions": [list(m["position"]) for _, m in slices], "orientation": list(first["orientation"]),
            "modality": first["modality"]}
    return volume, affine, meta


def _check_series(folder: str, metas: List[Dict[str, object]], normal: np.ndarray) -> None:
    """The checks of read_dicom_series(strict=True): one ValueError per kind of inconsistency."""
    modalities = sorted({str(m["modality"]) for m in metas})
    if modalities != ["CT"]:
        raise ValueError(f"{folder}: not a CT series, got modality={'/'.join(modalities) or 'none'}")
    orients = {tuple(np.round(m["orientation"], 4)) for m in metas}
    if len(orients) > 1:
        raise ValueError(f"{folder}: slices differ in orientation, got {len(orients)} ImageOrientationPatient values")
    spacings = {tuple(np.round(m["pixel_spacing"], 5)) for m in metas}
    if len(spacings) > 1:
        raise ValueError(f"{folder}: contradictory spacing: PixelSpacing differs between slices, got {sorted(spacings)}")
    if len(metas) < 2:
        return
    pos = np.array([m["position"] for m in metas], dtype=np.float64)
    d = pos @ normal
    order = np.argsort(d)
    d, pos = d[order], pos[order]
    steps = np.diff(d)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        same = [os.path.basename(str(metas[order[i]]["path"])) for i in (dup[0], dup[0] + 1)]
        raise ValueError(f"{folder}: duplicated slices: {same[0]} and {same[1]} share the position {d[dup[0]]:.3f} mm "
                         f"along the slice normal ({dup.size} duplicate{'s' if dup.size > 1 else ''})")
    typical = float(np.median(steps))
    if np.any(np.abs(steps - typical) > max(0.01 * typical, 1e-3)):
        k = int(np.argmax(np.abs(steps - typical)))
        what = "missing slices" if steps[k] > typical else "uneven slice spacing"
        raise ValueError(f"{folder}: {what}: a step of {steps[k]:.3f} mm between slices at {d[k]:.3f} and "
                         f"{d[k + 1]:.3f} mm, where the spacing is {typical:.3f} mm")
    inplane = pos - np.outer(pos @ normal, normal)
    if np.max(np.linalg.norm(inplane - inplane[0], axis=1)) > 0.01 * min(metas[0]["pixel_spacing"]) + 1e-3:
        raise ValueError(f"{folder}: slice positions do not line up along the slice normal (gantry tilt), got an "
                         f"in-plane drift of {np.max(np.linalg.norm(inplane - inplane[0], axis=1)):.3f} mm")
    headers = sorted({round(float(m["spacing_between_slices"]), 4) for m in metas if m["spacing_between_slices"]})
    for h in headers:
        if abs(h - typical) > max(0.01 * typical, 1e-3):
            raise ValueError(f"{folder}: contradictory spacing: SpacingBetweenSlices={h} mm but the slice positions "
                             f"are {typical:.4f} mm apart")


def read_nifti(path: str, dtype: Optional[type] = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """A NIfTI file -> (volume, 4x4 affine): float32 values after the header's scaling by default;
    ``dtype=None`` keeps the stored type when the header does not scale (label maps)."""
    import nibabel as nib

    path = _must_exist(path, "NIfTI file")
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    except Exception as e:
        raise ValueError(f"{path}: unreadable NIfTI ({type(e).__name__})") from None
    return data, np.asarray(img.affine, dtype=np.float64)


def read_image(path: str) -> np.ndarray:
    """A PNG/JPEG/... image -> float32 grey array (values as stored, 0-255 for 8-bit)."""
    from PIL import Image, UnidentifiedImageError

    path = _must_exist(path, "image file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                return np.asarray(im, dtype=np.float32)
            return np.asarray(im.convert("L"), dtype=np.float32)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image PIL can read (expected PNG, JPEG, ...)") from None
    except OSError as e:
        raise ValueError(f"{path}: unreadable image ({_reason(e)})") from None


def read_volume(path: str):
    """Dispatch by what `path` is: a folder (DICOM series), .nii/.nii.gz (NIfTI), .dcm (one DICOM
    image), or an image file. Returns (array, affine-or-None, meta)."""
    path = _must_exist(path, "input", "any")
    low = path.lower()
    if os.path.isdir(path):
        return read_dicom_series(path)
    if low.endswith((".nii", ".nii.gz")):
        data, affine = read_nifti(path)
        return data, affine, {"path": path}
    if low.endswith(".dcm"):
        data, meta = read_dicom(path)
        return data, None, meta
    return read_image(path), None, {"path": path}


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Intensity window to [0, 1] (e.g. bone: center 400, width 1800 HU)."""
    if width <= 0:
        raise ValueError(f"window: width must be positive, got width={width}")
    lo = center - width / 2.0
    return np.clip((np.asarray(values, dtype=np.float32) - lo) / width, 0.0, 1.0)


def read_manifest(folder: str, required: Sequence[str] = ("path", "label"), check_files: bool = True,
                  files: Optional[Sequence[str]] = None, nonempty: Optional[Sequence[str]] = None,
                  layout: str = "") -> List[Dict[str, str]]:
    """Rows of ``folder/manifest.csv`` (the format of ../shared/data: paths relative to the folder, labels, ids).

    ``required``: columns that must exist; ``nonempty``: columns that must be filled in every row
    (default: ``required``); ``files``: columns naming files or folders that must exist (default:
    ``path`` when required; ``check_files=False`` skips it). ``layout`` is named in the errors. Every
    problem raises one ValueError naming the file, the line and the field."""
    where = f" (the {layout} layout needs columns {', '.join(required)})" if layout else ""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: data folder not found" if not os.path.exists(folder) else
                         f"{folder}: expected a data folder, got a file")
    path = _must_exist(os.path.join(folder, "manifest.csv"), "manifest" + where)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a CSV manifest ({type(e).__name__})") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected at least {list(required)}, got "
                         f"{_shorten(repr(columns), 300)}")
    if not rows:
        raise ValueError(f"{path}: manifest has no rows")
    for i, r in enumerate(rows):
        if None in r or any(v is None for v in r.values()):
            raise ValueError(f"{path} line {i + 2}: expected {len(columns)} fields ({_shorten(', '.join(columns), 300)}), got "
                             f"{len([v for v in r.values() if v is not None]) + len(r.get(None) or [])}")
        for c, v in r.items():
            if "\x00" in v:  # csv reads NUL bytes; no path or label holds one (a binary file renamed .csv?)
                raise ValueError(f"{path} line {i + 2}: field '{_shorten(c)}' contains a NUL byte")
        for c in (required if nonempty is None else nonempty):
            if not r[c].strip():
                raise ValueError(f"{path} line {i + 2}: field '{c}' is empty")
    files = (["path"] if "path" in required else []) if files is None else list(files)
    if check_files:
        for i, r in enumerate(rows):
            for c in files:
                if r.get(c) and not os.path.exists(os.path.join(folder, r[c])):
                    raise ValueError(f"{path} line {i + 2}: field '{c}' names {_shorten(repr(r[c]))}, which does not exist")
    return rows
