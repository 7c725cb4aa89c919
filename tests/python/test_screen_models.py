"""The screen's models: osteonet's own vertebral-body segmentation (shipped weights, trained on synthetic
spines; used without masks) and the per-vertebra fracture probability (`--fracture`, osteonet.sequence's
classifier)."""

import os

import numpy as np
import pytest
import torch

from osteonet.screen import screen
from osteonet.screen.segment import DEFAULT_CHECKPOINT, name_bodies
from osteonet.synth.spine import TOTAL_LABELS, default_specs, spine_volume


@pytest.fixture(scope="module")
def spine(tmp_path_factory):
    """A spine the segmenter never saw (its own seed and grid), the sacrum in view."""
    root = tmp_path_factory.mktemp("models")
    specs = default_specs()
    specs[4].deformity, specs[4].loss = "wedge", 0.35
    for i, s in enumerate(specs):
        s.hu = [80.0, 120.0, 95.0, 150.0, 70.0, 180.0, 130.0][i]
    vol = spine_volume(shape=(110, 140, 120), spacing=(2.0, 0.9, 0.9), axcodes="SPL", specs=specs, oblique_deg=5.0,
                       shift_mm=(0.0, 0.0, 30.0), seed=123)
    paths = vol.write_nifti(str(root / "nii"))
    return vol, paths, root


def test_shipped_weights_exist():
    assert os.path.getsize(DEFAULT_CHECKPOINT) > 100_000


def test_own_segmentation_finds_and_names_the_bodies(spine):
    import nibabel as nib

    vol, paths, root = spine
    rep = screen(paths["ct"], out=str(root / "out"))
    seg = rep["input"]["segmentation"]
    assert seg["source"] == "osteonet" and seg["shipped"] and "synthetic" in seg["note"]
    assert any("synthetic" in x for x in rep["limits"])
    assert seg["sacrum_found"]
    truth = vol.truth_by_name()
    got = {v["name"]: v for v in rep["vertebrae"]}
    complete = [n for n, t in truth.items() if t.complete]
    assert set(complete) <= set(got), (sorted(got), complete)
    labels = np.asarray(nib.load(str(root / "out" / "segmentation.nii.gz")).dataobj)
    from osteonet.screen import load_table

    verse = {n: v for v, n in load_table("osteonet").vertebrae.items()}
    for name in complete:
        pred = labels == verse[name]
        true = (vol.vertebrae == TOTAL_LABELS[name]) & (vol.bodies == 1)
        dice = 2 * (pred & true).sum() / (pred.sum() + true.sum())
        assert dice > 0.85, (name, dice)
        v = got[name]
        assert abs(v["hu_mean"] - truth[name].hu) < 3.0, (name, v["hu_mean"], truth[name].hu)
    assert got["L3"]["genant_grade"] == truth["L3"].genant_grade


def test_without_a_sacrum_the_bodies_stay_unnamed():
    vol = spine_volume(shape=(60, 80, 80), spacing=(2.0, 1.0, 1.0), seed=9, center_level="L2")
    classes = np.zeros(vol.hu.shape, np.uint8)
    classes[vol.bodies == 1] = 1
    classes[vol.bodies == 2] = 2
    labels, table, info = name_bodies(classes, vol.affine)
    assert table.name == "vertebrae_body" and not info["sacrum_found"] and "unknown" in info["levels"]
    classes[vol.vertebrae == 25] = 3
    if (classes == 3).sum() * 2.0 / 1000 >= 5.0:  # sacrum in view: levels counted from it
        labels, table, info = name_bodies(classes, vol.affine)
        assert table.name == "osteonet"


def test_bad_segmentation_checkpoint(spine, tmp_path):
    vol, paths, root = spine
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt") as e:
        screen(paths["ct"], out=str(tmp_path / "out"), seg_checkpoint=str(bad))
    assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "out")
    with pytest.raises(ValueError, match="masks were given"):
        screen(paths["ct"], masks=paths["vertebrae"], seg_checkpoint=str(bad))


@pytest.fixture(scope="module")
def ovf_checkpoint(tmp_path_factory):
    from osteonet.sequence import TwoStageResult, create_aggregator, create_slice_encoder, save_ovf_checkpoints

    torch.manual_seed(0)
    enc = create_slice_encoder().eval()
    agg = create_aggregator("mean").eval()
    folder = tmp_path_factory.mktemp("ovf")
    res = TwoStageResult(enc, {"mean": (enc, agg)}, torch.full((1, 1, 64, 64), 0.3), 64, {})
    return save_ovf_checkpoints(str(folder), res)["mean"]


def test_fracture_probability_per_vertebra(spine, ovf_checkpoint, tmp_path):
    """Plumbing with an untrained classifier: one probability per body, equal to running the checkpoint's
    pipeline on that vertebra's sagittal stack; carried into the CSV, the HTML and the report."""
    from osteonet.io import window
    from osteonet.screen import measure, load_table, read_ct
    from osteonet.screen.fracture import fracture_probabilities, load_fracture_model, vertebra_stack
    from osteonet.sequence import ScanPipeline, reorient_to_sagittal

    vol, paths, root = spine
    rep = screen(paths["ct"], out=str(tmp_path / "out"), masks=paths["vertebrae"], fracture=ovf_checkpoint)
    probs = [v["fracture_probability"] for v in rep["vertebrae"]]
    assert all(p is None or 0.0 <= p <= 1.0 for p in probs)
    assert sum(p is not None for p in probs) == sum(1 for v in rep["vertebrae"] if v["body_voxels"])
    csv_text = (tmp_path / "out" / "vertebrae.csv").read_text()
    assert f"{probs[2]:.6g}" in csv_text
    # Recompute one vertebra by hand.
    ct = read_ct(paths["ct"])
    from osteonet.screen import read_label_map

    m = measure(ct.hu, read_label_map(paths["vertebrae"], ct), ct.affine, load_table("total"))
    enc, agg, card = load_fracture_model(ovf_checkpoint)
    sag = reorient_to_sagittal(window(ct.hu, card["window_center"], card["window_width"]), affine=ct.affine)
    bodies = reorient_to_sagittal(m["bodies"], affine=ct.affine)
    v = m["vertebrae"][2]
    stack = vertebra_stack(sag, bodies == v["mask_value"], _sag_spacing(ct.affine), max(v["heights_mm"].values()))
    pipe = ScanPipeline(enc, agg, center_fraction=1.0, min_slices=1, image_size=card["image_size"],
                        threshold=card["threshold"], pixel_mean=card["pixel_mean"])
    assert float(pipe.predict_slices(stack)["probability"]) == pytest.approx(probs[2], abs=1e-6)
    assert fracture_probabilities((enc, agg, card), ct, m["vertebrae"], bodies=m["bodies"])[2] == pytest.approx(probs[2], abs=1e-6)
    with pytest.raises(ValueError, match="not an OVF aggregator checkpoint|unreadable|checkpoint"):
        screen(paths["ct"], masks=paths["vertebrae"], fracture=paths["ct"])


def _sag_spacing(affine):
    from nibabel import orientations as ornt

    tr = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(("L", "I", "P")))
    out = [0.0, 0.0, 0.0]
    for src, (dst, _f) in enumerate(tr):
        out[int(dst)] = float(np.linalg.norm(affine[:3, src]))
    return out
