"""The `osteonet` command line end to end on tiny built-in data: synth, train, evaluate, predict,
reproduce (DSNet, one light variant), and one-line errors with exit code 2."""

import json
import os

import pytest

from osteonet.cli import main
from osteonet.reproduce import dsnet


def test_synth_train_evaluate_predict(tmp_path, capsys):
    data, run, ev, pr = (str(tmp_path / d) for d in ("dxa", "run", "eval", "pred"))
    assert main(["synth", "--kind", "dxa", "--n", "24", "--out", data, "--seed", "1"]) == 0
    assert main(["train", "--data", data, "--model", "dxa_cnn21", "--epochs", "2", "--image-size", "48",
                 "--batch-size", "8", "--out", run, "--quiet"]) == 0
    for f in ("last.pt", "model.json", "metrics.json", "log.csv", "confusion_matrix.png", "roc.png", "training_curves.png"):
        assert os.path.exists(os.path.join(run, f)), f
    assert main(["evaluate", "--checkpoint", os.path.join(run, "last.pt"), "--data", data, "--out", ev]) == 0
    m = json.load(open(os.path.join(ev, "metrics.json")))
    assert m["n"] == 24 and set(m) >= {"accuracy", "f1_macro", "per_class", "confusion_matrix"}
    assert set(m["per_class"]["osteoporosis"]) >= {"precision", "recall", "specificity", "recall_ci", "specificity_ci"}
    assert sum(map(sum, m["confusion_matrix"])) == 24
    image = os.path.join(data, "images", sorted(os.listdir(os.path.join(data, "images")))[0])
    assert main(["predict", "--checkpoint", os.path.join(run, "last.pt"), "--input", image, "--out", pr]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["class"] in ("normal", "osteoporosis") and abs(sum(out["probabilities"].values()) - 1) < 1e-5
    assert os.path.exists(os.path.join(pr, os.path.splitext(os.path.basename(image))[0] + ".png"))


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "manifest.csv").write_text("file,label\n")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column(s) ['path']" in err and "\n" not in err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "model.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "dsnetx", "--out", str(tmp_path)])


def test_reproduce_dsnet_tiny(tmp_path):
    tiny = dict(n_patients=6, slices_per_patient=2, min_size=96, max_size=96, epochs=1, batch_size=2)
    res = dsnet.reproduce(str(tmp_path), preset="quick", variants=["mobilenet"], progress=False, overrides=tiny)
    table = json.load(open(tmp_path / "table.json"))
    rows = {r["method"]: r for r in table["rows"]}
    assert rows["MobileNet"]["paper"]["map"] == 80.9 and 0 <= rows["MobileNet"]["map"] <= 100
    assert "recall" in rows["MobileNet"] and "seconds_per_image" in rows["MobileNet"]
    assert "map" not in rows["VGG16"]  # not run: no numbers invented
    for pic in ("detections.png", "training_curves.png"):  # pictures of the variant that ran
        assert (tmp_path / "mobilenet" / pic).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "vgg16").exists()
    assert "Table 1" in res["markdown"] and "Table 2" in res["markdown"]
    for name in ("train.json", "test.json"):
        ids = {im["patient_id"] for im in json.load(open(tmp_path / "data" / name))["images"]}
        assert ids
    tr = {im["patient_id"] for im in json.load(open(tmp_path / "data" / "train.json"))["images"]}
    te = {im["patient_id"] for im in json.load(open(tmp_path / "data" / "test.json"))["images"]}
    assert not tr & te
    with pytest.raises(ValueError, match="unknown variant"):
        dsnet.reproduce(str(tmp_path), variants=["resnet51"])


def test_reproduce_all_runs_every_paper_in_its_folder(tmp_path, monkeypatch, capsys):
    """`osteonet reproduce all` (the main job): each paper's driver in OUT/<paper>, then summary.md with
    every table (the drivers are replaced by recorders here; each has its own tiny end-to-end test)."""
    import importlib

    calls = []

    def fake(paper):
        def run(out, preset="quick", seed=0, data=None, progress=True, **kw):
            calls.append((paper, out, preset, seed, data))
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
