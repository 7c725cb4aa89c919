"""Every task through the command line on its generated example folder: check-data -> train -> evaluate ->
predict; metrics.json, predictions.json and pictures exist; predict equals evaluate on the same input; a
run interrupted in the middle of an epoch and resumed ends bit-identical to the uninterrupted one; the
model card says what the model was trained on, and every prediction of a synthetic-data model says so."""

import json
import os

import numpy as np
import pytest
import torch

from osteonet.cli import main

#: tiny settings per task (seconds on 2 cores)
TINY = {
    "classification": ["--model", "dxa_cnn21", "--epochs", "2", "--image-size", "32", "--batch-size", "4"],
    "detection": ["--model", "mobilenet_v3_large", "--epochs", "2", "--batch-size", "2", "--image-size", "96"],
    "ovf": ["--set", "image_size=32", "--set", "stage1_epochs=2", "--set", "stage1_batch_size=16", "--set",
            "stage2_epochs=2", "--set", "stage2_batch_size=4", "--set", "center_fraction=0.2", "--set", "occlusion_slices=1"],
    "segmentation": ["--epochs", "2", "--image-size", "32", "--batch-size", "2", "--set", "base_channels=4", "--set", "depth=2"],
    "bmd": ["--set", "seg_size=32", "--set", "seg_base_channels=4", "--set", "seg_depth=2", "--set", "seg_epochs=2",
            "--set", "seg_batch_size=4", "--set", "crop_size=32", "--set", "regressor=resnet18", "--set", "reg_epochs=2",
            "--set", "reg_batch_size=4"],
    "hip": ["--set", "seg_size=32", "--set", "seg_base_channels=4", "--set", "seg_depth=2", "--set", "seg_epochs=2",
            "--set", "crop_size=32", "--set", "classifier=resnet18", "--set", "cls_epochs=2", "--set", "cls_batch_size=4",
            "--set", "regions=total_hip,femoral_neck"],
}
TASKS = list(TINY)
#: the record fields evaluate and predict must agree on, per task
#: the training epoch (counting every stage's) that is interrupted: a later stage's for two-stage tasks
INTERRUPTED_EPOCH = {"classification": 2, "detection": 2, "segmentation": 2, "ovf": 3, "bmd": 3, "hip": 3}
SAME = {"classification": ("class", "probabilities"), "detection": ("detections",), "ovf": ("slice_indices",),
        "segmentation": ("pixels", "mask_sha1"), "bmd": ("mask_sha1",), "hip": ("mask_sha1",)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """task -> (data folder, run folder, evaluate folder), each trained once through the CLI."""
    base = tmp_path_factory.mktemp("tasks")
    out = {}
    for task in TASKS:
        data, run, ev = (str(base / task / d) for d in ("data", "run", "eval"))
        assert main(["synth", "--example", task, "--out", data]) == 0
        assert main(["check-data", "--task", task, data]) == 0
        assert main(["train", "--task", task, "--data", data, "--out", run, "--quiet", *TINY[task]]) == 0
        assert main(["evaluate", "--checkpoint", run, "--data", data, "--out", ev, "--split", "test"]) == 0
        out[task] = (data, run, ev)
    return out


@pytest.mark.parametrize("task", TASKS)
def test_train_evaluate_files_and_card(runs, task):
    data, run, ev = runs[task]
    card = json.load(open(os.path.join(run, "model.json")))
    assert card["task"] == task and card["status"] == "trained"
    td = card["training_data"]
    assert td["synthetic"] and td["generator"].startswith("osteonet.synth.") and td["folder"] == os.path.abspath(data)
    assert td["train"]["samples"] + td["test"]["samples"] == td["counts"]["samples"] > 0
    assert card["split"]["test"] and card["request"]["options"] and card["architecture"]
    for name in card["checkpoints"].values():
        assert os.path.getsize(os.path.join(run, name)) > 0, name
    for folder in (run, ev):
        metrics = json.load(open(os.path.join(folder, "metrics.json")))
        assert metrics["task"] == task and metrics["n"] == td["test"]["samples"]
        assert len(json.load(open(os.path.join(folder, "predictions.json")))) >= 1
        pngs = [f for f in os.listdir(folder) if f.endswith(".png")]
        assert pngs and all(open(os.path.join(folder, f), "rb").read(8) == b"\x89PNG\r\n\x1a\n" for f in pngs)
        assert not [f for root, _, files in os.walk(folder) for f in files if f.startswith(".")]  # no temporaries
    assert json.load(open(os.path.join(ev, "metrics.json")))["notice"].startswith("trained on osteonet's built-in synthetic")
    # the held-out split evaluated by `evaluate --split test` equals the one train evaluated
    a = json.load(open(os.path.join(run, "predictions.json")))
    b = json.load(open(os.path.join(ev, "predictions.json")))
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]  # noqa: E731
    assert strip(a) == strip(b)


