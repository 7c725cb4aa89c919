"""osteonet screen's outputs and refusals: report.json (schema), vertebrae.csv, report.png, report.html
(rendered in Debian's headless Chromium), NIfTI masks in the CT's geometry, the DICOM SEG (frames map
back onto the NIfTI masks exactly) and the TID 1500 SR (pydicom, dcmtk's dsrdump, dicom3tools'
dciodvfy); bad inputs: one line each, nothing written; the command line."""

import csv
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from osteonet.screen import OUTPUT_FILES, REPORT_SCHEMA, REPORT_VERSION, screen
from osteonet.synth.spine import default_specs, spine_volume


def small_specs():
    specs = default_specs()
    specs[2].deformity, specs[2].loss = "wedge", 0.33  # L1
    for i, s in enumerate(specs):
        s.hu = [70.0, 95.0, 100.0, 140.0, 180.0, 60.0, 200.0][i]
    return specs


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A small oblique spine written as NIfTI and as a DICOM series, screened from the series."""
    root = tmp_path_factory.mktemp("screen")
    vol = spine_volume(shape=(120, 110, 110), spacing=(2.0, 1.2, 1.2), axcodes="SPL", oblique_deg=12.0,
                       specs=small_specs(), seed=5)
    paths = vol.write_nifti(str(root / "nii"))
    vol.write_dicom(str(root / "dcm"))
    out = root / "out"
    rep = screen(str(root / "dcm"), out=str(out), masks=paths["vertebrae"], body_mask=paths["bodies"])
    return vol, paths, root, out, rep


def test_every_output_is_written_and_listed(case):
    vol, paths, root, out, rep = case
    names = sorted(os.listdir(out))
    assert names == sorted(["report.json", "vertebrae.csv", "report.png", "report.html", "bodies.nii.gz", "rois.nii.gz",
                            "seg.dcm", "sr.dcm"])
    assert set(names) <= set(OUTPUT_FILES) and rep["outputs"] == names
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left


def test_report_json_schema(case):
    vol, paths, root, out, rep = case
    with open(out / "report.json") as f:
        j = json.load(f)
    assert j["schema"] == REPORT_SCHEMA and j["schema_version"] == REPORT_VERSION
    for key in ("generator", "created", "disclaimer", "input", "method", "calibration", "thresholds", "vertebrae",
                "not_screened", "l1_screen", "summary", "limits", "outputs", "timings_s"):
        assert key in j, key
    assert "not a medical device" in j["disclaimer"]
    assert j["input"]["format"] == "dicom" and j["input"]["body_source"] == "body_mask"
    assert set(j["thresholds"]) == {"acr", "genant", "pickhardt"}
    assert all("citation" in t for t in j["thresholds"].values())
    truth = vol.truth_by_name()
    names = [v["name"] for v in j["vertebrae"]]
    assert names == [t.name for t in vol.truth]
    for v in j["vertebrae"]:
        for key in ("index", "name", "label", "complete", "flags", "body_volume_ml", "roi_voxels", "hu_mean", "hu_median",
                    "hu_sd", "bmd_mg_cm3", "acr_class", "acr_class_name", "heights_mm", "height_ratios", "height_loss",
                    "genant_grade", "axes", "centroid_mm", "mask_value"):
            assert key in v, key
        t = truth[v["name"]]
        if t.complete:
            assert abs(v["hu_mean"] - t.hu) <= 0.5 and v["genant_grade"] == t.genant_grade
    l1 = j["l1_screen"]
    assert l1["available"] and l1["hu"] == pytest.approx(100.0, abs=0.5) and l1["profile"] == "osteoporosis_likely"
    assert j["summary"]["fractures"] == [{"name": "L1", "genant_grade": truth["L1"].genant_grade,
                                         "height_loss": pytest.approx(truth["L1"].height_loss, abs=0.03)}]
    assert j["summary"]["acr_counts"]["osteoporosis"] == sum(1 for v in j["vertebrae"] if v["acr_class"] == 2)


def test_csv_matches_the_report(case):
    vol, paths, root, out, rep = case
    with open(out / "vertebrae.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [v["name"] for v in rep["vertebrae"]]
    for r, v in zip(rows, rep["vertebrae"]):
        if v["hu_mean"] is not None:
            assert float(r["hu_mean"]) == pytest.approx(v["hu_mean"], rel=1e-5)
            assert r["acr_class_name"] == v["acr_class_name"]
        if v["heights_mm"]["anterior"] is not None:
            assert float(r["height_anterior_mm"]) == pytest.approx(v["heights_mm"]["anterior"], rel=1e-5)
            assert int(r["genant_grade"]) == v["genant_grade"]
        else:
            assert r["height_anterior_mm"] == "" and r["genant_grade"] == ""


def ct_order(path, series):
    """A mask written by the screen, on the series' voxel grid in the series' array order (it must be
    the same grid: read_label_map refuses anything else)."""
    from osteonet.screen import read_ct, read_label_map

    return read_label_map(str(path), read_ct(str(series)))


def test_nifti_masks_in_the_ct_geometry(case):
    import nibabel as nib

    vol, paths, root, out, rep = case
    for name in ("bodies.nii.gz", "rois.nii.gz"):
        img = nib.load(str(out / name))  # a DICOM series' masks: column, row, slice order (as dcm2niix)
        assert img.shape == vol.hu.shape[::-1] and np.allclose(img.affine, vol.affine[:, [2, 1, 0, 3]], atol=1e-4)
    bodies = ct_order(out / "bodies.nii.gz", root / "dcm")
    rois = ct_order(out / "rois.nii.gz", root / "dcm")
    for v in rep["vertebrae"]:
        b = bodies == v["mask_value"]
        assert int(b.sum()) == v["body_voxels"] and int((rois == v["mask_value"]).sum()) == v["roi_voxels"]
        if v["body_voxels"]:  # the body is the vertebra's label inside the body mask
            expect = (vol.vertebrae == v["label"]) & (vol.bodies == 1)
            assert np.array_equal(b, expect)
        assert not np.any((rois == v["mask_value"]) & ~b)


def test_seg_frames_map_back_onto_the_nifti_masks(case):
    import nibabel as nib
    import pydicom

    vol, paths, root, out, rep = case
    seg = pydicom.dcmread(str(out / "seg.dcm"))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    ct_files = sorted(os.listdir(root / "dcm"))
    ct = {pydicom.dcmread(str(root / "dcm" / f), stop_before_pixels=True).SOPInstanceUID: f for f in ct_files}
    series_uid = pydicom.dcmread(str(root / "dcm" / ct_files[0]), stop_before_pixels=True).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == set(ct)
    from osteonet.io import read_dicom_series

    _, _, meta = read_dicom_series(str(root / "dcm"))
    pos = np.array(meta["positions"])
    rows, cols, n = int(seg.Rows), int(seg.Columns), int(seg.NumberOfFrames)
    bits = np.unpackbits(np.frombuffer(seg.PixelData, np.uint8), bitorder="little")[: n * rows * cols]
    frames = bits.reshape(n, rows, cols).astype(bool)
    rebuilt = {}
    for i, f in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        p = np.array([float(x) for x in f.PlanePositionSequence[0].ImagePositionPatient])
        k = int(np.argmin(np.linalg.norm(pos - p, axis=1)))
        assert np.linalg.norm(pos[k] - p) < 1e-6
        src = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert src == meta["sop_uids"][k]
        vol_k = rebuilt.setdefault(number, np.zeros(vol.hu.shape, bool))
        vol_k[k] = frames[i]
    bodies = ct_order(out / "bodies.nii.gz", root / "dcm")
    rois = ct_order(out / "rois.nii.gz", root / "dcm")
    by_label = {s.SegmentLabel: int(s.SegmentNumber) for s in seg.SegmentSequence}
    for v in rep["vertebrae"]:
        if not v["body_voxels"]:
            continue
        assert np.array_equal(rebuilt[by_label[f"{v['name']} vertebral body"]], bodies == v["mask_value"])
        if v["roi_voxels"]:
            assert np.array_equal(rebuilt[by_label[f"{v['name']} trabecular ROI"]], rois == v["mask_value"])


def test_sr_is_tid1500_and_references_the_seg_and_the_series(case):
    import pydicom

    vol, paths, root, out, rep = case
    sr = pydicom.dcmread(str(out / "sr.dcm"))
    seg = pydicom.dcmread(str(out / "seg.dcm"))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"
    measurements = [c for c in sr.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "126010"][0]
    groups = measurements.ContentSequence
    segs_refd = set()
    hu_means = {}
    for g in groups:
        items = {c.ConceptNameCodeSequence[0].CodeMeaning: c for c in g.ContentSequence if "ConceptNameCodeSequence" in c}
        ref = items["Referenced Segment"].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        segs_refd.add(int(ref.ReferencedSegmentNumber))
        assert items["Source series for segmentation"].UID == rep["input"]["series_uid"]
        for c in g.ContentSequence:
            if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeValue == "112031":
                deriv = c.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning
                if deriv == "Mean":
                    hu_means[items["Tracking Identifier"].TextValue.split()[0]] = float(c.MeasuredValueSequence[0].NumericValue)
    assert segs_refd == {int(s.SegmentNumber) for s in seg.SegmentSequence}
    for v in rep["vertebrae"]:
        if v["hu_mean"] is not None:
            assert hu_means[v["name"]] == pytest.approx(v["hu_mean"], rel=1e-5)


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dcmtk missing: make deps (Debian package dcmtk)")
def test_dcmtk_reads_the_sr_without_errors(case):
    vol, paths, root, out, rep = case
    r = subprocess.run(["dsrdump", str(out / "sr.dcm")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = (r.stdout + r.stderr).splitlines()
    assert not [x for x in lines if x.startswith(("E:", "F:"))], lines[:5]
    assert "Imaging Measurement Report" in r.stdout and "Referenced Segment" in r.stdout


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools missing: make deps (Debian package dicom3tools)")
@pytest.mark.parametrize("name,iod", [("seg.dcm", "Segmentation"), ("sr.dcm", "ComprehensiveSR")])
def test_dciodvfy_finds_no_error(case, name, iod):
    vol, paths, root, out, rep = case
    r = subprocess.run(["dciodvfy", str(out / name)], capture_output=True, text=True)
    lines = (r.stdout + r.stderr).splitlines()
    assert iod in lines, lines[:5]
    assert not [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Error")][:5]


def test_report_png_shows_both_views_in_class_colours(case):
    from PIL import Image

    from osteonet.screen.report import CLASS_COLOURS

    vol, paths, root, out, rep = case
    img = np.asarray(Image.open(out / "report.png").convert("RGB")).astype(int)
    assert img.shape[0] > 500 and img.shape[1] > 900
    left, right = img[:, : img.shape[1] // 2], img[:, img.shape[1] // 2:]
    for half in (left, right):  # overlays: half CT grey, half class colour -> clearly coloured pixels in each view
        sat = half.max(axis=2) - half.min(axis=2)
        assert (sat > 60).sum() > 2000
    legend = {tuple(c) for c in img.reshape(-1, 3)}
    assert tuple(CLASS_COLOURS["osteoporosis"]) in legend and tuple(CLASS_COLOURS["normal"]) in legend


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium missing: make deps (Debian package chromium)")
def test_report_html_renders_in_headless_chromium(case, tmp_path):
    from PIL import Image

    from osteonet.screen.report import CLASS_COLOURS

    vol, paths, root, out, rep = case
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "src=\"data:image/png;base64," in html
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1300,2400", f"file://{out / 'report.html'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1300)
    pixels = img.reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    present = {v["acr_class_name"] for v in rep["vertebrae"] if v["acr_class_name"]}
    for cls in present:  # the table's class cells, in their exact colours
        assert tuple(CLASS_COLOURS[cls]) in colours, cls
    assert len(colours) > 500  # the embedded picture rendered (a blank or broken image has a handful)
    white = np.all(pixels > 245, axis=1).mean()
    assert 0.2 < white < 0.97


# ---- refusals: one line each, nothing written ----
def series(tmp_path, name="dcm"):
    vol = spine_volume(shape=(24, 40, 40), spacing=(2.5, 1.5, 1.5), specs=default_specs()[2:5], center_level="L2", seed=7)
    files = vol.write_dicom(str(tmp_path / name))
    paths = vol.write_nifti(str(tmp_path / f"{name}_nii"))
    return vol, files, paths


def refused(call, out, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
    assert not os.path.exists(out) or os.listdir(out) == []
    return str(e.value)


def test_bad_series_are_refused(tmp_path):
    import pydicom

    vol, files, paths = series(tmp_path)
    out = str(tmp_path / "out")
    run = lambda folder: screen(folder, out=out, masks=paths["vertebrae"])  # noqa: E731
    # Missing slice.
    miss = tmp_path / "missing"
    shutil.copytree(tmp_path / "dcm", miss)
    os.remove(miss / os.path.basename(files[10]))
    refused(lambda: run(str(miss)), out, "missing slices")
    # Duplicated slice (a copy under another name).
    dup = tmp_path / "dup"
    shutil.copytree(tmp_path / "dcm", dup)
    shutil.copy(files[5], dup / "copy.dcm")
    refused(lambda: run(str(dup)), out, "duplicated slices")
    # Not CT.
    mr = tmp_path / "mr"
    shutil.copytree(tmp_path / "dcm", mr)
    for f in sorted(os.listdir(mr)):
        ds = pydicom.dcmread(str(mr / f))
        ds.Modality = "MR"
        ds.save_as(str(mr / f))
    refused(lambda: run(str(mr)), out, "not a CT series, got modality=MR")
    # Contradictory spacing: one slice's PixelSpacing, or a SpacingBetweenSlices header that the positions deny.
    ps = tmp_path / "ps"
    shutil.copytree(tmp_path / "dcm", ps)
    ds = pydicom.dcmread(str(ps / os.path.basename(files[3])))
    ds.PixelSpacing = [1.6, 1.5]
    ds.save_as(str(ps / os.path.basename(files[3])))
    refused(lambda: run(str(ps)), out, "contradictory spacing: PixelSpacing differs")
    sb = tmp_path / "sb"
    shutil.copytree(tmp_path / "dcm", sb)
    for f in sorted(os.listdir(sb)):
        ds = pydicom.dcmread(str(sb / f))
        ds.SpacingBetweenSlices = 3.0
        ds.save_as(str(sb / f))
    refused(lambda: run(str(sb)), out, "contradictory spacing: SpacingBetweenSlices=3.0")


def test_bad_masks_and_options_are_refused(tmp_path):
    import nibabel as nib

    vol, files, paths = series(tmp_path)
    out = str(tmp_path / "out")
    ct = str(tmp_path / "dcm")
    # A mask on another grid.
    nib.save(nib.Nifti1Image(vol.vertebrae[:, :-1], vol.affine), str(tmp_path / "short.nii.gz"))
    refused(lambda: screen(ct, out=out, masks=str(tmp_path / "short.nii.gz")), out, "not on the CT's voxel grid")
    # Labels the table does not know.
    bad = vol.vertebrae.copy()
    bad[0, 0, 0] = 200
    nib.save(nib.Nifti1Image(bad, vol.affine), str(tmp_path / "bad.nii.gz"))
    msg = refused(lambda: screen(ct, out=out, masks=str(tmp_path / "bad.nii.gz")), out, r"label values \[200\]")
    assert "'total'" in msg
    refused(lambda: screen(ct, out=out, masks=paths["vertebrae"], labels="verse"), out, "not in label table 'verse'")
    refused(lambda: screen(ct, out=out, masks=paths["vertebrae"], labels="totl"), out, "did you mean 'total'")
    # A body mask with other values, a bad calibration, an unknown option.
    refused(lambda: screen(ct, out=out, masks=paths["vertebrae"], body_mask=paths["vertebrae"]), out,
            "a body mask holds 0, 1")
    refused(lambda: screen(ct, out=out, masks=paths["vertebrae"], calibration="linear:1"), out, "linear:SLOPE,INTERCEPT")
    refused(lambda: screen(ct, out=out, masks=paths["vertebrae"], calibration="linear:-1,0"), out, "slope must be finite and > 0")
    with pytest.raises(TypeError, match="did you mean 'roi_margin_mm'"):
        screen(ct, out=out, masks=paths["vertebrae"], roi_margn_mm=3.0)
    # A NIfTI whose header contradicts itself.
    img = nib.load(paths["ct"])
    hdr = img.header.copy()
    hdr["pixdim"][1] = 3.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, hdr), str(tmp_path / "contra.nii"))
    refused(lambda: screen(str(tmp_path / "contra.nii"), out=out, masks=paths["vertebrae"]), out,
            "contradictory spacing: pixdim")
    assert not os.path.exists(out)


def test_command_line(tmp_path, capsys):
    from osteonet.cli import main

    vol, files, paths = series(tmp_path)
    out = tmp_path / "out"
    assert main(["screen", str(tmp_path / "dcm"), "--masks", paths["vertebrae"], "--out", str(out), "--roi-margin", "3"]) == 0
    text = capsys.readouterr().out
    assert "L2" in text and "wrote" in text
    with open(out / "report.json") as f:
        assert json.load(f)["method"]["roi_margin_mm"] == 3.0
    assert main(["screen", str(tmp_path / "dcm"), "--masks", paths["vertebrae"], "--out", str(tmp_path / "o2"),
                 "--labels", "verse"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress lines ("screen: ..."), then one error line
    assert [x for x in err if not x.startswith("screen: ")] == [err[-1]]
    assert err[-1].startswith("osteonet screen: error:") and "'verse'" in err[-1]
    assert not os.path.exists(tmp_path / "o2")


def test_phantom_and_linear_calibrations_end_to_end(tmp_path):
    """An in-scan phantom (rods written into the CT, their label map beside it) and a user line."""
    import nibabel as nib

    vol, files, paths = series(tmp_path)
    hu = vol.hu.copy()
    rods = np.zeros(hu.shape, np.uint8)
    for k, (value, sl) in enumerate([(0.0, np.s_[2:6, 1:4, 1:4]), (100.0, np.s_[2:6, 1:4, -4:-1]),
                                     (200.0, np.s_[-6:-2, 1:4, 1:4])], start=1):
        hu[sl], rods[sl] = value, k
    nib.save(nib.Nifti1Image(hu, vol.affine), str(tmp_path / "ct_phantom.nii.gz"))
    nib.save(nib.Nifti1Image(rods, vol.affine), str(tmp_path / "rods.nii.gz"))
    rep = screen(str(tmp_path / "ct_phantom.nii.gz"), out=str(tmp_path / "out"), masks=paths["vertebrae"],
                 phantom_mask=str(tmp_path / "rods.nii.gz"), phantom_densities=[10.0, 90.0, 170.0])
    cal = rep["calibration"]
    assert cal["name"] == "phantom" and cal["slope"] == pytest.approx(0.8) and cal["intercept"] == pytest.approx(10.0)
    assert [r["hu"] for r in cal["details"]["rods"]] == pytest.approx([0.0, 100.0, 200.0])
    for v in rep["vertebrae"]:
        if v["hu_mean"] is not None:
            assert v["bmd_mg_cm3"] == pytest.approx(0.8 * v["hu_mean"] + 10.0)
    assert "phantom" in (tmp_path / "out" / "report.html").read_text()
    lin = screen(paths["ct"], masks=paths["vertebrae"], calibration="linear:1.2,-20")
    assert lin["calibration"]["name"] == "linear"
    assert all(v["bmd_mg_cm3"] == pytest.approx(1.2 * v["hu_mean"] - 20) for v in lin["vertebrae"] if v["hu_mean"] is not None)
    with pytest.raises(ValueError, match="either a phantom"):
        screen(paths["ct"], masks=paths["vertebrae"], phantom_mask=str(tmp_path / "rods.nii.gz"),
               phantom_densities=[1, 2, 3], calibration="linear:1,0")
    with pytest.raises(ValueError, match="rod labels must be 1..2"):
        screen(paths["ct"], masks=paths["vertebrae"], phantom_mask=str(tmp_path / "rods.nii.gz"), phantom_densities=[1, 2])
