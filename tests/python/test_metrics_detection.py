"""Detection metrics: hand-worked cases and an independent pure-Python port of pycocotools' COCOeval
(evaluateImg / accumulate / summarize), since pycocotools is not packaged for Debian 12."""

import numpy as np
import pytest
import torch

import osteonet.metrics as M


# ---------------------------------------------------------------- reference: pycocotools' algorithm, in Python

def _iou(d, g):
    w = min(d[2], g[2]) - max(d[0], g[0])
    h = min(d[3], g[3]) - max(d[1], g[1])
    if w <= 0 or h <= 0:
        return 0.0
    i = w * h
    return i / ((d[2] - d[0]) * (d[3] - d[1]) + (g[2] - g[0]) * (g[3] - g[1]) - i)


def coco_reference(preds, targets):
    iou_thrs = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
    rec_thrs = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
    max_dets = [1, 10, 100]
    area_rngs = [[0, 1e5 ** 2], [0, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]]
    cats = sorted({int(l) for d in preds + targets for l in np.asarray(d["labels"])})
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])

    def evaluate_img(i, c, a_rng, max_det):
        gt = [b for b, l in zip(np.asarray(targets[i]["boxes"]), targets[i]["labels"]) if l == c]
        dt = [(b, s) for b, s, l in zip(np.asarray(preds[i]["boxes"]), preds[i]["scores"], preds[i]["labels"]) if l == c]
        if not gt and not dt:
            return None
        g_ig = np.array([1 if area(g) < a_rng[0] or area(g) > a_rng[1] else 0 for g in gt])
        gtind = np.argsort(g_ig, kind="mergesort")
        gt = [gt[j] for j in gtind]
        g_ig = g_ig[gtind] if len(gt) else g_ig
        dtind = np.argsort([-s for _, s in dt], kind="mergesort")
        dt = [dt[j] for j in dtind[:max_det]]
        T, G, D = len(iou_thrs), len(gt), len(dt)
        gtm, dtm, dt_ig = np.zeros((T, G)), np.zeros((T, D)), np.zeros((T, D))
        ious = np.array([[_iou(d, g) for g in gt] for d, _ in dt]) if G and D else []
        if len(ious):
            for ti, t in enumerate(iou_thrs):
                for di in range(D):
                    iou, m = min([t, 1 - 1e-10]), -1
                    for gi in range(G):
                        if gtm[ti, gi] > 0:
                            continue
                        if m > -1 and g_ig[m] == 0 and g_ig[gi] == 1:
                            break
                        if ious[di, gi] < iou:
                            continue
                        iou, m = ious[di, gi], gi
                    if m == -1:
                        continue
                    dt_ig[ti, di] = g_ig[m]
                    dtm[ti, di] = m + 1
                    gtm[ti, m] = di + 1
        a = np.array([area(d) < a_rng[0] or area(d) > a_rng[1] for d, _ in dt]).reshape((1, D))
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {"dtScores": [s for _, s in dt], "dtMatches": dtm, "gtIgnore": g_ig, "dtIgnore": dt_ig}

    T, R, K, A, Mn = len(iou_thrs), len(rec_thrs), len(cats), len(area_rngs), len(max_dets)
    precision, recall = -np.ones((T, R, K, A, Mn)), -np.ones((T, K, A, Mn))
    for k, c in enumerate(cats):
        for a, a_rng in enumerate(area_rngs):
            E = [evaluate_img(i, c, a_rng, max_dets[-1]) for i in range(len(targets))]
            E = [e for e in E if e is not None]
            if not E:
                continue
            for m, max_det in enumerate(max_dets):
                scores = np.concatenate([e["dtScores"][:max_det] for e in E])
                inds = np.argsort(-scores, kind="mergesort")
                dtm = np.concatenate([e["dtMatches"][:, :max_det] for e in E], axis=1)[:, inds]
                dt_ig = np.concatenate([e["dtIgnore"][:, :max_det] for e in E], axis=1)[:, inds]
                g_ig = np.concatenate([e["gtIgnore"] for e in E])
                npig = np.count_nonzero(g_ig == 0)
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(float)
                fp_sum = np.cumsum(fps, axis=1).astype(float)
                for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    nd = len(tp)
                    rc = tp / npig
                    pr = (tp / (fp + tp + np.spacing(1))).tolist()
                    q = np.zeros((R,))
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    inds2 = np.searchsorted(rc, rec_thrs, side="left")
                    try:
                        for ri, pi in enumerate(inds2):
                            q[ri] = pr[pi]
                    except IndexError:
                        pass
                    precision[t, :, k, a, m] = q

    def summ(ap, iou=None, a=0, m=2):
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(np.isclose(iou, iou_thrs))[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        return -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])

    stats = [summ(1), summ(1, .5), summ(1, .75), summ(1, a=1), summ(1, a=2), summ(1, a=3),
             summ(0, m=0), summ(0, m=1), summ(0), summ(0, a=1), summ(0, a=2), summ(0, a=3)]
    return stats, precision, recall


KEYS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large",
        "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]


def _random_case(seed, n_img=12, n_cls=3):
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_img):
        g = rng.integers(0, 6)
        xy = rng.uniform(0, 300, (g, 2))
        wh = rng.choice([10.0, 40.0, 120.0], (g, 1)) * rng.uniform(0.5, 1.5, (g, 2))
        gb = np.concatenate([xy, xy + wh], 1)
        gl = rng.integers(0, n_cls, g)
        d = rng.integers(0, 15)
        src = rng.integers(0, max(g, 1), d)
        jitter = rng.normal(scale=rng.choice([2.0, 8.0]), size=(d, 4))
        db = (gb[src] if g else rng.uniform(0, 300, (d, 4))) + jitter
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        dl = np.where(rng.random(d) < 0.8, gl[src] if g else rng.integers(0, n_cls, d), rng.integers(0, n_cls, d))
        ds = np.round(rng.random(d), 1)  # coarse scores: many ties
        preds.append({"boxes": db, "scores": ds, "labels": dl})
        targets.append({"boxes": gb, "labels": gl})
    return preds, targets


