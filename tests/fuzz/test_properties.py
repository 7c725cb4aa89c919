"""Property-based tests (Hypothesis) of issue 17: metrics against scikit-learn / statsmodels / torchvision on
random cases, transforms move boxes and masks with the image, readers answer garbage with one ValueError,
and the API's documented bounds refuse what lies outside them in one line.

``make test-fuzz`` runs them with the "ci" profile (a few seconds each); ``make fuzz`` with "long"
(OSTEONET_HYPOTHESIS_PROFILE=long, 2,000 examples per property)."""

import math
import os
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import osteonet
from osteonet import metrics
from osteonet.data import transforms as T
from osteonet.io import read_volume

settings.register_profile("ci", max_examples=40, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))  # the same cases on every CI run
settings.register_profile("long", max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("OSTEONET_HYPOTHESIS_PROFILE", "ci"))

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def one_line(e):
    msg = str(e)
    assert "\n" not in msg and len(msg) <= 1000 and "PYBIND11" not in msg, msg
    return msg


labels = st.lists(st.integers(0, 3), min_size=2, max_size=60)


# --------------------------------------------------------------------------------------------------- metrics
@given(st.data())
def test_classification_metrics_match_sklearn(data):
    y_true = data.draw(labels)
    y_pred = data.draw(st.lists(st.integers(0, 3), min_size=len(y_true), max_size=len(y_true)))
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    k = max(max(y_true), max(y_pred)) + 1
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred),
                                  sklearn_metrics.confusion_matrix(y_true, y_pred, labels=list(range(k))))
    for ours, ref in ((metrics.precision, sklearn_metrics.precision_score), (metrics.recall, sklearn_metrics.recall_score),
                      (metrics.f1_score, sklearn_metrics.f1_score)):
        for average in ("macro", "micro", "weighted"):  # over the labels present, as scikit-learn's default
            assert ours(y_true, y_pred, average=average) == pytest.approx(
                ref(y_true, y_pred, average=average, zero_division=0), abs=1e-12)


@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1, allow_nan=False)), min_size=2, max_size=80))
def test_roc_auc_and_average_precision_match_sklearn(pairs):
    y = [p[0] for p in pairs]
    s = [p[1] for p in pairs]
    assume(0 < sum(y) < len(y))
    assert metrics.roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert metrics.average_precision(y, s) == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-9)


@given(st.integers(1, 5000), st.data(), st.sampled_from(["wilson", "beta"]), st.floats(0.001, 0.5))
def test_proportion_ci_matches_statsmodels(n, data, method, alpha):
    from statsmodels.stats.proportion import proportion_confint

    k = data.draw(st.integers(0, n))
    lo, hi = metrics.proportion_ci(k, n, "clopper-pearson" if method == "beta" else method, alpha)
    rlo, rhi = proportion_confint(k, n, alpha=alpha, method=method)
    assert lo == pytest.approx(rlo, abs=1e-7) and hi == pytest.approx(rhi, abs=1e-7)


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12)),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12)))
def test_proportion_ci_answers_or_refuses_in_one_line(k, n):
    try:
        lo, hi = metrics.proportion_ci(k, n)
    except ValueError as e:
        one_line(e)
        return
    assert math.isfinite(k) and math.isfinite(n) and 0 <= k <= n and n > 0
    assert 0 <= lo <= hi <= 1


boxes = st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50), st.floats(1, 50), st.floats(1, 50)), min_size=1, max_size=8)


@given(boxes, boxes)
def test_box_iou_matches_torchvision(a, b):
    from torchvision.ops import box_iou

    ta = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in a], dtype=torch.float64)
    tb = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in b], dtype=torch.float64)
    np.testing.assert_allclose(metrics.box_iou(ta, tb), box_iou(ta, tb).numpy(), atol=1e-12)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=4),
       st.sampled_from(["coco", "voc", "voc07"]))
