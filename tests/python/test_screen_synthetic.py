"""osteonet.screen against synthetic lumbar spines with exact ground truth (osteonet.synth.spine): known
trabecular HU, column heights, wedge / biconcave / crush deformities at chosen Genant grades, anisotropic
voxels, several axis orders and oblique grids; bodies given as labels, through a body mask, or derived
from whole-vertebra masks; the same numbers from the NIfTI and from the DICOM series of one volume."""

import os

import numpy as np
import pytest

from osteonet.screen import load_table, measure, read_ct, read_label_map, screen
from osteonet.synth.spine import TOTAL_LABELS, default_specs, genant_truth, spine_volume


def graded_specs():
    """Deformities in the middle of their grade's height-loss band, one of each morphology and grade."""
    specs = default_specs()
    specs[1].deformity, specs[1].loss = "wedge", 0.325  # T12: grade 2
    specs[3].deformity, specs[3].loss = "biconcave", 0.225  # L2: grade 1
    specs[5].deformity, specs[5].loss = "crush", 0.50  # L4: grade 3
    for i, s in enumerate(specs):
        s.hu = 60.0 + 25.0 * i  # 60 (T11) ... 210 (L5) HU: every ACR class
    return specs


# Grids: (array axis codes, spacing, shape, oblique degrees). SPL: an axial DICOM series as read; LIP:
# sagittal slices; RAS: a NIfTI in canonical order; obliques turn the grid about the anterior axis.
OBLIQUE = [("SPL", (1.5, 0.8, 0.8), (150, 170, 170), 10.0), ("SPL", (1.0, 0.7, 0.7), (220, 190, 190), 20.0),
           ("LIP", (0.8, 0.8, 0.8), (170, 280, 170), 10.0), ("RAS", (0.9, 0.9, 1.25), (150, 150, 180), 20.0)]
ALIGNED = [("SPL", (1.5, 0.8, 0.8), (150, 170, 170), 0.0), ("RAS", (0.9, 0.9, 1.25), (150, 150, 180), 0.0),
           ("LIP", (0.8, 0.8, 0.8), (170, 280, 170), 0.0)]


def make(grid, seed=2):
    axc, sp, shape, obl = grid
    return spine_volume(shape=shape, spacing=sp, axcodes=axc, oblique_deg=obl, specs=graded_specs(), seed=seed,
                        roll_deg=5.0)


def run(vol, mode):
    order_table = load_table("total")
    if mode == "labels":  # bodies as the label map (osteonet's own output looks like this)
        lab = np.where(vol.bodies == 1, vol.vertebrae, 0).astype(np.uint8)
        table = load_table("total")
        table = type(table)(table.name, table.vertebrae, table.known, "body", table.description)
        return measure(vol.hu, lab, vol.affine, table)
    body = (vol.bodies == 1).astype(np.uint8) if mode == "body_mask" else None
    return measure(vol.hu, vol.vertebrae, vol.affine, order_table, body=body)


def by_label(res):
    return {v["label"]: v for v in res["vertebrae"]}


def check_against_truth(vol, res, height_tol, bodies_only=False, grades_exact=True):
    got = by_label(res)
    truth = [t for t in vol.truth if t.body_in_view or not bodies_only]
    assert set(got) == {t.label for t in truth}
    heights_err = []
    for t in truth:
        v = got[t.label]
        assert v["name"] == t.name
        assert v["complete"] == t.complete, (t.name, v["flags"])
        if not t.complete:
            assert v["genant_grade"] is None and v["body_volume_ml"] is None
            assert {"incomplete", "no_body"} & set(v["flags"]), v["flags"]
            continue
        assert abs(v["hu_mean"] - t.hu) <= 0.5, (t.name, v["hu_mean"], t.hu)
        assert abs(v["hu_median"] - t.hu) <= 1.0, (t.name, v["hu_median"], t.hu)  # 0.5 HU steps: the median jumps
        assert v["hu_sd"] == pytest.approx(10.0, abs=1.5)  # the generator's noise
        h = v["heights_mm"]
        for got_h, true_h in zip((h["anterior"], h["middle"], h["posterior"]), t.heights_mm):
            heights_err.append(abs(got_h - true_h))
            assert abs(got_h - true_h) <= height_tol, (t.name, h, t.heights_mm, height_tol)
        if grades_exact or t.genant_grade != 1:
            assert v["genant_grade"] == t.genant_grade, (t.name, v["height_loss"], t.height_loss)
        else:  # the mild band (20-25 %) is narrower than two voxel rows on a 25 mm body
            assert abs(v["genant_grade"] - t.genant_grade) <= 1
        assert abs(v["height_loss"] - t.height_loss) <= 2 * height_tol / t.reference_height_mm
        assert v["body_volume_ml"] == pytest.approx(t.volume_ml, rel=0.02)
        assert v["bmd_mg_cm3"] == pytest.approx(v["hu_mean"])  # phantomless default
        cls = 0 if v["bmd_mg_cm3"] > 120 else 2 if v["bmd_mg_cm3"] < 80 else 1
        assert v["acr_class"] == cls
    return heights_err


