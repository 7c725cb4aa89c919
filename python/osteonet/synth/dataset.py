"""Writes the built-in lumbar CT set: DICOM per slice, windowed PNG per slice, a COCO JSON of the
vertebral-body boxes labelled by WHO class, and a manifest.csv with patient ids."""

from __future__ import annotations

import csv
import io
import os
from typing import Dict, List, Optional

import numpy as np

from ..io import write_json, write_text
from .ct import LEVELS, axial_lumbar_slice, sample_patient, sample_scanner
from .writers import hu_to_png8, write_ct_dicom, write_png

CLASS_NAMES = ["normal", "osteopenia", "osteoporosis"]
MANIFEST_COLUMNS = ["path", "dicom_path", "label", "label_index", "patient_id", "level", "t_score", "bmd",
                    "x1", "y1", "x2", "y2", "kvp", "pixel_spacing", "width", "height", "mask_path", "image", "mask"]
#: label tables (labels.csv) of the generated masks: mask value -> name
CT_LABELS = {0: "background", 255: "vertebral_body"}
HIP_LABELS = {0: "background", 1: "femoral_neck", 2: "greater_trochanter", 3: "wards_triangle", 4: "total_hip_rest"}
PROVENANCE_FILE = "osteonet_data.json"


def _uid(seed: int, *parts) -> str:
    import pydicom

    return pydicom.uid.generate_uid(entropy_srcs=[str(seed)] + [str(p) for p in parts])


def generate_ct_dataset(out: str, n_patients: int = 30, slices_per_patient: int = 8, seed: int = 0,
                        dicom: bool = True, progress: bool = True, balanced: bool = True,
                        masks: bool = True) -> Dict[str, object]:
    """Generates `n_patients` patients (WHO classes balanced) with `slices_per_patient` axial slices
    each (cycling L1-L4) into `out`. With `masks`, the vertebral-body mask of each slice goes to
    `masks/<stem>.png` (0/255; manifest column mask_path). Returns a summary. Deterministic in `seed`."""
    if n_patients < 1 or slices_per_patient < 1:
        raise ValueError(f"generate_ct_dataset: need n_patients >= 1 and slices_per_patient >= 1, "
                         f"got n_patients={n_patients} slices_per_patient={slices_per_patient}")
    rng = np.random.default_rng(seed)
    classes = [i % 3 for i in range(n_patients)] if balanced else list(rng.integers(0, 3, n_patients))
    rng.shuffle(classes)
    rows: List[Dict[str, object]] = []
    images, annotations = [], []
    bar = _progress(n_patients * slices_per_patient, progress, "synth ct")
    for p_idx, who in enumerate(classes):
        pid = f"CT{seed:03d}-{p_idx:04d}"
        patient = sample_patient(rng, pid, int(who))
        scanner = sample_scanner(rng)  # one scanner per patient
        study, series = _uid(seed, pid, "study"), _uid(seed, pid, "series")
        for s_idx in range(slices_per_patient):
            level = LEVELS[s_idx % len(LEVELS)]
            z = -40.0 * LEVELS.index(level) + float(rng.uniform(-8, 8))
            sl = axial_lumbar_slice(rng, patient, scanner, level, z_offset_mm=z)
            stem = f"{pid}_{s_idx:03d}_{level}"
            png_rel = os.path.join("png", f"{stem}.png")
            write_png(os.path.join(out, png_rel), hu_to_png8(sl.hu))
            mask_rel = ""
            if masks:
                mask_rel = os.path.join("masks", f"{stem}.png")
                write_png(os.path.join(out, mask_rel), sl.mask.astype(np.uint8) * 255)
            dcm_rel = ""
            if dicom:
                dcm_rel = os.path.join("dicom", pid, f"{s_idx:03d}.dcm")
                write_ct_dicom(os.path.join(out, dcm_rel), sl.hu, pixel_spacing=scanner.pixel_spacing, patient_id=pid,
                               study_uid=study, series_uid=series, sop_uid=_uid(seed, pid, s_idx), instance=s_idx + 1,
                               z_mm=z, kvp=scanner.kvp)
            image_id = len(images) + 1
            h, w = sl.hu.shape
            images.append({"id": image_id, "file_name": png_rel, "width": w, "height": h, "patient_id": pid})
            x1, y1, x2, y2 = sl.box
            annotations.append({"id": image_id, "image_id": image_id, "category_id": int(who) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(sl.mask.sum()), "iscrowd": 0})
            rows.append({"path": png_rel, "dicom_path": dcm_rel, "label": CLASS_NAMES[who], "label_index": int(who),
                         "patient_id": pid, "level": level, "t_score": round(patient.t_score, 4),
                         "bmd": round(patient.bmd, 3), "x1": x1, "y1": y1, "x2": x2, "y2": y2, "kvp": scanner.kvp,
                         "pixel_spacing": round(scanner.pixel_spacing, 5), "width": w, "height": h,
                         "mask_path": mask_rel, "image": png_rel, "mask": mask_rel})
            bar.update(1)
    bar.close()
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)],
            "info": {"description": "osteonet built-in axial lumbar CT (synthetic)", "seed": seed}}
    write_json(os.path.join(out, "annotations.json"), coco)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(os.path.join(out, "manifest.csv"), buf.getvalue())
    write_text(os.path.join(out, "README.md"), _readme(n_patients, slices_per_patient, seed, classes))
    if masks:
        _label_table(out, CT_LABELS)
    summary = {"images": len(images), "patients": n_patients, "classes": {n: int(sum(1 for c in classes if c == i))
                                                                         for i, n in enumerate(CLASS_NAMES)}}
    _provenance(out, "generate_ct_dataset", seed, summary)
    return summary


