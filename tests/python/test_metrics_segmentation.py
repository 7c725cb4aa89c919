"""Segmentation: Dice / IoU against scikit-learn and hand cases, HD95 against a SciPy computation."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn import metrics as sk

import osteonet.metrics as M


@pytest.mark.parametrize("seed", range(4))
def test_dice_iou_per_image_per_class_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 4, (3, 20, 24)).astype(np.uint8)
    p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 4, t.shape)).astype(np.uint8)
    d = M.dice(p, t, num_classes=4, include_background=True, reduction="none")
    j = M.iou(torch.from_numpy(p).long(), t, num_classes=4, include_background=True, reduction="none")
    for i in range(3):
        np.testing.assert_allclose(d[i], sk.f1_score(t[i].ravel(), p[i].ravel(), average=None, labels=range(4)))
        np.testing.assert_allclose(j[i], sk.jaccard_score(t[i].ravel(), p[i].ravel(), average=None, labels=range(4)))
    g = M.dice(p, t, num_classes=4, include_background=True, reduction="global")
    np.testing.assert_allclose(g, sk.f1_score(t.ravel(), p.ravel(), average=None, labels=range(4)))
    assert M.dice(p, t, num_classes=4, reduction="mean") == pytest.approx(d[:, 1:].mean())


def test_empty_mask_conventions_and_bool_masks():
    t = np.zeros((2, 8, 8), bool)
    p = np.zeros((2, 8, 8), bool)
    t[0, 2:4, 2:4] = True
    p[0, 2:4, 2:6] = True  # image 0: |A∩B| = 4, |A| = 8, |B| = 4 -> Dice 8/12; image 1: both empty
    d = M.dice(p, t, reduction="none")
    assert d.shape == (2, 1)
    assert d[0, 0] == pytest.approx(8 / 12) and np.isnan(d[1, 0])
    assert M.dice(p, t) == pytest.approx(8 / 12)  # NaN (empty) images are skipped by the mean
    assert M.dice(p, t, empty_score=1.0) == pytest.approx((8 / 12 + 1) / 2)
    assert M.iou(p, t) == pytest.approx(4 / 8)
    acc = M.OverlapMetric("dice", num_classes=2)
    acc.update(p[:1], t[:1]); acc.update(p[1:], t[1:])
    assert acc.compute() == pytest.approx(8 / 12)


def _hd_reference(a, b, q, spacing):
    def surf(m):
        return m & ~ndimage.binary_erosion(m)
    sa, sb = surf(a), surf(b)
    da = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return max(np.percentile(da, q), np.percentile(db, q))


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_scipy_edt(seed):
    rng = np.random.default_rng(seed)
    shape = (24, 30) if seed % 2 else (12, 16, 18)
    a = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
    b = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
    spacing = [1.0] * len(shape) if seed < 2 else list(rng.uniform(0.5, 2.0, len(shape)))
    for q in (95, 100, 50):
        assert M.hausdorff_distance(a, b, percentile=q, spacing=spacing) == pytest.approx(
            _hd_reference(a, b, q, spacing), rel=1e-12)


def test_hd_empty_conventions_and_label_maps():
    a = np.zeros((10, 10), bool)
    b = a.copy()
    b[3:5, 3:5] = True
    assert np.isnan(M.hausdorff_distance(a, a))
    assert M.hausdorff_distance(a, b) == np.inf
    lm = np.zeros((1, 10, 10), np.int64)
    lm[0, 3:5, 3:5] = 1
    out = M.hausdorff_distance(lm, lm, num_classes=2)
    assert out.shape == (1, 1) and out[0, 0] == 0.0


@pytest.mark.parametrize("call", [
    lambda: M.dice(np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int)),
    lambda: M.dice(np.full((1, 4, 4), 3), np.zeros((1, 4, 4), int), num_classes=2),
    lambda: M.dice(np.zeros((1, 4, 4)) + 0.5, np.zeros((1, 4, 4), int)),
    lambda: M.dice(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int), reduction="median"),
    lambda: M.hausdorff_distance(np.zeros((4, 4)), np.zeros((4, 5))),
])
def test_bad_input(call):
    with pytest.raises(ValueError) as e:
        call()
    assert "\n" not in str(e.value)
