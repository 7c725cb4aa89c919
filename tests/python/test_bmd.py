"""Seed 003 BMD regression: target scaling, matting of batches (largest component, empty-mask fallback,
errors), the regression step and agreement against SciPy / hand-worked values, and a tiny end-to-end
run of `osteonet reproduce bmd` checking table.json, table.md, pictures and checkpoints."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from osteonet import bmd as B
from osteonet import clinical
from osteonet.cli import build_parser
from osteonet.segmentation import mat_region


def test_target_scaler_round_trip_and_errors():
    s = B.TargetScaler.fit([100.0, 140.0, 180.0])
    assert s.mean == pytest.approx(140.0) and s.std == pytest.approx(np.std([100, 140, 180]))
    z = s.normalize(np.array([100.0, 180.0]))
    assert z.mean() == pytest.approx(0.0) and s.denormalize(z) == pytest.approx([100.0, 180.0])
    with pytest.raises(ValueError, match="at least 2 finite values"):
        B.TargetScaler.fit([1.0])
    with pytest.raises(ValueError, match="std must be positive"):
        B.TargetScaler(0.0, 0.0)


def test_mat_batch_keeps_the_largest_component_and_falls_back():
    img = torch.arange(2 * 40 * 40, dtype=torch.float32).view(2, 1, 40, 40) / 3200
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, 10:20, 12:26] = True
    masks[0, 35:37, 0:2] = True  # a stray blob far away
    crops, empty = B.mat_batch(img, masks, size=16, margin=0.0)
    assert crops.shape == (2, 1, 16, 16) and empty == [False, True]
    main = torch.zeros(40, 40, dtype=torch.bool)
    main[10:20, 12:26] = True
    assert torch.allclose(crops[0], mat_region(img[0], main, 16, 0.0))
    # With the blob kept, the box widens and the cut-out differs.
    wide, _ = B.mat_batch(img, masks, size=16, margin=0.0, largest_component=False)
    assert not torch.allclose(wide[0], crops[0])
    # Empty mask: the whole image, or the fallback mask when given.
    assert torch.allclose(crops[1], F.interpolate(img[1:2], size=(16, 16), mode="bilinear", align_corners=False)[0],
                          atol=1e-2)
    fb = torch.zeros(2, 40, 40, dtype=torch.bool)
    fb[1, 5:9, 5:9] = True
    with_fb, empty2 = B.mat_batch(img, masks, size=16, margin=0.0, fallback=fb)
    assert empty2 == [False, True] and torch.allclose(with_fb[1], mat_region(img[1], fb[1], 16, 0.0))


def test_bad_input_is_a_one_line_value_error():
    with pytest.raises(ValueError, match=r"mat_batch: images must be N x C x H x W .* got images=\(2, 1, 8, 8\) "
                                         r"masks=\(3, 8, 8\)") as e:
        B.mat_batch(torch.zeros(2, 1, 8, 8), torch.ones(3, 8, 8))
    assert "\n" not in str(e.value)
    with pytest.raises(TypeError):
        B.mat_batch(np.zeros((1, 1, 8, 8)), torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="loss must be 'mse' or 'smooth_l1'"):
        B.regression_step("l3")
    with pytest.raises(ValueError, match="equal length >= 4"):
        B.bmd_agreement([1, 2, 3], [1, 2, 3])


def test_regression_step_and_predictions():
    torch.manual_seed(0)
    model = B.create_bmd_regressor("densenet121", in_chans=1).eval()
    x = torch.randn(3, 1, 32, 32)
    y = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        out = model(x)
        loss = B.regression_step("mse")(model, (x, y))
    assert out.shape == (3, 1)
    assert float(loss) == pytest.approx(float(F.mse_loss(out.reshape(-1), y)), rel=1e-6)
    s = B.TargetScaler(120.0, 30.0)
    assert B.predict_bmd(model, x, s) == pytest.approx(120.0 + 30.0 * out.reshape(-1).double().numpy(), rel=1e-6)


def test_bmd_agreement_against_scipy_and_hand_counts():
    ref = np.array([150.0, 130.0, 100.0, 90.0, 70.0, 60.0, 125.0, 85.0])
    pred = np.array([140.0, 118.0, 104.0, 75.0, 72.0, 66.0, 128.0, 95.0])
    a = B.bmd_agreement(ref, pred)
    r, p = stats.pearsonr(ref, pred)
    assert a["pearson"]["r"] == pytest.approx(r) and a["pearson"]["p_value"] == pytest.approx(p, rel=1e-6)
    d = pred - ref
    assert a["bland_altman"]["bias"] == pytest.approx(d.mean())
    assert a["bland_altman"]["loa_high"] == pytest.approx(d.mean() + stats.norm.ppf(0.975) * d.std(ddof=1))
    # ACR: >120 normal, 80-120 osteopenia, <80 osteoporosis. 118 (ref 130) and 75 (ref 90) cross a threshold.
    assert a["class_accuracy"] == pytest.approx(6 / 8)
    assert a["mae"] == pytest.approx(np.abs(d).mean()) and np.sum(a["confusion_matrix"]) == 8


def test_cli_accepts_bmd_and_hip():
    p = build_parser()
    assert p.parse_args(["reproduce", "bmd", "--out", "x"]).paper == "bmd"
    assert p.parse_args(["reproduce", "hip", "--preset", "paper", "--out", "x"]).preset == "paper"


TINY = dict(n_patients=6, slices_per_patient=4, seg_size=32, seg_base_channels=4, seg_depth=2, seg_epochs=1,
            seg_batch_size=4, crop_size=32, reg_epochs=1, reg_batch_size=4)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    from osteonet.reproduce.bmd import reproduce

    out = tmp_path_factory.mktemp("bmd")
    res = reproduce(str(out), preset="quick", seed=1, progress=False, overrides=TINY)
    return out, res


def test_reproduce_bmd_tiny_end_to_end(reproduced, tmp_path):
    from conftest import check_table_layout
    from osteonet.reproduce.bmd import reproduce

    with pytest.raises(ValueError, match="preset must be one of"):
        reproduce(str(tmp_path), preset="fast")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['epochs'\]"):
        reproduce(str(tmp_path), overrides={"epochs": 1})
    with pytest.raises(ValueError, match="one method"):
        reproduce(str(tmp_path), variants=["x"])
    out, res = reproduced
    with open(out / "table.json") as f:
        table = json.load(f)
    check_table_layout(table, "bmd", "003")
    assert table["preset"] == "quick" and table["config"]["seg_size"] == 32
    row = table["rows"][0]
    assert row == json.loads(json.dumps(res["rows"][0]))
    assert row["method"] == "unet + densenet121"
    m = {k: v["value"] for k, v in row["metrics"].items()}
    assert {f"dice_{lv}" for lv in ("L1", "L2", "L3", "L4")} | {"dice_mean"} <= set(m)
    assert all(0.0 <= m[k] <= 1.0 for k in m if k.startswith("dice_"))
    assert -1.0 <= m["pearson_r"] <= 1.0 and row["metrics"]["pearson_r"]["paper"] == "> 0.98"
    ba = row["details"]["bland_altman"]
    assert ba["loa_low"] < ba["bias"] < ba["loa_high"] and ba["bias"] == m["bland_altman_bias"]
    assert 0.0 <= m["class_accuracy"] <= 1.0 and row["n"] % 4 == 0
    assert row["details"]["baseline"]["method"].startswith("every slice gets the training split's mean BMD")
    md = (out / "table.md").read_text()
    assert "Pearson r" in md and "0.823" in md
    for name in ("masks_over_images.png", "bland_altman.png", "bmd_scatter.png", "segmentation/last.pt",
                 "regression/last.pt", "model.json"):
        assert os.path.getsize(out / "run" / name) > 0, name
    card = json.loads((out / "run" / "model.json").read_text())
    assert card["preprocessing"]["target_scaler"]["std"] > 0 and card["training_data"]["synthetic"]
    # The generated CT carries a vertebral-body mask per slice and the bmd layout's columns.
    from osteonet.io import read_manifest

    rows = read_manifest(str(out / "data"), required=("image", "mask", "bmd"))
    assert len(rows) == 24 and all(os.path.exists(out / "data" / r["mask"]) for r in rows)


def test_vertebrae_are_slices_whose_bodies_overlap_and_touch():
    from osteonet.tasks.bmd import vertebrae

    m = np.zeros((9, 6, 6), bool)
    m[0:3, 1:4, 1:4] = True   # a body over 3 slices
    m[4:6, 1:4, 1:4] = True   # one empty slice (4 mm at 2 mm spacing), then more of it, or the next one
    m[6, 4:6, 4:6] = True     # the next slice, but not overlapping in plane: another body
    m[8, 1:3, 1:3] = True
    assert vertebrae(m, 2.0, 6.0) == [[0, 1, 2, 4, 5], [6], [8]]       # a 4 mm gap is within one body
    assert vertebrae(m, 2.0, 3.0) == [[0, 1, 2], [4, 5], [6], [8]]     # a 4 mm gap is a disc
    assert vertebrae(m, 10.0, 6.0) == [[0], [1], [2], [4], [5], [6], [8]]  # slices 10 mm apart never join


def test_predict_bmd_on_a_ct_series_writes_masks_in_its_geometry(reproduced, tmp_path, capsys):
    """A patient's DICOM series (the generator's: 4 slices, L1-L4, 40 mm apart): one label per vertebra
    found, the mask as NIfTI with the series' affine and shape, BMD and the ACR class of each."""
    import nibabel as nib

    from osteonet.cli import main
    from osteonet.io import read_dicom_series
    from osteonet.synth import generate_ct_dataset

    generate_ct_dataset(str(tmp_path / "ct"), 1, 4, seed=5, progress=False)
    series = str(tmp_path / "ct" / "dicom" / "CT005-0000")
    out, _ = reproduced
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out / "run"), "--out", str(tmp_path / "p"), series]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    vol, affine, _ = read_dicom_series(series)
    mask = nib.load(res["mask_nifti"])
    assert mask.shape == vol.shape and np.allclose(mask.affine, affine)
    labels = np.asarray(mask.dataobj)
    assert sorted(set(np.unique(labels).tolist()) - {0}) == [v["label"] for v in res["vertebrae"]]
    for v in res["vertebrae"]:
        assert len(v["slices"]) == 1  # 40 mm apart: every slice is its own vertebra
        assert v["acr_class"] == ["normal", "osteopenia", "osteoporosis"][int(clinical.acr_class(v["bmd_mg_cm3"]))]
    assert "not a finding" in res["notice"] and res["picture"].endswith(".png")
