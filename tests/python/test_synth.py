"""The built-in CT generator: deterministic, physically consistent (HU tracks BMD, cortex thins with
BMD), labels follow the WHO rule, files are real DICOM/PNG/COCO/manifest."""

import csv
import json
import os

import numpy as np
import pytest

from osteonet import clinical
from osteonet.synth import axial_lumbar_slice, generate_ct_dataset, sample_patient, sample_scanner
from osteonet.synth.writers import hu_to_png8


def test_patient_classes_follow_who_rule():
    rng = np.random.default_rng(0)
    for c in (0, 1, 2):
        for _ in range(50):
            p = sample_patient(rng, "x", c)
            assert clinical.who_class(p.t_score) == c == p.who_class


def test_slice_is_deterministic_and_physical():
    def make(seed, bmd_class):
        rng = np.random.default_rng(seed)
        return axial_lumbar_slice(rng, sample_patient(rng, "p", bmd_class), sample_scanner(rng), "L3")

    a, b = make(5, 0), make(5, 0)
    assert np.array_equal(a.hu, b.hu) and a.box == b.box
    assert a.hu.dtype == np.int16 and a.hu.shape == (512, 512)
    assert a.hu.min() >= -1024 and a.hu.max() <= 3071
    x1, y1, x2, y2 = a.box
    ys, xs = np.nonzero(a.mask)
    assert xs.min() >= x1 and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2
    # Vertebral body is bone-bright compared with the muscle around it.
    assert a.hu[a.mask].mean() > 150


def test_trabecular_hu_tracks_bmd_and_cortex_thins():
    rng = np.random.default_rng(1)
    bmd, hu, cortex = [], [], []
    for i in range(18):
        p = sample_patient(rng, f"p{i}", i % 3)
        s = axial_lumbar_slice(rng, p, sample_scanner(rng), "L2")
        bmd.append(p.bmd), hu.append(s.meta["trabecular_hu"]), cortex.append(s.meta["cortex_mm"])
    r = np.corrcoef(bmd, hu)[0, 1]
    slope = np.polyfit(bmd, hu, 1)[0]
    assert r > 0.9, r
    assert 0.8 < slope < 1.3, slope  # QCT: about 1 HU per mg/cm3
    assert np.corrcoef(bmd, cortex)[0, 1] > 0.99


def test_dataset_files(tmp_path):
    out = tmp_path / "ct"
    summary = generate_ct_dataset(str(out), n_patients=3, slices_per_patient=2, seed=7, progress=False)
    assert summary == {"images": 6, "patients": 3, "classes": {"normal": 1, "osteopenia": 1, "osteoporosis": 1}}
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["patient_id"] for r in rows} == {f"CT007-000{i}" for i in range(3)}
    coco = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["normal", "osteopenia", "osteoporosis"]
    assert len(coco["images"]) == len(coco["annotations"]) == 6
    for row, ann in zip(rows, coco["annotations"]):
        assert ann["category_id"] == int(row["label_index"]) + 1
        assert clinical.who_class(float(row["t_score"])) == int(row["label_index"])
    import pydicom
    from PIL import Image

    d = pydicom.dcmread(out / rows[0]["dicom_path"])
    hu = d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
    png = np.asarray(Image.open(out / rows[0]["path"]))
    assert d.Modality == "CT" and d.PatientID == rows[0]["patient_id"] and float(d.PixelSpacing[0]) == pytest.approx(
        float(rows[0]["pixel_spacing"]), abs=1e-4)
    assert np.array_equal(hu8 := hu_to_png8(hu), png), "PNG is the windowed DICOM"
    assert hu8.dtype == np.uint8
    # Same seed, same data.
    again = tmp_path / "again"
    generate_ct_dataset(str(again), n_patients=3, slices_per_patient=2, seed=7, progress=False)
    assert (again / "manifest.csv").read_text() == (out / "manifest.csv").read_text()
    assert (again / rows[3]["path"]).read_bytes() == (out / rows[3]["path"]).read_bytes()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_patients"):
        generate_ct_dataset("/tmp/never", n_patients=0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="level"):
        axial_lumbar_slice(rng, sample_patient(rng, "p", 0), sample_scanner(rng), "L7")


def test_sagittal_fractures_lose_height_by_grade():
    from osteonet.synth import GENANT_LOSS, sagittal_scan

    rng = np.random.default_rng(3)
    healthy = sagittal_scan(rng, 150, False, size=(20, 128, 128))
    assert healthy.label == 0 and healthy.grades == [0] * 6
    frac = sagittal_scan(rng, 60, True, size=(20, 128, 128))
    assert frac.label == 1 and any(frac.grades) and all((g == 0) == (m == "") for g, m in zip(frac.grades, frac.morphologies))
    assert set(GENANT_LOSS) == {1, 2, 3} and GENANT_LOSS[3][0] >= 0.4
    # Bone voxels in the central sagittal slice: the fractured scan has less vertebral bone area.
    centre = lambda s: (s.hu[s.hu.shape[0] // 2] > 250).sum()
    assert centre(frac) < centre(healthy)


def test_ovf_hip_dxa_datasets(tmp_path):
    from osteonet.io import read_image, read_manifest, read_nifti
    from osteonet.synth import generate_dxa_dataset, generate_hip_dataset, generate_ovf_dataset

    generate_ovf_dataset(str(tmp_path / "ovf"), n_scans=2, seed=1, size=(8, 64, 64), progress=False)
    rows = read_manifest(str(tmp_path / "ovf"), required=("path", "label", "patient_id", "grades"))
    assert sorted(r["label"] for r in rows) == ["fracture", "no_fracture"]
    vol, affine = read_nifti(str(tmp_path / "ovf" / rows[0]["path"]))
    import nibabel as nib
    assert vol.shape == (8, 64, 64) and "".join(nib.aff2axcodes(affine)) == "RIP"  # x->R, y->inferior, z->posterior
    generate_hip_dataset(str(tmp_path / "hip"), n_images=3, seed=2, size=128, progress=False)
    rows = read_manifest(str(tmp_path / "hip"), required=("path", "label", "label_mask", "mask_femoral_neck"))
    lab = read_image(str(tmp_path / "hip" / rows[0]["label_mask"]))
    assert set(np.unique(lab).astype(int)) <= {0, 1, 2, 3, 4} and (lab == 1).any() and (lab == 2).any()
    neck = read_image(str(tmp_path / "hip" / rows[0]["mask_femoral_neck"])) > 0
    assert ((lab == 1) | (lab == 3))[neck].all()
    generate_dxa_dataset(str(tmp_path / "dxa"), n_images=4, seed=3, size=64, progress=False)
    rows = read_manifest(str(tmp_path / "dxa"))
    assert [r["label"] for r in rows] == ["normal", "osteoporosis"] * 2
    assert all((float(r["t_score"]) <= -2.5) == (r["label"] == "osteoporosis") for r in rows)


def test_dxa_intensity_tracks_bmd():
    from osteonet.synth import dxa_spine

    bright = [dxa_spine(np.random.default_rng(i), 1.0).astype(float).mean() for i in range(3)]
    dark = [dxa_spine(np.random.default_rng(i), -3.5).astype(float).mean() for i in range(3)]
    assert min(bright) > max(dark)
