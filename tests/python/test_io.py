"""Readers (real DICOM/NIfTI from Debian's packages, our own series), atomic writes, manifest folders,
patient-level splits (never straddling, stratified), and one-line errors naming the file."""

import os

import numpy as np
import pytest

import osteonet
from osteonet.io import atomic_write, read_dicom, read_dicom_series, read_image, read_manifest, read_nifti, read_volume, window
from osteonet.split import patient_kfold, patient_split
from osteonet.synth.writers import write_ct_dicom, write_nifti, write_png

PYDICOM_CT = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm"
NIBABEL_DATA = "/usr/lib/python3/dist-packages/nibabel/tests/data"
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")


@pytest.mark.skipif(not os.path.exists(PYDICOM_CT), reason="pydicom's test CT not installed")
def test_real_ct_dicom_rescale():
    import pydicom

    hu, meta = read_dicom(PYDICOM_CT)
    ds = pydicom.dcmread(PYDICOM_CT)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(hu, expected.astype(np.float32)) and meta["modality"] == "CT"
    assert meta["pixel_spacing"] == [float(v) for v in ds.PixelSpacing]


def test_real_nifti():
    path = os.path.join(NIBABEL_DATA, "example4d.nii.gz")
    if not os.path.exists(path):
        pytest.skip("nibabel's test data not installed")
    import nibabel as nib

    data, affine = read_nifti(path)
    assert data.shape == nib.load(path).shape and np.allclose(affine, nib.load(path).affine)


def test_dicom_series_sorted_by_position_with_affine(tmp_path):
    rng = np.random.default_rng(0)
    slices = [rng.integers(-1000, 2000, (16, 12)).astype(np.int16) for _ in range(5)]
    zs = [10.0, 12.5, 15.0, 17.5, 20.0]
    for k, idx in enumerate([3, 0, 4, 1, 2]):  # file names in scrambled order
        write_ct_dicom(str(tmp_path / f"f{k}.dcm"), slices[idx], pixel_spacing=0.7, patient_id="P1", study_uid="1.2.3",
                       series_uid="1.2.3.4", sop_uid=f"1.2.3.4.{idx}", instance=5 - idx, z_mm=zs[idx], kvp=120)
    (tmp_path / "README.txt").write_text("not dicom")
    vol, affine, meta = read_dicom_series(str(tmp_path))
    assert vol.shape == (5, 16, 12)
    assert np.array_equal(vol, np.stack(slices).astype(np.float32))
    # Array axes (z, y, x) -> RAS: z along S (+2.5 mm), rows towards P, columns towards L (DICOM is LPS).
    assert np.allclose(affine[:3, :3], [[0, 0, -0.7], [0, -0.7, 0], [2.5, 0, 0]])
    import nibabel as nib
    assert "".join(nib.aff2axcodes(affine)) == "SPL"
    assert meta["spacing_zyx"] == pytest.approx((2.5, 0.7, 0.7))
    v2, _, _ = read_volume(str(tmp_path))
    assert np.array_equal(v2, vol)


def test_nifti_round_trip_and_images(tmp_path):
    vol = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    write_nifti(str(tmp_path / "v.nii.gz"), vol, aff)
    data, affine = read_nifti(str(tmp_path / "v.nii.gz"))
    assert np.allclose(data, vol) and np.allclose(affine, aff)
    img = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
    write_png(str(tmp_path / "a.png"), img)
    assert np.array_equal(read_image(str(tmp_path / "a.png")), img.astype(np.float32))
    assert window(np.array([-500.0, 400.0, 1300.0, 5000.0]), 400, 1800).tolist() == [0.0, 0.5, 1.0, 1.0]


def test_bad_files_give_one_clear_line(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 50)
    png = tmp_path / "bad.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    nii = tmp_path / "bad.nii.gz"
    nii.write_bytes(b"not gzip")
    for fn, path, words in [(read_dicom, bad, "DICOM"), (read_image, png, "image"), (read_nifti, nii, "NIfTI"),
                            (read_image, tmp_path / "missing.png", "not found"),
                            (read_dicom_series, tmp_path / "empty", "not found")]:
        with pytest.raises(ValueError) as e:
            fn(str(path))
        msg = str(e.value)
        assert str(path) in msg and words in msg and "\n" not in msg, msg
    (tmp_path / "empty_series").mkdir()
    with pytest.raises(ValueError, match="no DICOM files"):
        read_dicom_series(str(tmp_path / "empty_series"))


def test_manifest_checks(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label\nx.png,normal\n")
    with pytest.raises(ValueError, match="x.png"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.csv").write_text("file,label\nx.png,normal\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['path'\]"):
        read_manifest(str(tmp_path))


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(target), "w") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_patient_split_never_straddles_and_is_stratified():
    rng = np.random.default_rng(0)
    pids, labels = [], []
    for p in range(50):
        lab = ["normal", "osteopenia", "osteoporosis"][p % 3]
        for _ in range(rng.integers(1, 6)):
            pids.append(f"p{p}"), labels.append(lab)
    train, test = patient_split(pids, labels, test_fraction=0.2, seed=1)
    assert sorted(train + test) == list(range(len(pids)))
    assert not ({pids[i] for i in train} & {pids[i] for i in test})
    test_patients = {pids[i] for i in test}
    assert 8 <= len(test_patients) <= 12
    by_class = {lab: len({pids[i] for i in test if labels[i] == lab}) for lab in set(labels)}
    assert max(by_class.values()) - min(by_class.values()) <= 1
    assert patient_split(pids, labels, seed=1) == (train, test)
    folds = patient_kfold(pids, labels, k=5, seed=0)
    seen = [pids[i] for _, te in folds for i in te]
    assert sorted(set(seen)) == sorted(set(pids)) and len(seen) == len(pids)
    for tr, te in folds:
        assert not ({pids[i] for i in tr} & {pids[i] for i in te})
    with pytest.raises(ValueError, match="test_fraction"):
        patient_split(pids, labels, test_fraction=1.5)
    with pytest.raises(ValueError, match="no patient id"):
        patient_split(["a", ""], [0, 1])


def test_split_on_the_real_spine_manifest():
    folder = os.path.join(SHARED, "spine-xray")
    if not os.path.isdir(folder):
        pytest.skip("../shared/data is not present (a user's machine)")
    rows = read_manifest(folder, required=("path", "label", "patient_id"))
    train, test = patient_split([r["patient_id"] for r in rows], [r["label"] for r in rows], seed=0)
    assert not ({rows[i]["patient_id"] for i in train} & {rows[i]["patient_id"] for i in test})
    assert {rows[i]["label"] for i in test} == {"normal", "osteopenia", "osteoporosis"}
    img = read_image(os.path.join(folder, rows[0]["path"]))
    assert img.ndim == 2 and max(img.shape) <= 512
