"""The real X-rays of ../shared/data through the task commands (tiny trainings; the measured runs are in
examples/reproduce/realdata): their folders pass check-data, hip-xray trains with --task segmentation
split by source_id, spine-xray with --task classification split by patient. Skipped where the folder
is absent (a user's machine); CI always has it."""

import json
import os

import pytest

from conftest import SHARED_DATA
from osteonet.cli import main

HIP, SPINE, KNEE = (os.path.join(SHARED_DATA, d) for d in ("hip-xray", "spine-xray", "knee-xray"))
needs_data = pytest.mark.skipif(not os.path.isdir(HIP), reason=f"{SHARED_DATA} is absent (the shared real X-rays "
                                                               "are on the CI machine, not shipped with osteonet)")


@needs_data
def test_the_real_folders_are_valid_layouts(capsys):
    for task, folder in (("segmentation", HIP), ("classification", SPINE), ("classification", KNEE)):
        assert main(["check-data", "--task", task, folder]) == 0
    out = capsys.readouterr().out
    assert '"samples": 108, "groups": 30' in out and '"samples": 122, "groups": 46' in out


def _held_out_groups(run, column):
    card = json.load(open(os.path.join(run, "model.json")))
    assert card["split"]["by"] == column and not card["training_data"]["synthetic"]
    return card


@needs_data
def test_hip_xray_segmentation_is_split_by_source(tmp_path):
    import csv

    run = str(tmp_path / "hip")
    assert main(["train", "--task", "segmentation", "--data", HIP, "--out", run, "--epochs", "1", "--image-size", "32",
                 "--batch-size", "8", "--set", "base_channels=4", "--set", "depth=2", "--quiet"]) == 0
    card = _held_out_groups(run, "source_id")
    with open(os.path.join(HIP, "manifest.csv")) as f:
        source = {r["image"]: r["source_id"] for r in csv.DictReader(f)}
    test = {source[i] for i in card["split"]["test"]}
    train = {s for i, s in source.items() if i not in card["split"]["test"]}
    assert test and train and not test & train  # copies of one radiograph never straddle the split
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m["baselines"]["all_background"]["mean_iou"] == 0.0 and 0.0 < m["baselines"]["training_mean_mask"]["mean_iou"] < 1.0
    assert m["mean_iou_ci"] is not None and m["per_label"]["foreground"]["n"] == len(card["split"]["test"])


@needs_data
def test_spine_xray_classification_is_split_by_patient(tmp_path):
    import csv

    run = str(tmp_path / "spine")
    assert main(["train", "--task", "classification", "--data", SPINE, "--out", run, "--model", "dxa_cnn21",
                 "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--quiet"]) == 0
    card = _held_out_groups(run, "patient_id")
    with open(os.path.join(SPINE, "manifest.csv")) as f:
        patient = {r["path"]: r["patient_id"] for r in csv.DictReader(f)}
    test = {patient[p] for p in card["split"]["test"]}
    assert test and not test & {p for i, p in patient.items() if i not in card["split"]["test"]}
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m["classes"] == ["normal", "osteopenia", "osteoporosis"] and m["baseline"]["class"] == "osteopenia"
    assert m["accuracy_ci"][0] <= m["accuracy"] <= m["accuracy_ci"][1]
