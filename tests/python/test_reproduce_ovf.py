"""Seed 002's reproduction as a preset of the ovf task, at tiny sizes (table.json layout, CIs against the
confusion matrix, McNemar against the binomial test, checkpoints, pictures), `osteonet predict` on its
run folder with a NIfTI and the same scan as an axial DICOM series, and the spine-finding slice
selection on a scan whose spine is not in the middle."""

import json
import os

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import check_table_layout
from osteonet import metrics as om
from osteonet import sequence as seq
from osteonet.cli import main
from osteonet.reproduce import ovf

TINY = dict(n_scans=16, volume_size=(20, 48, 48), image_size=32, stage1_epochs=2, stage1_batch_size=16,
            stage2_epochs=3, stage2_batch_size=4, occlusion_slices=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ovf"))
    res = ovf.reproduce(out, preset="quick", seed=0, progress=False, overrides=TINY)
    with open(os.path.join(out, "table.json")) as f:
        table = json.load(f)
    return out, res, table


def _ours(table):
    return [r for r in table["rows"] if "variant" in r.get("details", {})]


def test_table_json_layout_and_intervals(run):
    out, res, table = run
    check_table_layout(table, "ovf", "002")
    rows = _ours(table)
    assert [r["method"] for r in rows] == ["CNN/max pooling", "CNN/mean pooling", "CNN/voting", "CNN/LSTM"]
    scans = table["extras"]["test_scans"]
    n = table["extras"]["split"]["test"]
    assert n == len(scans) == 4
    labels = np.array([s["label"] for s in scans])
    for r in rows:
        m = {k: v["value"] for k, v in r["metrics"].items()}
        ci = {k: v["ci"] for k, v in r["metrics"].items()}
        (tn, fp), (fn, tp) = r["details"]["confusion_matrix"]
        assert tn + fp + fn + tp == n == r["n"]
        scores = np.array([s["scores"][r["details"]["variant"]] for s in scans])
        pred = scores >= 0.5
        assert tp == int(np.sum(pred & (labels == 1))) and fp == int(np.sum(pred & (labels == 0)))
        assert m["accuracy"] == pytest.approx(100 * (tp + tn) / n)
        assert m["recall"] == pytest.approx(100 * tp / (tp + fn))
        assert m["specificity"] == pytest.approx(100 * tn / (tn + fp))
        k = tp + tn  # Clopper-Pearson from the beta distribution, by hand
        want_lo = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
        want_hi = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
        assert ci["accuracy"] == pytest.approx([100 * want_lo, 100 * want_hi], abs=1e-6)
        assert 0.0 <= m["auc"] <= 1.0 and m["auc"] == pytest.approx(om.roc_auc(labels, scores))
    lstm = [r for r in rows if r["details"]["variant"] == "lstm"][0]
    assert lstm["metrics"]["accuracy"]["paper"] == 89.2 and lstm["details"]["paper_ci"]["accuracy"] == [82.5, 93.9]
    assert table["rows"][0]["method"] == "Radiologists' reports" and table["rows"][0]["metrics"]["accuracy"]["value"] is None


def test_mcnemar_between_all_aggregator_pairs(run):
    _, _, table = run
    scans, mc = table["extras"]["test_scans"], table["extras"]["mcnemar"]
    pairs = {(c["a"], c["b"]) for c in mc}
    assert len(pairs) == 6 and ("max", "lstm") in pairs
    labels = np.array([s["label"] for s in scans])
    for c in mc:
        pa = np.array([s["scores"][c["a"]] >= 0.5 for s in scans])
        pb = np.array([s["scores"][c["b"]] >= 0.5 for s in scans])
        ra, rb = pa == labels, pb == labels
        b, d = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
        assert c["paired_table"][0][1] == b and c["paired_table"][1][0] == d
        want = 1.0 if b + d == 0 else min(1.0, stats.binomtest(min(b, d), b + d, 0.5).pvalue)
        assert c["mcnemar_p"] == pytest.approx(want)


def test_files_checkpoints_and_markdown(run):
    out, res, table = run
    runf = os.path.join(out, "run")
    for name in ("encoder.pt", "max.pt", "mean.pt", "vote.pt", "lstm.pt", "roc.png", "model.json"):
        assert os.path.getsize(os.path.join(runf, name)) > 0, name
    assert len(table["files"]["occlusion"]) == 2 and all(os.path.exists(os.path.join(out, p)) for p in table["files"]["occlusion"])
    md = open(os.path.join(out, "table.md")).read()
    assert "CNN/LSTM" in md and "89.2 (82.5~93.9)" in md and "McNemar" in md
    # The LSTM checkpoint rebuilds the pipeline: backbone as the stage-1 encoder, its own FC layers.
    enc, agg, card = seq.load_ovf_checkpoint(os.path.join(runf, "lstm.pt"))
    stage1 = seq.create_slice_encoder()
    from osteonet.train import load_checkpoint

    load_checkpoint(os.path.join(runf, "encoder.pt"), stage1, restore_rng=False)
    torch.testing.assert_close(enc.state_dict()["backbone.conv1.weight"], stage1.state_dict()["backbone.conv1.weight"])
    assert not torch.equal(enc.state_dict()["fc1.weight"], stage1.state_dict()["fc1.weight"])  # fine-tuned in stage 2
    assert card["aggregator"] == "lstm" and card["aggregator_options"]["hidden_size"] == 256
    with pytest.raises(ValueError, match="not an OVF aggregator checkpoint"):
        seq.load_ovf_checkpoint(os.path.join(runf, "encoder.pt"))
    model_card = json.load(open(os.path.join(runf, "model.json")))
    assert model_card["preprocessing"]["slices"] == "centre" and model_card["training_data"]["synthetic"]


def _predict(capsys, checkpoint, path, out, *extra):
    capsys.readouterr()
    rc = main(["predict", "--task", "ovf", "--checkpoint", checkpoint, "--out", out, *extra, path])
    assert rc == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_predict_nifti_equals_the_evaluation(run, capsys, tmp_path):
    out, _, table = run
    scan = table["extras"]["test_scans"][0]
    for agg in ("mean", "lstm"):  # the reproduction evaluates with the paper's rule: centre slices
        got = _predict(capsys, os.path.join(out, "run", f"{agg}.pt"), os.path.join(out, scan["path"]), str(tmp_path),
                       "--set", "slices=centre", "--set", f"occlusion={agg == 'lstm'}")
        assert got["aggregator"] == agg and got["probability"] == scan["scores"][agg]
        assert got["positive"] == (got["probability"] >= 0.5)
        assert got["slice_indices"] == [8, 9, 10, 11] == got["slices"]["slice_indices"]  # 20 % of 20 sagittal slices
        assert got["slices"]["mode"] == "centre" and "not a finding" in got["notice"]
    assert os.path.exists(got["picture"]) and json.load(open(got["json"]))["probability"] == got["probability"]


def test_predict_dicom_series_agrees_with_nifti(run, capsys, tmp_path):
    from osteonet.io import read_nifti
    from osteonet.synth.writers import write_ct_dicom

    out, _, table = run
    scan = table["extras"]["test_scans"][-1]
    nifti = os.path.join(out, scan["path"])
    vol, affine = read_nifti(nifti)
    # An axial series: slices towards superior, rows towards posterior, columns towards the left (LPS).
    axial = seq.reorient_to_sagittal(vol, affine=affine, target=("S", "P", "L"))
    folder = tmp_path / "series"
    for k in range(axial.shape[0]):
        write_ct_dicom(str(folder / f"{k:03d}.dcm"), axial[k].astype(np.int16), pixel_spacing=0.9, patient_id="P1",
                       study_uid="1.2.3", series_uid="1.2.3.4", sop_uid=f"1.2.3.4.{k + 1}", instance=k + 1,
                       z_mm=1.0 * k, kvp=120)
    want = _predict(capsys, os.path.join(out, "run", "lstm.pt"), nifti, str(tmp_path / "a"))
    got = _predict(capsys, os.path.join(out, "run", "lstm.pt"), str(folder), str(tmp_path / "b"), "--set", "occlusion=false")
    assert got["slices"]["mode"] == "spine" and got["slices"]["slice_indices"] == want["slices"]["slice_indices"]
    assert got["sagittal_shape"] == want["sagittal_shape"]
    assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)
    np.testing.assert_allclose(got["slice_probabilities"], want["slice_probabilities"], atol=1e-5)
    other = _predict(capsys, os.path.join(out, "run"), str(folder), str(tmp_path / "c"), "--set", "aggregator=max",
                     "--set", "occlusion=false")
    assert other["aggregator"] == "max"
    assert other["probability"] == pytest.approx(max(other["slice_probabilities"]), abs=1e-6)