@pytest.fixture(scope="module", params=OBLIQUE, ids=lambda g: f"{g[0]}-{g[3]:.0f}deg")
def oblique_volume(request):
    return make(request.param), request.param


@pytest.mark.parametrize("mode", ["labels", "body_mask", "derived"])
def test_oblique_grids_half_voxel_heights_hu_and_grades(oblique_volume, mode):
    vol, grid = oblique_volume
    err = check_against_truth(vol, run(vol, mode), height_tol=0.5 * max(grid[1]), bodies_only=mode == "labels")
    assert np.mean(err) < 0.15 * max(grid[1])


@pytest.mark.parametrize("grid", ALIGNED, ids=lambda g: f"{g[0]}-aligned")
def test_aligned_grids_one_voxel_heights(grid):
    """Endplates parallel to the voxel rows: a mask places each endplate to a row, so no mask-based height
    can be better than one voxel along the height axis there; HU stays exact, and grades too except in the
    mild band (20-25 %), which is narrower than the height quantisation of 1.25-1.5 mm slices."""
    vol = make(grid)
    check_against_truth(vol, run(vol, "derived"), height_tol=1.0 * max(grid[1]), grades_exact=False)


def test_truth_follows_the_documented_reference_rule():
    vol = make(OBLIQUE[0])
    t = vol.truth_by_name()
    assert [x.genant_grade for x in vol.truth if x.complete] == [2, 0, 1, 0, 3, 0]
    assert not t["T11"].complete
    # Crush L4: only its neighbours reveal the loss; its own columns are all equal.
    assert max(t["L4"].heights_mm) - min(t["L4"].heights_mm) < 1e-9
    assert t["L4"].height_loss == pytest.approx(1 - t["L4"].heights_mm[0] / t["L4"].reference_height_mm)
    g = genant_truth([(20, 20, 20), (25, 25, 25), None, (30, 30, 30)])
    # Index 0: its one complete neighbour within 2 is 25 -> reference 25, loss 0.2; index 3: its own 30 wins.
    assert g[0][:2] == (25.0, pytest.approx(0.2)) and g[2][2] is None and g[3][0] == 30 and g[1][0] == 25.0


def test_nifti_and_dicom_series_give_the_same_numbers(tmp_path):
    vol = make(OBLIQUE[0])
    paths = vol.write_nifti(str(tmp_path / "nii"))
    vol.write_dicom(str(tmp_path / "dcm"))
    a = screen(paths["ct"], masks=paths["vertebrae"])
    b = screen(str(tmp_path / "dcm"), masks=paths["vertebrae"])
    assert a["input"]["format"] == "nifti" and b["input"]["format"] == "dicom"
    assert len(a["vertebrae"]) == len(b["vertebrae"]) == len(vol.truth)
    for x, y in zip(a["vertebrae"], b["vertebrae"]):
        assert x["name"] == y["name"] and x["roi_voxels"] == y["roi_voxels"] and x["body_voxels"] == y["body_voxels"]
        for k in ("hu_mean", "hu_median", "hu_sd", "bmd_mg_cm3", "body_volume_ml", "height_loss", "reference_height_mm"):
            if x[k] is None:
                assert y[k] is None
            else:
                assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-6), k
        for k in ("anterior", "middle", "posterior"):
            if x["heights_mm"][k] is not None:
                assert y["heights_mm"][k] == pytest.approx(x["heights_mm"][k], abs=1e-5)
        assert x["genant_grade"] == y["genant_grade"] and x["acr_class"] == y["acr_class"]


def test_rescale_slope_and_axis_order_of_the_series(tmp_path):
    """The series is stored as (HU + 1024) / 0.5; reading applies the real slope and intercept."""
    vol = spine_volume(shape=(40, 60, 60), seed=3)
    files = vol.write_dicom(str(tmp_path / "dcm"))
    import pydicom

    ds = pydicom.dcmread(files[0])
    assert float(ds.RescaleSlope) == 0.5 and float(ds.RescaleIntercept) == -1024.0
    ct = read_ct(str(tmp_path / "dcm"))
    assert np.array_equal(ct.hu, vol.hu) and np.allclose(ct.affine, vol.affine, atol=1e-9)