def _readme(n, k, seed, classes) -> str:
    return (f"# osteonet built-in lumbar CT (synthetic)\n\n{n} patients x {k} axial slices, seed {seed}.\n"
            "Generated by osteonet.synth (docs/synthetic_data.md). `png/` holds 8-bit images windowed at "
            "-500..1300 HU, `dicom/` the HU data (RescaleIntercept -1024), `annotations.json` COCO boxes of the "
            "vertebral body with category = WHO class (1 normal, 2 osteopenia, 3 osteoporosis), `manifest.csv` one "
            "row per slice with patient_id for patient-level splits.\n")


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="img")
    except ImportError:  # pragma: no cover
        return _NoBar()


def _label_table(out: str, labels: Dict[int, str]) -> None:
    write_text(os.path.join(out, "labels.csv"), "value,name\n" + "".join(f"{v},{n}\n" for v, n in labels.items()))


def _provenance(out: str, generator: str, seed: int, summary: Dict[str, object]) -> None:
    """Marks the folder as osteonet's synthetic data: model cards record it, and predictions of models
    trained on it say so (osteonet.tasks)."""
    write_json(os.path.join(out, PROVENANCE_FILE), {"osteonet_data": 1, "synthetic": True,
                                                    "generator": f"osteonet.synth.{generator}", "seed": seed,
                                                    "summary": summary})