@pytest.mark.parametrize("task", TASKS)
def test_predict_equals_evaluate(runs, task, tmp_path, capsys):
    data, run, ev = runs[task]
    records = json.load(open(os.path.join(ev, "predictions.json")))
    rec = records[0]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", run, "--out", str(tmp_path), os.path.join(data, rec["id"])]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["task"] == task and res["model"]["synthetic_training_data"] and "not a finding" in res["notice"]
    assert os.path.exists(res["json"]) and json.load(open(res["json"]))["input"] == os.path.join(data, rec["id"])
    for key in SAME[task]:
        assert res[key] == rec[key], key
    if task == "classification":
        assert res["class"] == rec["class"]
    if task == "ovf":
        agg = json.load(open(os.path.join(run, "model.json")))["default_aggregator"]
        assert res["probability"] == rec["probability"][agg] and res["aggregator"] == agg
    if task == "bmd" and res["vertebrae"]:
        assert res["vertebrae"][0]["bmd_mg_cm3"] == rec["bmd"]
    if task == "hip":
        for region, v in rec["regions"].items():
            assert res["regions"][region]["class"] == v["class"] and res["regions"][region]["probabilities"] == v["probabilities"]
    if task in ("segmentation", "bmd", "hip"):  # the mask in the input's geometry
        import nibabel as nib

        from osteonet.io import read_image

        mask = nib.load(res["mask_nifti"])
        assert mask.shape == read_image(os.path.join(data, rec["id"])).shape and (mask.affine == np.eye(4)).all()
    assert any(f.endswith(".png") for f in os.listdir(tmp_path))


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("task", TASKS)
def test_resume_after_an_interrupted_epoch_equals_an_uninterrupted_run(runs, task, tmp_path, monkeypatch):
    """An epoch (the second, or the third: in a later stage for two-stage tasks) stops after its first batch,
    as a killed process would; `train --resume` then ends with the same weights and metrics as the run without a stop."""
    from osteonet.train import trainer as T

    data, run, _ = runs[task]
    out = str(tmp_path / "run")
    original = T.Trainer.train_one_epoch
    calls = {"n": 0}

    def interrupted(self, loader, step_fn):
        calls["n"] += 1
        if calls["n"] != INTERRUPTED_EPOCH[task]:
            return original(self, loader, step_fn)
        done = {"n": 0}

        def step(model, batch):
            if done["n"] == 1:
                raise _Interrupt()
            done["n"] += 1
            return step_fn(model, batch)

        return original(self, loader, step)

    monkeypatch.setattr(T.Trainer, "train_one_epoch", interrupted)
    with pytest.raises(_Interrupt):
        main(["train", "--task", task, "--data", data, "--out", out, "--quiet", *TINY[task]])
    monkeypatch.setattr(T.Trainer, "train_one_epoch", original)
    assert main(["train", "--task", task, "--data", data, "--out", out, "--quiet", *TINY[task]]) == 2  # needs --resume
    assert main(["train", "--task", task, "--data", data, "--out", out, "--quiet", "--resume", *TINY[task]]) == 0
    card = json.load(open(os.path.join(run, "model.json")))
    for name in card["checkpoints"].values():
        a = torch.load(os.path.join(run, name))["model"]
        b = torch.load(os.path.join(out, name))["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    timing = ("seconds_per_image", "fps")
    ma = {k: v for k, v in json.load(open(os.path.join(run, "metrics.json"))).items() if k not in timing}
    mb = {k: v for k, v in json.load(open(os.path.join(out, "metrics.json"))).items() if k not in timing}
    assert ma == mb


def test_options_are_honoured_or_refused_in_one_line(runs, tmp_path, capsys):
    data = runs["bmd"][0]
    cases = [
        (["train", "--task", "bmd", "--data", data, "--out", str(tmp_path / "a"), "--epochs", "3"],
         "train --task bmd: --epochs is not an option of this task; its options: "),
        (["train", "--task", "segmentation", "--data", data, "--out", str(tmp_path / "b"), "--set", "depht=2"],
         "unknown option 'depht'; did you mean 'depth'?"),
        (["train", "--task", "segmentation", "--data", data, "--out", str(tmp_path / "c"), "--set", "depth=two"],
         "option depth takes an integer, got depth='two'"),
        (["train", "--task", "segmentation", "--data", data, "--out", str(tmp_path / "d"), "--model", "unet++"],
         "option model takes one of ['unet', 'unet_plusplus'], got model='unet++'"),
        (["train", "--task", "classification", "--data", data, "--out", str(tmp_path / "e"), "--model", "resnet19"],
         "unknown model 'resnet19'; did you mean 'resnet18'?"),
        (["predict", "--checkpoint", runs["ovf"][1], "--out", str(tmp_path), "--set", "aggregator=gru", "x.nii.gz"],
         "option aggregator takes one of"),
        (["predict", "--checkpoint", runs["ovf"][1], "--task", "bmd", "--out", str(tmp_path), "x.nii.gz"],
         "predict: the model was trained for task 'ovf', got --task bmd"),
        (["evaluate", "--checkpoint", str(tmp_path / "none"), "--data", data, "--out", str(tmp_path)],
         "no such file or folder"),
        (["train", "--task", "bmd", "--data", data, "--out", runs["bmd"][1]], "already holds files; pass --resume"),
        (["train", "--task", "bmd", "--data", data, "--out", runs["bmd"][1], "--resume", "--set", "seg_epochs=3"],
         "was started with other settings, got options="),
        (["predict", "--checkpoint", runs["segmentation"][1], "--out", str(tmp_path), str(tmp_path / "missing.png")],
         "missing.png: input not found"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err and "Traceback" not in err, (argv, err)


def test_an_unfinished_run_cannot_be_evaluated(runs, tmp_path, capsys):
    card = json.load(open(os.path.join(runs["classification"][1], "model.json")))
    card["status"] = "training"
    (tmp_path / "model.json").write_text(json.dumps(card))
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--data", runs["classification"][0], "--out", str(tmp_path / "e")]) == 2
    assert "training has not finished" in capsys.readouterr().err


def test_segmentation_of_volumes_writes_masks_in_their_geometry(tmp_path, capsys):
    """NIfTI image / mask pairs (segmented slice by slice after reorientation): the predicted mask overlays
    the input: same array shape and affine as the input file, whatever its orientation."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    data = tmp_path / "vols"
    data.mkdir()
    rows = ["image,mask,patient_id"]
    for i in range(4):
        vol = rng.normal(0, 50, (20, 24, 6)).astype(np.float32)
        mask = np.zeros(vol.shape, np.uint8)
        mask[5:12, 6:15, :] = 1
        vol[mask > 0] += 900.0  # bone
        affine = np.diag([-0.8, 0.8, 2.5, 1.0]) if i % 2 else np.diag([0.8, -0.8, 2.5, 1.0])  # two orientations
        nib.save(nib.Nifti1Image(vol, affine), str(data / f"v{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine), str(data / f"m{i}.nii.gz"))
        rows.append(f"v{i}.nii.gz,m{i}.nii.gz,P{i}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    (data / "labels.csv").write_text("value,name\n0,background\n1,bone\n")
    assert main(["check-data", "--task", "segmentation", str(data)]) == 0
    run = str(tmp_path / "run")
    assert main(["train", "--task", "segmentation", "--data", str(data), "--out", run, "--epochs", "1", "--image-size", "16",
                 "--set", "base_channels=4", "--set", "depth=2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", run, "--out", str(tmp_path / "p"), str(data / "v1.nii.gz")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    src, out = nib.load(str(data / "v1.nii.gz")), nib.load(res["mask_nifti"])
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    assert set(res["volume_mm3"]) == {"bone"} and res["pixels"]["bone"] == int((np.asarray(out.dataobj) == 1).sum())
    records = json.load(open(os.path.join(run, "predictions.json")))
    assert all(set(r["dice"]) == {"bone"} for r in records)
