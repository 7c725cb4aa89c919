"""osteonet.metrics classification against scikit-learn on random seeded cases, and bad input."""

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

import osteonet.metrics as M

SEEDS = range(6)


def _case(seed, k, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    return y, p


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 5])
def test_rates_match_sklearn(seed, k):
    y, p = _case(seed, k)
    if seed % 2:  # exercise a class that never occurs in y_pred
        p[p == k - 1] = 0
    averages = ["macro", "micro", "weighted", None] + (["binary"] if k == 2 else [])
    for avg in averages:
        for ours, ref in ((M.precision, sk.precision_score), (M.recall, sk.recall_score), (M.f1_score, sk.f1_score)):
            np.testing.assert_allclose(ours(y, p, average=avg), ref(y, p, average=avg, zero_division=0), atol=1e-12)
    assert M.accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p), abs=1e-15)
    assert M.balanced_accuracy(y, p) == pytest.approx(sk.balanced_accuracy_score(y, p), abs=1e-12)
    np.testing.assert_array_equal(M.confusion_matrix(y, p), sk.confusion_matrix(y, p, labels=range(max(y.max(), p.max()) + 1)))


@pytest.mark.parametrize("seed", SEEDS)
def test_specificity_and_npv(seed):
    y, p = _case(seed, 4)
    mcm = sk.multilabel_confusion_matrix(y, p)  # [[tn, fp], [fn, tp]] per class
    tn, fp, fn = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0]
    np.testing.assert_allclose(M.specificity(y, p, average=None), tn / (tn + fp))
    np.testing.assert_allclose(M.npv(y, p, average=None), tn / (tn + fn))
    support = np.bincount(y, minlength=4)
    np.testing.assert_allclose(M.specificity(y, p, average="weighted"), np.sum(support * tn / (tn + fp)) / support.sum())
    yb, pb = (y > 1).astype(int), (p > 1).astype(int)
    assert M.specificity(yb, pb) == pytest.approx(sk.recall_score(yb, pb, pos_label=0))
    assert M.npv(yb, pb) == pytest.approx(sk.precision_score(yb, pb, pos_label=0))


def test_inputs_numpy_list_torch_agree():
    y, p = _case(0, 3)
    a = M.f1_score(y, p, average="macro")
    assert M.f1_score(list(y), list(p), average="macro") == a
    assert M.f1_score(torch.from_numpy(y), torch.from_numpy(p).int(), average="macro") == a


@pytest.mark.parametrize("seed", SEEDS)
def test_curves_and_auc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 500
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.4 * y, 2 if seed % 2 else 6)  # seed-odd cases have many ties
    assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    for drop in (True, False):
        f, t, h = M.roc_curve(y, s, drop_intermediate=drop)
        rf, rt, rh = sk.roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(f, rf)
        np.testing.assert_allclose(t, rt)
        np.testing.assert_allclose(h[1:], rh[1:])
        assert h[0] == np.inf
    pr, rc, th = M.precision_recall_curve(y, s)
    rpr, rrc, rth = sk.precision_recall_curve(y, s)
    np.testing.assert_allclose(pr, rpr)
    np.testing.assert_allclose(rc, rrc)
    np.testing.assert_allclose(th, rth)
    assert M.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_auc_ovr(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for avg in ("macro", "weighted", "micro", None):
        np.testing.assert_allclose(M.roc_auc(y, prob, average=avg),
                                   sk.roc_auc_score(y, prob, multi_class="ovr", average=avg), atol=1e-12)


def test_youden_hand_case():
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    r = M.youden_threshold(y, s)
    # threshold 0.35: TPR 1, FPR 1/3 -> J = 2/3 (0.8: TPR 2/3, FPR 0 -> J = 2/3 too; the higher threshold wins)
    assert r["j"] == pytest.approx(2 / 3)
    assert r["threshold"] == 0.8


@pytest.mark.parametrize("call,match", [
    (lambda: M.accuracy([0, 1, 1], [0, 1]), "same length"),
    (lambda: M.accuracy([], []), "must not be empty"),
    (lambda: M.confusion_matrix([0, 3], [0, 1], num_classes=3), "num_classes"),
    (lambda: M.confusion_matrix([0, -1], [0, 1]), r"\[0, num_classes\)"),
    (lambda: M.roc_auc([0, 1, 1], [0.1, np.nan, 0.3]), "NaN"),
    (lambda: M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]), "both classes"),
    (lambda: M.roc_auc([0, 2, 1], [0.1, 0.2, 0.3]), "binary"),
    (lambda: M.f1_score([0, 1, 2], [0, 1, 2]), "average='binary'"),
    (lambda: M.f1_score([0, 1], [0, 1], average="macr"), "did you mean 'macro'"),
    (lambda: M.accuracy([0.5, 1], [0, 1]), "integer"),
])
def test_bad_input_raises_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_confusion_accumulator_equals_pure_function():
    y, p = _case(3, 3, 900)
    acc = M.ConfusionMatrixMetric(3)
    for i in range(0, 900, 128):
        acc.update(y[i:i + 128], p[i:i + 128])
    assert acc.compute("f1", average="macro") == pytest.approx(M.f1_score(y, p, average="macro"))
    assert acc.compute("accuracy") == M.accuracy(y, p)
    acc.reset()
    with pytest.raises(ValueError):
        acc.compute()
    auc = M.Accumulator(M.roc_auc)
    rng = np.random.default_rng(0)
    yy, ss = rng.integers(0, 2, 300), rng.random(300)
    for i in range(0, 300, 100):
        auc.update(yy[i:i + 100], torch.from_numpy(ss[i:i + 100]))
    assert auc.compute() == M.roc_auc(yy, ss)


def test_classification_report_contains_cis():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.5 * y
    p = (s > 0.7).astype(int)
    r = M.classification_report(y, p, y_score=s, n_resamples=200)
    assert r["accuracy"]["value"] == pytest.approx(sk.accuracy_score(y, p))
    lo, hi = r["accuracy"]["ci"]
    assert lo < r["accuracy"]["value"] < hi
    assert r["auc"]["value"] == pytest.approx(sk.roc_auc_score(y, s))
    assert r["per_class"][1]["sensitivity"]["value"] == pytest.approx(sk.recall_score(y, p))
    assert r["f1_binary"]["value"] == pytest.approx(sk.f1_score(y, p))
