"""Seed 002's reproduction driver end to end at tiny sizes (table.json layout, CIs against the confusion
matrix, McNemar against the binomial test, checkpoints, pictures) and `osteonet predict --task ovf` on
a NIfTI and on the same scan written as an axial DICOM series, plus bad inputs."""

import json
import os

import numpy as np
import pytest
import torch
from scipy import stats

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


def test_table_json_layout_and_intervals(run):
    out, res, table = run
    rows = table["rows"]
    assert [r["method"] for r in rows] == ["CNN/max pooling", "CNN/mean pooling", "CNN/voting", "CNN/LSTM"]
    n = table["split"]["test"]
    assert n == len(table["test_scans"]) == 4
    labels = np.array([s["label"] for s in table["test_scans"]])
    for r in rows:
        (tn, fp), (fn, tp) = r["confusion_matrix"]
        assert tn + fp + fn + tp == n
        scores = np.array([s["scores"][r["aggregator"]] for s in table["test_scans"]])
        pred = scores >= 0.5
        assert tp == int(np.sum(pred & (labels == 1))) and fp == int(np.sum(pred & (labels == 0)))
        assert r["accuracy"] == pytest.approx(100 * (tp + tn) / n)
        assert r["recall"] == pytest.approx(100 * tp / (tp + fn))
        assert r["specificity"] == pytest.approx(100 * tn / (tn + fp))
        lo, hi = om.proportion_ci(tp + tn, n, "clopper-pearson")
        assert r["accuracy_ci"] == pytest.approx([100 * lo, 100 * hi])
        # Clopper-Pearson from the beta distribution, by hand
        k = tp + tn
        want_lo = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
        want_hi = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
        assert r["accuracy_ci"] == pytest.approx([100 * want_lo, 100 * want_hi], abs=1e-6)
        for m in ovf.METRICS:
            assert f"{m}_ci" in r and len(r[f"{m}_ci"]) == 2
            if r[f"{m}_ci"][0] is not None:
                assert r[f"{m}_ci"][0] - 1e-9 <= r[m] <= r[f"{m}_ci"][1] + 1e-9
        assert 0.0 <= r["auc"] <= 1.0
        assert r["auc"] == pytest.approx(om.roc_auc(labels, scores))
    assert table["paper"]["lstm"]["accuracy"] == [89.2, 82.5, 93.9]


def test_mcnemar_between_all_aggregator_pairs(run):
    _, _, table = run
    pairs = {(c["a"], c["b"]) for c in table["mcnemar"]}
    assert len(pairs) == 6 and ("max", "lstm") in pairs
    labels = np.array([s["label"] for s in table["test_scans"]])
    for c in table["mcnemar"]:
        pa = np.array([s["scores"][c["a"]] >= 0.5 for s in table["test_scans"]])
        pb = np.array([s["scores"][c["b"]] >= 0.5 for s in table["test_scans"]])
        ra, rb = pa == labels, pb == labels
        b, d = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
        assert c["paired_table"][0][1] == b and c["paired_table"][1][0] == d
        want = 1.0 if b + d == 0 else min(1.0, stats.binomtest(min(b, d), b + d, 0.5).pvalue)
        assert c["mcnemar_p"] == pytest.approx(want)


