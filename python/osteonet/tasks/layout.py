"""The pieces the tasks' data layouts share: manifests whose errors name the file, line and field;
group (patient / source) ids; numbers with units and ranges; label tables; image headers read without
decoding pixels; the provenance file the built-in generator writes.

Every check raises one ValueError line "<file>[ line N]: <what>, got <value>"; nothing is written.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..io import read_manifest

__all__ = ["manifest", "group_column", "groups_of", "number", "label_table", "image_shape", "volume_kind",
           "provenance", "PROVENANCE_FILE", "IMAGE_SUFFIXES", "VOLUME_SUFFIXES"]

GROUP_COLUMNS = ("patient_id", "source_id")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_SUFFIXES = (".nii", ".nii.gz")
PROVENANCE_FILE = "osteonet_data.json"


def manifest(folder: str, task: str, required: Sequence[str], files: Sequence[str] = ()) -> List[Dict[str, str]]:
    """``folder/manifest.csv`` with ``required`` columns filled in every row and the ``files`` columns naming
    existing files; each row gets ``_line`` (its line in the file) for later messages."""
    rows = read_manifest(folder, required=tuple(required), files=list(files), layout=task)
    for i, r in enumerate(rows):
        r["_line"] = str(i + 2)
    return rows


def where(folder: str, row: Dict[str, str]) -> str:
    return f"{os.path.join(folder, 'manifest.csv')} line {row['_line']}"


def group_column(rows: List[Dict[str, str]], folder: str) -> Optional[str]:
    """The id column a split keeps whole (patient_id, else source_id), or None; a present column must be
    filled in every row."""
    for c in GROUP_COLUMNS:
        if c in rows[0]:
            for r in rows:
                if not str(r.get(c) or "").strip():
                    raise ValueError(f"{where(folder, r)}: field '{c}' is empty (a split keeps each {c} whole)")
            return c
    return None


def groups_of(rows: List[Dict[str, str]], column: Optional[str], ids: Sequence[str]) -> List[str]:
    return [str(r[column]) for r in rows] if column else list(ids)


def number(folder: str, row: Dict[str, str], field: str, lo: float, hi: float, unit: str) -> float:
    """A float field within [lo, hi] (its unit named in the error)."""
    raw = row.get(field, "")
    try:
        v = float(raw)
    except (TypeError, ValueError):
        v = float("nan")
    if not (lo <= v <= hi):
        raise ValueError(f"{where(folder, row)}: field '{field}' must be a number of {unit} between {lo:g} and {hi:g}, "
                         f"got {field}={raw!r}")
    return v


def label_table(folder: str, required: bool, default: Optional[Dict[int, str]] = None) -> Dict[int, str]:
    """``folder/labels.csv`` (columns ``value``, ``name``: the mask value of each label, 0 the background) as
    value -> name. Without the file: ``default`` (an error when ``required``)."""
    path = os.path.join(folder, "labels.csv")
    if not os.path.exists(path):
        if required or default is None:
            raise ValueError(f"{path}: label table not found (columns value,name; one row per mask value)")
        return dict(default)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "value" not in cols or "name" not in cols:
            raise ValueError(f"{path}: missing column(s) {[c for c in ('value', 'name') if c not in cols]}; "
                             f"expected value,name, got {cols}")
        table: Dict[int, str] = {}
        for i, r in enumerate(reader):
            line = f"{path} line {i + 2}"
            try:
                v = int(r["value"])
            except (TypeError, ValueError):
                raise ValueError(f"{line}: field 'value' must be an integer mask value 0..255, got value={r['value']!r}") from None
            if not 0 <= v <= 255:
                raise ValueError(f"{line}: field 'value' must be an integer mask value 0..255, got value={v}")
            name = (r["name"] or "").strip()
            if not name:
                raise ValueError(f"{line}: field 'name' is empty")
            if v in table:
                raise ValueError(f"{line}: field 'value' repeats value={v} (already {table[v]!r})")
            if name in table.values():
                raise ValueError(f"{line}: field 'name' repeats name={name!r}")
            table[v] = name
    if 0 not in table:
        raise ValueError(f"{path}: needs the background row (value 0), got values {sorted(table)}")
    if len(table) < 2:
        raise ValueError(f"{path}: needs at least one label besides the background, got {table}")
    return dict(sorted(table.items()))


def volume_kind(path: str) -> str:
    """"dicom-series" (a folder), "nifti", "dicom" (one file) or "image"."""
    low = path.lower()
    if os.path.isdir(path):
        return "dicom-series"
    if low.endswith(VOLUME_SUFFIXES):
        return "nifti"
    if low.endswith((".dcm", ".dicom")):
        return "dicom"
    return "image"


def image_shape(path: str) -> Tuple[int, ...]:
    """The array shape of an image / DICOM file / DICOM series / NIfTI from its header, as osteonet's
    readers return it (images H x W; a series Z x H x W; NIfTI as stored). Unreadable: one ValueError."""
    kind = volume_kind(path)
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return (im.height, im.width)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: not an image PIL can read (expected PNG, JPEG, ...; {type(e).__name__})") from None
    if kind == "nifti":
        import nibabel as nib

        try:
            return tuple(int(v) for v in nib.load(path).shape)
        except Exception as e:  # noqa: BLE001  (nibabel raises many types)
            raise ValueError(f"{path}: unreadable NIfTI ({type(e).__name__})") from None
    import pydicom

    files = [path] if kind == "dicom" else sorted(os.path.join(path, n) for n in os.listdir(path)
                                                  if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))
    shapes = set()
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            shapes.add((int(ds.Rows), int(ds.Columns)))
        except Exception:  # noqa: BLE001
            if kind == "dicom":
                raise ValueError(f"{path}: not a DICOM image (no DICM preamble or no Rows/Columns)") from None
    if not shapes:
        raise ValueError(f"{path}: no DICOM files found in the series folder")
    if len(shapes) > 1:
        raise ValueError(f"{path}: the series' slices differ in size, got {sorted(shapes)}")
    rows, cols = shapes.pop()
    return (rows, cols) if kind == "dicom" else (len(files), rows, cols)


def provenance(folder: str) -> Dict[str, Any]:
    """What ``folder`` is: osteonet's built-in synthetic data (its generator wrote ``osteonet_data.json``)
    or a user's folder."""
    path = os.path.join(folder, PROVENANCE_FILE)
    info: Dict[str, Any] = {"folder": os.path.abspath(folder), "synthetic": False, "source": "user folder"}
    if os.path.exists(path):
        try:
            with open(path) as f:
                marker = json.load(f)
        except (OSError, json.JSONDecodeError):
            marker = {}
        if isinstance(marker, dict) and marker.get("synthetic"):
            info.update(synthetic=True, source="osteonet built-in synthetic data",
                        generator=marker.get("generator"), generator_seed=marker.get("seed"))
    return info