def test_detection_map_thresholds_in_0_1_or_refused(thresholds, method):
    p = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    t = [{"boxes": torch.tensor([[1.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    try:
        r = metrics.detection_map(p, t, method=method, iou_thresholds=thresholds)
    except ValueError as e:
        assert "IoU thresholds must be in [0, 1]" in one_line(e)
        assert not all(0 <= x <= 1 for x in thresholds)
        return
    assert all(0 <= x <= 1 for x in thresholds)
    assert 0 <= r["map"] <= 1


# ------------------------------------------------------------------------------------------------ transforms
def _image_with_box(h, w, x1, y1, x2, y2):
    img = torch.zeros(1, h, w)
    mask = torch.zeros(1, h, w, dtype=torch.uint8)
    img[:, y1:y2, x1:x2] = 1
    mask[:, y1:y2, x1:x2] = 1
    target = {"boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32), "labels": torch.tensor([1]), "masks": mask}
    return img, target


def _bounds(m):
    ys, xs = torch.nonzero(m, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


box_in_image = st.tuples(st.integers(8, 40), st.integers(8, 40)).flatmap(
    lambda hw: st.tuples(st.just(hw[0]), st.just(hw[1]), st.integers(0, hw[1] - 2), st.integers(0, hw[0] - 2)).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), st.just(t[3]),
                            st.integers(t[2] + 1, t[1]), st.integers(t[3] + 1, t[0]))))


@given(box_in_image)
def test_flip_moves_box_mask_and_image_together(case):
    h, w, x1, y1, x2, y2 = case
    img, target = _image_with_box(h, w, x1, y1, x2, y2)
    out, t = T.RandomHorizontalFlip(p=1.0)(img, target)
    assert _bounds(t["masks"][0]) == t["boxes"][0].round().int().tolist() == _bounds(out[0] > 0)


@given(box_in_image, st.integers(1, 3), st.integers(1, 3))
def test_resize_scales_box_mask_and_image_together(case, sy, sx):
    h, w, x1, y1, x2, y2 = case
    img, target = _image_with_box(h, w, x1, y1, x2, y2)
    out, t = T.Resize((h * sy, w * sx))(img, target)
    assert _bounds(t["masks"][0]) == t["boxes"][0].round().int().tolist()
    assert out.shape[-2:] == (h * sy, w * sx)


@given(box_in_image, st.integers(-6, 6), st.integers(-6, 6))
def test_translate_moves_box_and_mask_together(case, dx, dy):
    h, w, x1, y1, x2, y2 = case
    img, target = _image_with_box(h, w, x1, y1, x2, y2)
    out, t = T.translate(img, target, dx, dy, min_size=1.0)
    if len(t["boxes"]) == 0:  # moved out of the image: the mask went with it
        assert t["masks"].shape[0] == 0
        return
    assert _bounds(t["masks"][0]) == t["boxes"][0].round().int().tolist() == _bounds(out[0] > 0)


# --------------------------------------------------------------------------------------------------- readers
@given(st.binary(max_size=3000), st.sampled_from([".png", ".jpg", ".nii", ".nii.gz", ".dcm", ".bin"]))
def test_readers_answer_garbage_with_one_value_error(blob, ext):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f" + ext)
        with open(path, "wb") as f:
            f.write(blob)
        try:
            arr, _, _ = read_volume(path)
        except ValueError as e:
            assert path in one_line(e)
            return
        assert isinstance(arr, np.ndarray)  # rarely, random bytes are a valid file


# ------------------------------------------------------------------------------------------------------- API
BOUNDED = {"width_mult": ("mobilenet_v2", 0, 4, True), "dropout": ("vgg16", 0, 1, True), "num_classes": ("resnet18", 0, 100000, False),
           "in_chans": ("resnet18", 1, 1024, False), "attn_reduction": ("resnet18", 1, 1024, False)}


@given(st.sampled_from(sorted(BOUNDED)), st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**18, 10**18)))
def test_bounded_options_outside_are_refused_at_once(key, value):
    name, lo, hi, is_float = BOUNDED[key]
    inside = math.isfinite(value) and lo <= value <= hi
    if key == "width_mult":
        inside = inside and value > 0
    if key == "dropout":
        inside = inside and value < 1
    assume(not inside or (not is_float and isinstance(value, float)))  # a float for an int option: TypeError
    kw = {key: value}
    if key == "attn_reduction":
        kw["attention"] = "se"
    with pytest.raises((ValueError, TypeError)) as e:
        osteonet.create_model(name, **kw)
    one_line(e.value)


@given(st.text(min_size=1, max_size=6000))
def test_unknown_names_are_cut_in_the_message(name):
    assume(name not in osteonet.list_models())
    try:
        osteonet.create_model(name)
    except ValueError as e:
        one_line(e)
    else:  # pragma: no cover
        pytest.fail(f"create_model({name!r}) built something")
