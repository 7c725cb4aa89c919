"""The `osteonet` command line: one registration per command, one-line errors with exit code 2, DSNet's
reproduction (one light variant) as a preset of the detection task, the detection task on a user's COCO
folder without patient ids, and `reproduce all` (the main job)."""

import json
import os

import pytest

from conftest import check_table_layout
from osteonet.cli import COMMANDS, build_parser, main
from osteonet.reproduce import dsnet


def test_every_command_registers_itself():
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert names == {"synth", "train", "evaluate", "predict", "check-data", "reproduce", "bench", "screen", "weights", "verify",
                     "export"}
    assert len(COMMANDS) == len(names)


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "manifest.csv").write_text("file,label\n")
    assert main(["train", "--task", "classification", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column(s) ['path']" in err and "\n" not in err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "manifest.csv"), "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no model.json beside it" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "give the input(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "dsnetx", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["train", "--task", "classifier", "--data", str(tmp_path), "--out", str(tmp_path)])


def test_reproduce_dsnet_tiny(tmp_path):
    tiny = dict(n_patients=6, slices_per_patient=2, min_size=96, max_size=96, epochs=1, batch_size=2)
    res = dsnet.reproduce(str(tmp_path), preset="quick", variants=["mobilenet"], progress=False, overrides=tiny)
    table = json.load(open(tmp_path / "table.json"))
    check_table_layout(table, "dsnet", "000")
    rows = {(r["table"], r["method"]): r for r in table["rows"]}
    m = rows[("Table 2", "MobileNet")]["metrics"]
    assert m["map"]["paper"] == 80.9 and 0 <= m["map"]["value"] <= 100 and m["map"]["ci"] is not None
    assert m["recall"]["value"] is not None and m["seconds_per_image"]["paper"] == 0.1856
    assert rows[("Table 2", "VGG16")]["metrics"]["map"]["value"] is None  # not run: no numbers invented
    assert rows[("Table 2", "VGG16")]["metrics"]["map"]["paper"] == 80.0
    for pic in ("detections.png", "training_curves.png"):  # pictures of the variant that ran
        assert (tmp_path / "mobilenet" / pic).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "vgg16").exists()
    assert "Table 1" in res["markdown"] and "Table 2" in res["markdown"]
    card = json.load(open(tmp_path / "mobilenet" / "model.json"))
    assert card["task"] == "detection" and card["split"]["by"] == "patient_id"
    coco = json.load(open(tmp_path / "data" / "annotations.json"))
    pid = {im["file_name"]: im["patient_id"] for im in coco["images"]}
    test = {pid[f] for f in card["split"]["test"]}
    assert test and not test & {pid[f] for f in pid if f not in card["split"]["test"]}  # by patient
    with pytest.raises(ValueError, match="unknown variant"):
        dsnet.reproduce(str(tmp_path), variants=["resnet51"])


def test_detection_on_a_coco_folder_without_patient_ids(tmp_path, capsys):
    """A user's COCO folder (PNG and JPEG, other categories, no patient ids: split by image)."""
    from test_train_data import make_coco

    data = tmp_path / "data"
    data.mkdir()
    make_coco(data, n=8, size=96)
    os.rename(data / "ann.json", data / "annotations.json")
    assert main(["check-data", "--task", "detection", str(data)]) == 0
    run = str(tmp_path / "run")
    assert main(["train", "--task", "detection", "--data", str(data), "--out", run, "--model", "mobilenet_v3_large",
                 "--epochs", "1", "--batch-size", "2", "--image-size", "96", "--quiet"]) == 0
    card = json.load(open(os.path.join(run, "model.json")))
    assert card["classes"] == ["grey", "bright"] and card["split"]["by"] == "sample"
    assert not card["training_data"]["synthetic"] and card["training_data"]["source"] == "user folder"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", run, "--out", str(tmp_path / "p"), str(data / "img0.png")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "notice" not in res and not res["model"]["synthetic_training_data"]
    assert all(d["class"] in ("grey", "bright") for d in res["detections"])


def test_reproduce_all_runs_every_paper_in_its_folder(tmp_path, monkeypatch, capsys):
    """`osteonet reproduce all` (the main job): each paper's driver in OUT/<paper>, then summary.md with
    every table (the drivers are replaced by recorders here; each has its own tiny end-to-end test)."""
    import importlib

    calls = []

    def fake(paper):
        def run(out, preset="quick", seed=0, data=None, variants=None, progress=True, overrides=None):
            calls.append((paper, out, preset, seed, data, variants))
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "table.md"), "w") as f:
                f.write(f"| method | x |\n|---|---|\n| {paper}-row | 1 |\n")
            return {"markdown": f"{paper} table", "seconds": 0.0}
        return run

    for paper in ("dsnet", "ovf", "bmd", "hip"):
        monkeypatch.setattr(importlib.import_module(f"osteonet.reproduce.{paper}"), "reproduce", fake(paper))
    assert main(["reproduce", "all", "--preset", "quick", "--seed", "3", "--out", str(tmp_path)]) == 0
    assert [c[0] for c in calls] == ["dsnet", "ovf", "bmd", "hip"]
    assert all(c[1] == str(tmp_path / c[0]) and c[2] == "quick" and c[3] == 3 and c[4] is None for c in calls)
    summary = (tmp_path / "summary.md").read_text()
    for paper in ("dsnet", "ovf", "bmd", "hip"):
        assert f"## {paper}" in summary and f"{paper}-row" in summary
    assert main(["reproduce", "all", "--variants", "mobilenet", "--out", str(tmp_path)]) == 2
    assert "apply to one paper" in capsys.readouterr().err