def test_masks_in_another_axis_order_are_reordered_exactly(tmp_path):
    """A label map of the same voxels stored in another axis order and direction (as dcm2niix writes for a
    DICOM series) is put back on the CT's grid exactly; a shifted grid is refused."""
    import nibabel as nib

    vol = make(OBLIQUE[0])
    paths = vol.write_nifti(str(tmp_path / "nii"))
    ct = read_ct(paths["ct"])
    flipped = np.flip(np.transpose(vol.vertebrae, (2, 0, 1)), axis=1)
    aff = vol.affine.copy()
    perm = aff[:, [2, 0, 1, 3]]
    n = vol.vertebrae.shape[0]
    perm[:3, 3] = perm[:3, 3] + perm[:3, 1] * (n - 1)
    perm[:3, 1] = -perm[:3, 1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(flipped), perm), str(tmp_path / "moved.nii.gz"))
    got = read_label_map(str(tmp_path / "moved.nii.gz"), ct)
    assert np.array_equal(ct.to_file_layout(got), vol.vertebrae)
    shifted = vol.affine.copy()
    shifted[:3, 3] += 0.4
    nib.save(nib.Nifti1Image(vol.vertebrae, shifted), str(tmp_path / "shifted.nii.gz"))
    with pytest.raises(ValueError, match="not on the CT's voxel grid"):
        read_label_map(str(tmp_path / "shifted.nii.gz"), ct)


def test_vertebrae_body_table_and_verse_numbering():
    vol = make(OBLIQUE[0])
    # TotalSegmentator's vertebrae_body: one value for every body, told apart by the discs.
    res = measure(vol.hu, vol.bodies, vol.affine, load_table("vertebrae_body"))
    complete = [t for t in vol.truth if t.complete]
    got = [v for v in res["vertebrae"] if v["complete"]]
    assert len(got) == len(complete)
    assert [v["name"] for v in res["vertebrae"]] == [f"V{i}" for i in range(1, len(res["vertebrae"]) + 1)]
    assert [round(v["hu_mean"]) for v in got] == [round(t.hu) for t in complete]
    assert [v["genant_grade"] for v in got] == [t.genant_grade for t in complete]
    assert not any(v["level_known"] for v in res["vertebrae"])
    # VerSe numbering of the same vertebrae: same measurements, level names kept.
    verse = load_table("verse")
    to_verse = {TOTAL_LABELS[n]: v for v, n in verse.vertebrae.items() if n in TOTAL_LABELS}
    lab = np.zeros_like(vol.vertebrae)
    for total_value, verse_value in to_verse.items():
        lab[vol.vertebrae == total_value] = verse_value
    a = by_label(run(vol, "derived"))
    b = measure(vol.hu, lab, vol.affine, verse)
    for v in b["vertebrae"]:
        ref = a[TOTAL_LABELS[v["name"]]]
        assert v["hu_mean"] == pytest.approx(ref["hu_mean"]) and v["genant_grade"] == ref["genant_grade"]


def test_calibrations_change_bmd_and_classes_not_hu():
    vol = make(OBLIQUE[0])
    from osteonet.screen import from_phantom, linear

    base = by_label(run(vol, "body_mask"))
    res = measure(vol.hu, vol.vertebrae, vol.affine, load_table("total"), body=(vol.bodies == 1).astype(np.uint8),
                  calibration=linear(0.8, 5.0))
    for v in res["vertebrae"]:
        if v["hu_mean"] is not None:
            assert v["hu_mean"] == base[v["label"]]["hu_mean"]
            assert v["bmd_mg_cm3"] == pytest.approx(0.8 * v["hu_mean"] + 5.0)
    # An in-scan phantom: rods of known HU; the fitted line maps them onto their densities.
    hu = vol.hu.copy()
    rods = np.zeros(hu.shape, np.uint8)
    for k, (value, sl) in enumerate([(50.0, np.s_[:4, :6, :6]), (150.0, np.s_[:4, :6, -6:]), (250.0, np.s_[-4:, :6, :6])], 1):
        hu[sl], rods[sl] = value, k
    cal = from_phantom(hu, rods, [40.0, 120.0, 200.0])
    assert cal.slope == pytest.approx(0.8) and cal.intercept == pytest.approx(0.0, abs=1e-9)
    assert cal.details["r2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rods \\[3\\] have no voxel"):
        from_phantom(hu, np.where(rods == 3, 0, rods).astype(np.uint8), [40.0, 120.0, 200.0])
