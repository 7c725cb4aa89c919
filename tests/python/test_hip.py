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
    from osteonet.reproduce.hip import reproduce

    with pytest.raises(ValueError, match="matting_from one of the segmenters"):
        reproduce(str(tmp_path), overrides={"regions": ["femur"]})
    res = reproduce(str(tmp_path), preset="quick", seed=0, progress=False, overrides=TINY)
    with open(tmp_path / "table.json") as f:
        table = json.load(f)
    rows = table["rows"]
    assert [r["method"] for r in rows] == ["U-Net", "U-Net++", "DenseNet121 (total_hip)", "DenseNet121 (femoral_neck)"]
    for r in rows[:2]:
        assert set(r["iou"]) == set(H.HIP_REGIONS) | {"mean"}
        assert all(v != v or 0.0 <= v <= 1.0 for v in r["iou"].values())
    for r in rows[2:]:
        assert 0.0 <= r["accuracy"] <= 100.0 and r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
        assert np.sum(r["confusion_matrix"]) == r["n_test"]
    assert rows[2]["paper"]["accuracy"] == 74.0
    assert len(res["rows"]) == 4
    md = (tmp_path / "table.md").read_text()
    assert "U-Net++" in md and "74.0" in md
    for name in ("masks_unet.png", "masks_unet_plusplus.png", "confusion_total_hip.png", "segmentation_unet/last.pt",
                 "segmentation_unet_plusplus/last.pt", "classifier_total_hip/last.pt", "classifier_femoral_neck/last.pt"):
        assert os.path.getsize(tmp_path / name) > 0, name