def _manifest(out: str, rows: List[Dict[str, object]], columns: List[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(os.path.join(out, "manifest.csv"), buf.getvalue())


def _check_count(where: str, n: int) -> None:
    if n < 1:
        raise ValueError(f"{where}: need at least one item, got n={n}")


def generate_ovf_dataset(out: str, n_scans: int = 20, seed: int = 0, size=(40, 256, 256), progress: bool = True,
                         fracture_fraction: float = 0.5) -> Dict[str, object]:
    """Sagittal CT stacks (NIfTI, RAS affine) with Genant-graded fractures and a per-scan label
    (seed 002): `volumes/<id>.nii.gz` and manifest.csv (label fracture | no_fracture)."""
    from .sagittal import sagittal_scan
    from .writers import write_nifti

    _check_count("generate_ovf_dataset", n_scans)
    rng = np.random.default_rng(seed)
    n_frac = int(round(fracture_fraction * n_scans))
    flags = [True] * n_frac + [False] * (n_scans - n_frac)
    rng.shuffle(flags)
    rows = []
    bar = _progress(n_scans, progress, "synth ovf")
    for i, fractured in enumerate(flags):
        pid = f"OVF{seed:03d}-{i:04d}"
        # Fractures are more common at low BMD: fractured patients draw from a lower BMD distribution.
        bmd = float(np.clip(rng.normal(85 if fractured else 130, 25), 30, 230))
        scan = sagittal_scan(rng, bmd, fractured, size=size)
        rel = os.path.join("volumes", f"{pid}.nii.gz")
        write_nifti(os.path.join(out, rel), scan.hu, scan.affine)
        rows.append({"path": rel, "label": "fracture" if scan.label else "no_fracture", "label_index": scan.label,
                     "patient_id": pid, "grades": " ".join(map(str, scan.grades)),
                     "morphologies": " ".join(m or "-" for m in scan.morphologies), "bmd": round(bmd, 2)})
        bar.update(1)
    bar.close()
    _manifest(out, rows, ["path", "label", "label_index", "patient_id", "grades", "morphologies", "bmd"])
    _provenance(out, "generate_ovf_dataset", seed, {"scans": n_scans, "fractured": n_frac})
    return {"scans": n_scans, "fractured": n_frac}


def generate_hip_dataset(out: str, n_images: int = 30, seed: int = 0, size: int = 384, progress: bool = True) -> Dict[str, object]:
    """Hip radiographs (seed 004): `images/<id>.png`, one mask PNG per region in `masks/`, a label
    mask `labels/<id>.png` (0 background, 1 neck, 2 trochanter, 3 Ward's, 4 rest of total hip), and
    manifest.csv with the WHO class."""
    from .ct import CLASS_T_RANGES
    from .radiographs import HIP_REGIONS, hip_radiograph

    _check_count("generate_hip_dataset", n_images)
    rng = np.random.default_rng(seed)
    rows = []
    bar = _progress(n_images, progress, "synth hip")
    for i in range(n_images):
        who = i % 3
        t = float(rng.uniform(*CLASS_T_RANGES[who]))
        pid = f"HIP{seed:03d}-{i:04d}"
        hip = hip_radiograph(rng, t, who, size=size)
        rel = os.path.join("images", f"{pid}.png")
        write_png(os.path.join(out, rel), hip.image)
        row = {"path": rel, "label": CLASS_NAMES[who], "label_index": who, "patient_id": pid, "t_score": round(t, 4)}
        labels = np.zeros(hip.image.shape, np.uint8)
        labels[hip.masks["total_hip"]] = 4
        labels[hip.masks["femoral_neck"]] = 1
        labels[hip.masks["greater_trochanter"]] = 2
        labels[hip.masks["wards_triangle"]] = 3
        for region in HIP_REGIONS:
            mrel = os.path.join("masks", f"{pid}_{region}.png")
            write_png(os.path.join(out, mrel), hip.masks[region].astype(np.uint8) * 255)
            row[f"mask_{region}"] = mrel
        lrel = os.path.join("labels", f"{pid}.png")
        write_png(os.path.join(out, lrel), labels)
        row["label_mask"] = lrel
        row["image"], row["mask"] = rel, lrel
        rows.append(row)
        bar.update(1)
    bar.close()
    _manifest(out, rows, ["path", "label", "label_index", "patient_id", "t_score", "label_mask"] +
              [f"mask_{r}" for r in HIP_REGIONS] + ["image", "mask"])
    _label_table(out, HIP_LABELS)
    _provenance(out, "generate_hip_dataset", seed, {"images": n_images})
    return {"images": n_images}


def generate_dxa_dataset(out: str, n_images: int = 40, seed: int = 0, size: int = 256, progress: bool = True) -> Dict[str, object]:
    """Spine DXA-like AP images with a binary label (seed 001): osteoporosis (T <= -2.5) or normal."""
    from .radiographs import dxa_spine

    _check_count("generate_dxa_dataset", n_images)
    rng = np.random.default_rng(seed)
    rows = []
    bar = _progress(n_images, progress, "synth dxa")
    for i in range(n_images):
        osteo = i % 2 == 1
        t = float(rng.uniform(-4.0, -2.5) if osteo else rng.uniform(-2.4, 1.5))
        pid = f"DXA{seed:03d}-{i:04d}"
        rel = os.path.join("images", f"{pid}.png")
        write_png(os.path.join(out, rel), dxa_spine(rng, t, size=size))
        rows.append({"path": rel, "label": "osteoporosis" if osteo else "normal", "label_index": int(osteo),
                     "patient_id": pid, "t_score": round(t, 4)})
        bar.update(1)
    bar.close()
    _manifest(out, rows, ["path", "label", "label_index", "patient_id", "t_score"])
    _provenance(out, "generate_dxa_dataset", seed, {"images": n_images})
    return {"images": n_images}
