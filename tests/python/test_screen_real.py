"""osteonet screen on a real CT: pydicom's CT_small.dcm (Debian's python3-pydicom), one axial 5 mm slice
through a vertebra (GE HiSpeed, RescaleIntercept -1024). The vertebra is outlined by thresholding; the
screen must cut its body at the spinal canal, flag it as cut by the field of view (one slice), measure its
trabecular ROI exactly as an independent numpy/scipy computation does, and write a SEG and an SR that
reference the real series and pass dicom3tools' dciodvfy."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

PYDICOM_CT = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm"
pytestmark = pytest.mark.skipif(not os.path.exists(PYDICOM_CT), reason="pydicom's test CT not installed (python3-pydicom)")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    import nibabel as nib
    from scipy import ndimage

    from osteonet.screen import read_ct, screen

    root = tmp_path_factory.mktemp("real")
    os.makedirs(root / "series")
    shutil.copy(PYDICOM_CT, root / "series" / "CT_small.dcm")
    ct = read_ct(str(root / "series"))
    s = ct.hu[0]
    # The whole vertebra: bone above 120 HU, the component under the body's centre, pinholes filled.
    lab, _ = ndimage.label(s > 120)
    m = lab == lab[25, 59]
    holes = ndimage.binary_fill_holes(m) & ~m
    hl, k = ndimage.label(holes)
    for i, size in enumerate(ndimage.sum(holes, hl, range(1, k + 1)), start=1):
        if size < 60:
            m |= hl == i
    nib.save(nib.Nifti1Image(ct.to_file_layout(m[None].astype(np.uint8)), ct.file_affine), str(root / "vertebra.nii.gz"))
    with open(root / "table.json", "w") as f:
        json.dump({"structure": "vertebra", "labels": {"1": "T10"}}, f)  # the level is not known; any name serves
    rep = screen(str(root / "series"), out=str(root / "out"), masks=str(root / "vertebra.nii.gz"),
                 labels=str(root / "table.json"))
    return root, ct, m, rep


def test_real_ct_is_read_with_its_rescale_and_geometry(real):
    import pydicom

    root, ct, m, rep = real
    ds = pydicom.dcmread(PYDICOM_CT)
    assert np.array_equal(ct.hu[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert ct.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert rep["input"]["series_uid"] == ds.SeriesInstanceUID and rep["input"]["axcodes"] == "SPL"


def test_body_is_cut_at_the_canal_and_flagged_as_cut(real):
    from osteonet.screen import read_label_map

    root, ct, m, rep = real
    (v,) = rep["vertebrae"]
    assert v["name"] == "T10" and v["body_source"] == "canal"
    assert not v["complete"] and "incomplete" in v["flags"]  # one slice: the vertebra leaves the field of view
    assert v["genant_grade"] is None and v["body_volume_ml"] is None and v["heights_mm"]["anterior"] is None
    body = read_label_map(str(root / "out" / "bodies.nii.gz"), ct)[0] == v["mask_value"]
    assert body.sum() == v["body_voxels"] and np.all(m[body])
    rows = np.nonzero(body.any(axis=1))[0]
    # The canal (CSF, about 0-60 HU) lies right behind the body on the midline column of the body.
    col = int(round(np.nonzero(body)[1].mean()))
    behind = ct.hu[0, rows.max() + 2: rows.max() + 12, col]
    assert np.all(behind < 100), behind
    assert 0.3 < v["body_voxels"] / v["vertebra_voxels"] < 0.6


def test_trabecular_roi_matches_an_independent_computation(real):
    import pydicom
    from scipy import ndimage

    from osteonet.screen import read_label_map

    root, ct, m, rep = real
    (v,) = rep["vertebrae"]
    body = read_label_map(str(root / "out" / "bodies.nii.gz"), ct)[0] == v["mask_value"]
    # Erosion by 4 mm: in-plane distance to the body's outside (the slice is 5 mm thick, more than the margin).
    d = ndimage.distance_transform_edt(np.pad(body, 1), sampling=(0.661468, 0.661468))[1:-1, 1:-1]
    roi = d > 4.0 + 1e-4
    ds = pydicom.dcmread(PYDICOM_CT)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert v["roi_voxels"] == int(roi.sum()) > 300
    assert v["hu_mean"] == pytest.approx(float(hu[roi].mean()), abs=1e-9)
    assert v["hu_median"] == pytest.approx(float(np.median(hu[roi])), abs=1e-9)
    assert v["hu_sd"] == pytest.approx(float(hu[roi].std(ddof=1)), abs=1e-9)
    assert 100 < v["hu_mean"] < 400  # trabecular bone of a real vertebra


def test_seg_and_sr_reference_the_real_series(real):
    import pydicom

    root, ct, m, rep = real
    src = pydicom.dcmread(PYDICOM_CT, stop_before_pixels=True)
    seg = pydicom.dcmread(str(root / "out" / "seg.dcm"))
    sr = pydicom.dcmread(str(root / "out" / "sr.dcm"))
    for ds in (seg, sr):
        assert ds.PatientID == src.PatientID and ds.StudyInstanceUID == src.StudyInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert {s.SeriesInstanceUID for s in ev} == {src.SeriesInstanceUID, seg.SeriesInstanceUID}
    if shutil.which("dciodvfy"):
        for name in ("seg.dcm", "sr.dcm"):
            r = subprocess.run(["dciodvfy", str(root / "out" / name)], capture_output=True, text=True)
            assert not [x for x in (r.stdout + r.stderr).splitlines() if x.startswith("Error")]