@pytest.mark.parametrize("seed", range(8))
def test_coco_equals_reference_port(seed):
    preds, targets = _random_case(seed)
    stats, prec, rec = coco_reference(preds, targets)
    r = M.detection_map(preds, targets)
    np.testing.assert_allclose([r[k] for k in KEYS], stats, atol=1e-6)
    np.testing.assert_allclose(r["precision"], prec, atol=1e-12)
    np.testing.assert_allclose(r["recall"], rec, atol=1e-12)


def _box(x, y, w, h):
    return [x, y, x + w, y + h]


def test_hand_single_perfect_and_iou_exactly_half():
    t = [{"boxes": [_box(0, 0, 10, 10)], "labels": [0]}]
    # a box of IoU exactly 0.5: [0,0,10,20] against [0,0,10,10] -> 100 / 200
    p = [{"boxes": [_box(0, 0, 10, 20)], "scores": [0.9], "labels": [0]}]
    assert M.box_iou(p[0]["boxes"], t[0]["boxes"])[0, 0] == 0.5
    r = M.detection_map(p, t)
    assert r["map_50"] == pytest.approx(1.0)  # IoU 0.5 counts as a match at threshold 0.5 (>=)
    assert r["map_75"] == pytest.approx(0.0)
    assert r["map"] == pytest.approx(0.1)  # matched at 1 of 10 thresholds
    assert M.detection_recall(p, t) == 1.0
    v = M.detection_map(p, t, method="voc")
    assert v["map"] == pytest.approx(1.0)


def test_hand_no_predictions_and_class_without_gt():
    t = [{"boxes": [_box(0, 0, 50, 50)], "labels": [1]}, {"boxes": np.zeros((0, 4)), "labels": []}]
    p = [{"boxes": np.zeros((0, 4)), "scores": [], "labels": []},
         {"boxes": [_box(5, 5, 20, 20)], "scores": [0.8], "labels": [2]}]  # class 2 has no ground truth
    r = M.detection_map(p, t)
    assert r["map"] == 0.0 and r["mar_100"] == 0.0
    np.testing.assert_array_equal(r["classes"], [1, 2])
    assert r["map_per_class"][1] == -1  # undefined, excluded from the mean
    assert r["map_small"] == -1  # the only ground truth is medium (50² > 32²)


def test_hand_ties_and_duplicates():
    t = [{"boxes": [_box(0, 0, 100, 100), _box(200, 200, 100, 100)], "labels": [0, 0]}]
    # Two detections on the same object with equal scores: the first (stable order) matches, the second is a FP.
    p = [{"boxes": [_box(0, 0, 100, 100), _box(1, 1, 100, 100), _box(200, 200, 100, 100)],
          "scores": [0.9, 0.9, 0.5], "labels": [0, 0, 0]}]
    r = M.detection_map(p, t, iou_thresholds=[0.5])
    # precision/recall: (1, 1/2), (1/2, 1/2), (2/3, 1) -> envelope 1 up to recall 0.5, 2/3 after
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert r["map"] == pytest.approx(expected, abs=1e-12)
    v = M.detection_map(p, t, method="voc")
    assert v["map"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    v7 = M.detection_map(p, t, method="voc07")
    assert v7["map"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    c = M.detection_counts(p, t)
    assert (c["tp"], c["fp"], c["fn"]) == (2, 1, 0)
    assert M.detection_accuracy(p, t) == pytest.approx(2 / 3)


def test_dsnet_paper_formulas_verbatim():
    assert M.dsnet_paper_map(tp=80, fp=20, num_classes=3) == pytest.approx(80 / (3 * 100))
    assert M.dsnet_paper_accuracy(tp=70, tn=10, fn=20) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        M.dsnet_paper_map(0, 0, 3)


def test_accumulator_and_torch_inputs():
    preds, targets = _random_case(3)
    acc = M.DetectionMAP()
    acc.update(preds[:5], targets[:5])
    acc.update([{k: torch.as_tensor(v) for k, v in d.items()} for d in preds[5:]],
               [{k: torch.as_tensor(v) for k, v in d.items()} for d in targets[5:]])
    assert acc.compute()["map"] == pytest.approx(M.detection_map(preds, targets)["map"])


@pytest.mark.parametrize("p,t,match", [
    ([], [], "at least one image"),
    ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [0]}], [], "same images"),
    ([{"boxes": [[0, 0, 1, 1]], "scores": [np.nan], "labels": [0]}], [{"boxes": [[0, 0, 1, 1]], "labels": [0]}], "finite"),
    ([{"boxes": [[2, 0, 1, 1]], "scores": [0.5], "labels": [0]}], [{"boxes": [[0, 0, 1, 1]], "labels": [0]}], "x2 >= x1"),
    ([{"boxes": [[0, 0, 1, 1]], "labels": [0]}], [{"boxes": [[0, 0, 1, 1]], "labels": [0]}], "scores"),
])
def test_bad_input(p, t, match):
    with pytest.raises(ValueError, match=match) as e:
        M.detection_map(p, t)
    assert "\n" not in str(e.value)