def test_files_checkpoints_and_markdown(run):
    out, res, table = run
    for name in ("encoder.pt", "max.pt", "mean.pt", "vote.pt", "lstm.pt", "roc.png", "table.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "roc.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(table["occlusion"]) == 2 and all(os.path.exists(os.path.join(out, p)) for p in table["occlusion"])
    md = open(os.path.join(out, "table.md")).read()
    assert "CNN/LSTM" in md and "89.2 (82.5~93.9)" in md and "McNemar" in md
    # The LSTM checkpoint rebuilds the pipeline: backbone as the stage-1 encoder, its own FC layers.
    enc, agg, card = seq.load_ovf_checkpoint(os.path.join(out, "lstm.pt"))
    stage1 = seq.create_slice_encoder()
    from osteonet.train import load_checkpoint

    load_checkpoint(os.path.join(out, "encoder.pt"), stage1, restore_rng=False)
    torch.testing.assert_close(enc.state_dict()["backbone.conv1.weight"], stage1.state_dict()["backbone.conv1.weight"])
    assert not torch.equal(enc.state_dict()["fc1.weight"], stage1.state_dict()["fc1.weight"])  # fine-tuned in stage 2
    assert card["aggregator"] == "lstm" and card["aggregator_options"]["hidden_size"] == 256
    assert agg.config["dropout"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="not an OVF aggregator checkpoint"):
        seq.load_ovf_checkpoint(os.path.join(out, "encoder.pt"))


def _predict(capsys, checkpoint, path, out):
    rc = main(["predict", "--task", "ovf", "--checkpoint", checkpoint, "--out", out, path])
    assert rc == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_predict_nifti_matches_the_evaluation(run, capsys, tmp_path):
    out, _, table = run
    scan = table["test_scans"][0]
    for agg in ("lstm", "mean"):
        got = _predict(capsys, os.path.join(out, f"{agg}.pt"), os.path.join(out, scan["path"]), str(tmp_path))
        assert got["probability"] == pytest.approx(scan["scores"][agg], abs=1e-5)
        assert got["positive"] == (got["probability"] >= 0.5)
        assert len(got["slice_probabilities"]) == len(got["slice_indices"]) == 4  # 20 % of 20 sagittal slices
        assert got["slice_indices"] == [8, 9, 10, 11]
    assert os.path.exists(got["overlay"]) and os.path.exists(got["json"])
    with open(got["json"]) as f:
        assert json.load(f)["probability"] == got["probability"]


def test_predict_dicom_series_agrees_with_nifti(run, capsys, tmp_path):
    from osteonet.io import read_nifti
    from osteonet.synth.writers import write_ct_dicom

    out, _, table = run
    scan = table["test_scans"][-1]
    nifti = os.path.join(out, scan["path"])
    vol, affine = read_nifti(nifti)
    # An axial series: slices towards superior, rows towards posterior, columns towards the left (LPS).
    axial = seq.reorient_to_sagittal(vol, affine=affine, target=("S", "P", "L"))
    folder = tmp_path / "series"
    for k in range(axial.shape[0]):
        write_ct_dicom(str(folder / f"{k:03d}.dcm"), axial[k].astype(np.int16), pixel_spacing=0.9, patient_id="P1",
                       study_uid="1.2.3", series_uid="1.2.3.4", sop_uid=f"1.2.3.4.{k + 1}", instance=k + 1,
                       z_mm=1.0 * k, kvp=120)
    want = _predict(capsys, os.path.join(out, "lstm.pt"), nifti, str(tmp_path / "a"))
    got = _predict(capsys, os.path.join(out, "lstm.pt"), str(folder), str(tmp_path / "b"))
    assert got["sagittal_shape"] == want["sagittal_shape"]
    assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)
    np.testing.assert_allclose(got["slice_probabilities"], want["slice_probabilities"], atol=1e-5)
    # A different aggregator on the same scan gives its own answer.
    other = _predict(capsys, os.path.join(out, "max.pt"), str(folder), str(tmp_path / "c"))
    assert other["aggregator"] == "max"
    assert other["probability"] == pytest.approx(max(other["slice_probabilities"]), abs=1e-6)


def test_predict_bad_inputs_are_one_line_errors(run, capsys, tmp_path):
    from osteonet.synth.writers import write_png

    out, _, _ = run
    png = str(tmp_path / "slice.png")
    write_png(png, np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="expected a CT volume"):
        seq.predict_ovf(os.path.join(out, "lstm.pt"), png)
    rc = main(["predict", "--task", "ovf", "--checkpoint", os.path.join(out, "lstm.pt"), "--out", str(tmp_path), png])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "expected a CT volume" in err
    rc = main(["predict", "--task", "ovf", "--checkpoint", os.path.join(out, "encoder.pt"), "--out", str(tmp_path), png])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not an OVF aggregator checkpoint" in err and len(err.splitlines()) == 1


def test_reproduce_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        ovf.reproduce(str(tmp_path), preset="fast")
    with pytest.raises(ValueError, match="unknown override"):
        ovf.reproduce(str(tmp_path), overrides={"epochs": 1})
    with pytest.raises(ValueError, match="aggregator"):
        ovf.reproduce(str(tmp_path), aggregators=["median"])
    with pytest.raises(ValueError, match="aggregators must be among"):
        seq.train_two_stage([torch.zeros(2, 8, 8)], [1], aggregators=["median"])


def test_cli_parses_ovf_commands():
    from osteonet.cli import build_parser

    a = build_parser().parse_args(["reproduce", "ovf", "--preset", "paper", "--out", "x", "--variants", "lstm,max"])
    assert (a.paper, a.preset, a.variants) == ("ovf", "paper", "lstm,max")
    a = build_parser().parse_args(["predict", "--task", "ovf", "--checkpoint", "c.pt", "--out", "o", "scan.nii.gz"])
    assert (a.task, a.input_path, a.input) == ("ovf", "scan.nii.gz", None)
    with pytest.raises(SystemExit):
        main(["predict", "--task", "ovf", "--checkpoint", "c.pt", "--out", "o", "--input", "a.nii", "b.nii"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--task", "bmd_ovf", "--checkpoint", "c.pt", "--out", "o", "a.nii"])
    assert main(["predict", "--task", "ovf", "--checkpoint", "c.pt", "--out", "o"]) == 2  # no input at all