def _off_centre_scan(tmp_path, spine=True):
    """80 sagittal slices of soft tissue; the spine (a built-in stack of 20 slices) at x 50..69, a bright
    vertical vessel at x 30 in front of it (anterior columns). Axis codes R, I, P as the built-in stacks."""
    import nibabel as nib

    from osteonet.synth import sagittal_scan

    s = sagittal_scan(np.random.default_rng(3), 90, True, size=(20, 48, 48))
    vol = np.full((80, 48, 48), 40.0, np.float32)
    if spine:
        vol[50:70] = s.hu
    vol[28:32, :, 4:8] = 350.0  # contrast-filled vessel, anterior
    path = str(tmp_path / ("scan.nii.gz" if spine else "no_spine.nii.gz"))
    nib.save(nib.Nifti1Image(vol, s.affine), path)
    mask = np.zeros(vol.shape, np.uint8)
    mask[52:68, 10:40, 20:40] = 1
    nib.save(nib.Nifti1Image(mask, s.affine), str(tmp_path / "vertebrae.nii.gz"))
    return path


def test_slices_are_taken_at_the_spine_not_the_volume_centre(run, capsys, tmp_path):
    out, _, _ = run
    path = _off_centre_scan(tmp_path)
    # sagittal axis 0 runs towards the left: x (towards the right) 50..69 are sagittal slices 10..29
    spine = set(range(10, 30))
    got = _predict(capsys, os.path.join(out, "run"), path, str(tmp_path / "s"), "--set", "slices=spine", "--set",
                   "occlusion=false")
    assert got["slices"]["mode"] == "spine" and set(got["slice_indices"]) <= spine and len(got["slice_indices"]) == 4
    assert got["slices"]["range"][0] >= 9 and got["slices"]["range"][1] <= 30 and got["slices"]["spine_score"] > 0.5
    centre = _predict(capsys, os.path.join(out, "run"), path, str(tmp_path / "c"), "--set", "slices=centre", "--set",
                      "occlusion=false")
    assert not set(centre["slice_indices"]) & spine  # the paper's rule would read the soft tissue in the middle
    masked = _predict(capsys, os.path.join(out, "run"), path, str(tmp_path / "m"), "--set", "slices=mask", "--set",
                      f"mask={tmp_path / 'vertebrae.nii.gz'}", "--set", "occlusion=false")
    assert os.path.exists(masked["picture"]) and "occlusion" not in masked["picture"]  # a picture, without the map
    assert masked["slices"]["range"] == [12, 27] and set(masked["slice_indices"]) <= spine
    none = _off_centre_scan(tmp_path, spine=False)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", os.path.join(out, "run"), "--out", str(tmp_path), "--set", "slices=spine", none]) == 2
    err = capsys.readouterr().err.strip()
    assert "no spine found" in err and "\n" not in err
    assert main(["predict", "--checkpoint", os.path.join(out, "run"), "--out", str(tmp_path), "--set", "slices=mask", none]) == 2
    assert "slices=mask needs a vertebra mask" in capsys.readouterr().err


def test_predict_bad_inputs_are_one_line_errors(run, capsys, tmp_path):
    from osteonet.synth.writers import write_png

    out, _, _ = run
    png = str(tmp_path / "slice.png")
    write_png(png, np.zeros((16, 16), np.uint8))
    assert main(["predict", "--task", "ovf", "--checkpoint", os.path.join(out, "run", "lstm.pt"), "--out", str(tmp_path), png]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected a CT volume" in err


def test_reproduce_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        ovf.reproduce(str(tmp_path), preset="fast")
    with pytest.raises(ValueError, match="unknown override"):
        ovf.reproduce(str(tmp_path), overrides={"epochs": 1})
    with pytest.raises(ValueError, match="aggregator"):
        ovf.reproduce(str(tmp_path), variants=["median"])
    with pytest.raises(ValueError, match="aggregators must be among"):
        seq.train_two_stage([torch.zeros(2, 8, 8)], [1], aggregators=["median"])
