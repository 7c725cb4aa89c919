"""Seed 004 hip pipeline: region masks from label maps, per-region IoU against hand-worked values, and a
tiny end-to-end run of `osteonet reproduce hip` checking table.json, table.md, pictures and checkpoints."""

import json
import os

import numpy as np
import pytest
import torch

from osteonet import hip as H


def label_map():
    lab = torch.zeros(1, 6, 6, dtype=torch.long)
    lab[0, 0, :3] = 1  # neck
    lab[0, 1, 1] = 3  # Ward's (inside the neck)
    lab[0, 2, :2] = 2  # trochanter
    lab[0, 3, :4] = 4  # rest of total hip
    return lab


def test_region_masks_follow_the_label_sets():
    m = H.region_masks(label_map())
    assert [int(m[r].sum()) for r in H.HIP_REGIONS] == [4, 2, 1, 10]
    assert bool((m["wards_triangle"] <= m["femoral_neck"]).all()) and bool((m["femoral_neck"] <= m["total_hip"]).all())
    with pytest.raises(ValueError, match="region must be one of"):
        H.region_mask(label_map(), "femur")


def test_region_iou_hand_worked():
    true = label_map()
    pred = true.clone()
    pred[0, 0, 2] = 0  # neck loses one of its 4 pixels: IoU 3/4
    pred[0, 5, 5] = 2  # a false trochanter pixel: IoU 2/3; total hip 9 of 11
    iou = H.region_iou(pred, true)
    assert iou["femoral_neck"][0] == pytest.approx(3 / 4)
    assert iou["greater_trochanter"][0] == pytest.approx(2 / 3)
    assert iou["wards_triangle"][0] == pytest.approx(1.0)
    assert iou["total_hip"][0] == pytest.approx(9 / 11)
    with pytest.raises(ValueError, match="N x H x W"):
        H.region_iou(pred[0], true[0])


TINY = dict(n_images=9, image_size=96, seg_size=32, seg_epochs=1, seg_batch_size=4,
            segmenters={"unet": dict(base_channels=4, depth=2), "unet_plusplus": dict(base_channels=4, depth=2,
                                                                                        deep_supervision=True)},
            crop_size=32, regions=["total_hip", "femoral_neck"], cls_epochs=1, cls_batch_size=4)


def test_reproduce_hip_tiny_end_to_end(tmp_path):
    from conftest import check_table_layout
    from osteonet.reproduce.hip import reproduce

    with pytest.raises(ValueError, match="matting_from one of the segmenters"):
        reproduce(str(tmp_path), overrides={"regions": ["femur"]})
    res = reproduce(str(tmp_path), preset="quick", seed=0, progress=False, overrides=TINY)
    with open(tmp_path / "table.json") as f:
        table = json.load(f)
    check_table_layout(table, "hip", "004")
    rows = table["rows"]
    assert [r["method"] for r in rows] == ["U-Net", "U-Net++", "DenseNet121 (total_hip)", "DenseNet121 (femoral_neck)"]
    for r in rows[:2]:
        assert {f"iou_{reg}" for reg in H.HIP_REGIONS} | {"iou_mean"} == set(r["metrics"])
        assert all(v["value"] is None or 0.0 <= v["value"] <= 1.0 for v in r["metrics"].values())
        assert r["metrics"]["iou_total_hip"]["paper"] == ">= 0.5"
    for r in rows[2:]:
        acc = r["metrics"]["accuracy"]
        assert 0.0 <= acc["value"] <= 100.0 and acc["ci"][0] <= acc["value"] <= acc["ci"][1]
        assert np.sum(r["details"]["confusion_matrix"]) == r["n"]
    assert rows[2]["metrics"]["accuracy"]["paper"] == 74.0 and rows[3]["metrics"]["accuracy"]["paper"] is None
    assert len(res["rows"]) == 4
    md = (tmp_path / "table.md").read_text()
    assert "U-Net++" in md and "74.0" in md
    for name in ("unet/masks.png", "unet_plusplus/masks.png", "unet_plusplus/confusion_total_hip.png",
                 "unet/segmentation/last.pt", "unet_plusplus/segmentation/last.pt",
                 "unet_plusplus/classifier_total_hip/last.pt", "unet_plusplus/classifier_femoral_neck/last.pt"):
        assert os.path.getsize(tmp_path / name) > 0, name
    assert not (tmp_path / "unet" / "classifier_total_hip").exists()  # regions are classified from U-Net++ only
