"""Metrics for osteoporosis imaging papers, each with its standard, named definition (docs/metrics.md).

Every metric is a pure function (numpy arrays, lists or torch tensors in; floats, numpy arrays or dicts out) and,
in the MONAI style, an accumulator: ``update`` per batch, ``compute``, ``reset``. The work is done in C++
(``osteonet._core.metrics``); this module converts inputs and assembles results. Bad input raises ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import _core

_m = _core.metrics

__all__ = [
    # classification
    "confusion_matrix", "accuracy", "balanced_accuracy", "precision", "recall", "sensitivity", "specificity",
    "npv", "f1_score", "roc_curve", "roc_auc", "precision_recall_curve", "average_precision", "youden_threshold",
    "classification_report",
    # intervals and tests
    "proportion_ci", "delong_ci", "delong_test", "bootstrap_ci", "bootstrap_indices", "mcnemar",
    "chi2_contingency", "compare_readers",
    # detection
    "box_iou", "detection_map", "detection_counts", "detection_recall", "detection_accuracy",
    "dsnet_paper_map", "dsnet_paper_accuracy",
    # segmentation
    "overlap_counts", "dice", "iou", "hausdorff_distance",
    # agreement
    "pearson", "spearman", "mae", "rmse", "bland_altman", "linear_fit",
    # accumulators
    "ConfusionMatrixMetric", "Accumulator", "DetectionMAP", "OverlapMetric",
]


# ----------------------------------------------------------------------------------------------- conversion


def _tensor(x: Any, name: str) -> torch.Tensor:
    """A CPU tensor from a tensor, numpy array or (nested) list, without copying when possible."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"metrics: {name} must be array-like, got {type(x).__name__} ({e})") from None
    if arr.dtype == object:
        raise ValueError(f"metrics: {name} must be a numeric array, got dtype=object")
    if arr.dtype.kind == "b" or arr.dtype == np.uint8:
        dtype = arr.dtype
    elif arr.dtype.kind in "iu":
        dtype = np.int64
    elif arr.dtype.kind == "f":
        dtype = np.float64
    else:
        raise TypeError(f"metrics: {name} must be numeric, got dtype={arr.dtype}")
    # np.ascontiguousarray makes a scalar 1-D; the reshape keeps it 0-D, so a scalar where a sequence is
    # expected (accuracy(5, [1])) is refused by the shape checks instead of read as [5].
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype).reshape(arr.shape))


def _labels(x: Any, name: str) -> torch.Tensor:
    t = _tensor(x, name)
    if t.is_floating_point():
        # Integer-valued floats (e.g. labels loaded as float) are accepted; others are an error.
        if t.numel() and not bool(torch.all(torch.isfinite(t))):
            raise ValueError(f"metrics: {name} must hold class labels, got NaN or inf")
        if t.numel() and not bool(torch.all(t == torch.round(t))):
            raise ValueError(f"metrics: {name} must hold integer class labels, got non-integer values")
    return t.to(torch.int64).contiguous()


def _reals(x: Any, name: str) -> torch.Tensor:
    t = _tensor(x, name)
    return t.to(torch.float64).contiguous()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.numpy()


def _nc(num_classes: Optional[int]) -> int:
    if num_classes is None:
        return -1
    if int(num_classes) < 1:
        raise ValueError(f"metrics: num_classes must be positive, got num_classes={num_classes}")
    return int(num_classes)


# ----------------------------------------------------------------------------------------------- classification

_AVERAGES = ("binary", "macro", "micro", "weighted", None)


def confusion_matrix(y_true, y_pred, num_classes: Optional[int] = None) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as j; labels are integers in [0, num_classes)."""
    return _np(_m.confusion_matrix(_labels(y_true, "y_true"), _labels(y_pred, "y_pred"), _nc(num_classes)))


def _rate(rate: str, y_true, y_pred, average, num_classes, pos_label):
    if average not in _AVERAGES:
        _m.averaged_rate(torch.zeros(1, 1), rate, str(average), 1, False)  # raises the "did you mean" error
    cm = _m.confusion_matrix(_labels(y_true, "y_true"), _labels(y_pred, "y_pred"), _nc(num_classes))
    r = _m.averaged_rate(cm, rate, "none" if average is None else average, int(pos_label), num_classes is not None)
    return _np(r) if average is None else float(r)


def accuracy(y_true, y_pred) -> float:
    """(TP + TN) / N in the binary case; trace(C) / N in general."""
    return float(_m.accuracy_from_cm(_m.confusion_matrix(_labels(y_true, "y_true"), _labels(y_pred, "y_pred"), -1)))


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean per-class recall over the classes present in y_true (scikit-learn's balanced_accuracy_score)."""
    cm = _m.confusion_matrix(_labels(y_true, "y_true"), _labels(y_pred, "y_pred"), -1)
    return float(_m.balanced_accuracy_from_cm(cm))


def precision(y_true, y_pred, average="binary", num_classes=None, pos_label=1):
    """Precision (PPV) TP / (TP + FP), scikit-learn's averaging, 0 when TP + FP = 0."""
    return _rate("precision", y_true, y_pred, average, num_classes, pos_label)


def recall(y_true, y_pred, average="binary", num_classes=None, pos_label=1):
    """Recall (sensitivity, TPR) TP / (TP + FN), scikit-learn's averaging, 0 when TP + FN = 0."""
    return _rate("recall", y_true, y_pred, average, num_classes, pos_label)


sensitivity = recall


def specificity(y_true, y_pred, average="binary", num_classes=None, pos_label=1):
    """Specificity (TNR) TN / (TN + FP), one-vs-rest per class, averaged like recall ("weighted" by support)."""
    return _rate("specificity", y_true, y_pred, average, num_classes, pos_label)


def npv(y_true, y_pred, average="binary", num_classes=None, pos_label=1):
    """Negative predictive value TN / (TN + FN), one-vs-rest per class, averaged like precision."""
    return _rate("npv", y_true, y_pred, average, num_classes, pos_label)


def f1_score(y_true, y_pred, average="binary", num_classes=None, pos_label=1):
    """F1 = 2 P R / (P + R) (0 when P + R = 0); micro F1 from pooled counts, as scikit-learn."""
    return _rate("f1", y_true, y_pred, average, num_classes, pos_label)


def roc_curve(y_true, y_score, drop_intermediate: bool = True):
    """(fpr, tpr, thresholds) as scikit-learn's roc_curve, except thresholds[0] = +inf (sklearn 1.2: max + 1)."""
    f, t, h = _m.roc_curve(_labels(y_true, "y_true"), _reals(y_score, "y_score"), bool(drop_intermediate))
    return _np(f), _np(t), _np(h)


def roc_auc(y_true, y_score, average: Optional[str] = "macro", multi_class: str = "ovr"):
    """Area under the ROC curve (trapezoidal, ties count 1/2). 1-D y_score: binary; (N, K): one-vs-rest with
    average "macro" | "weighted" | "micro" | None."""
    s = _reals(y_score, "y_score")
    t = _labels(y_true, "y_true")
    if s.dim() == 1:
        return float(_m.roc_auc_binary(t, s))
    if multi_class != "ovr":
        raise ValueError(f"roc_auc: multi_class must be 'ovr', got multi_class={multi_class!r}")
    r = _m.roc_auc_ovr(t, s, "none" if average is None else average)
    return _np(r) if average is None else float(r)


def precision_recall_curve(y_true, y_score):
    """(precision, recall, thresholds) as scikit-learn's precision_recall_curve."""
    p, r, h = _m.precision_recall_curve(_labels(y_true, "y_true"), _reals(y_score, "y_score"))
    return _np(p), _np(r), _np(h)


def average_precision(y_true, y_score) -> float:
    """AP = Σ (R_n − R_{n−1}) P_n over thresholds (scikit-learn's average_precision_score, no interpolation)."""
    return float(_m.average_precision(_labels(y_true, "y_true"), _reals(y_score, "y_score")))


def youden_threshold(y_true, y_score) -> Dict[str, float]:
    """The threshold maximising Youden's J = TPR − FPR (predict positive when score ≥ threshold)."""
    return dict(_m.youden_threshold(_labels(y_true, "y_true"), _reals(y_score, "y_score")))


# ----------------------------------------------------------------------------------------------- intervals


def proportion_ci(successes, n, method: str = "wilson", alpha: float = 0.05):
    """(low, high) of a binomial proportion: "wilson" or "clopper-pearson" (= statsmodels' proportion_confint)."""
    return tuple(_m.proportion_ci(float(successes), float(n), method, float(alpha)))


def delong_ci(y_true, y_score, alpha: float = 0.05) -> Dict[str, float]:
    """AUC with DeLong's variance and normal (1 − alpha) interval, clipped to [0, 1]."""
    return dict(_m.delong_ci(_labels(y_true, "y_true"), _reals(y_score, "y_score"), float(alpha)))


def delong_test(y_true, score_a, score_b, alpha: float = 0.05) -> Dict[str, float]:
    """DeLong's test of two correlated AUCs on the same cases (two-sided p, interval of the difference)."""
    return dict(_m.delong_test(_labels(y_true, "y_true"), _reals(score_a, "score_a"), _reals(score_b, "score_b"),
                               float(alpha)))


def bootstrap_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """The (n_resamples, n) resample indices bootstrap_ci uses for this seed (mt19937_64, platform-independent)."""
    return _np(_m.bootstrap_indices(int(n), int(n_resamples), int(seed)))


def bootstrap_ci(metric, *arrays, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05,
                 average: str = "binary") -> Dict[str, Any]:
    """Seeded percentile bootstrap (1 − alpha) interval of a metric of paired arrays (resampling cases).

    ``metric`` is a built-in name (C++: "accuracy", "balanced_accuracy", "precision", "recall", "sensitivity",
    "specificity", "npv", "f1" with ``average``; "auc"; "mae", "rmse", "pearson", "bias") or any callable
    f(*arrays) -> float. Both use the same resamples for a seed. Resamples where the metric is undefined (raises
    ValueError or returns NaN) are dropped; ``n_valid`` says how many remain.
    """
    if len(arrays) == 0:
        raise ValueError("bootstrap_ci: needs at least one array, got none")
    if isinstance(metric, str):
        if len(arrays) != 2:
            raise ValueError(f"bootstrap_ci: built-in metrics take two arrays, got {len(arrays)}")
        a, b = arrays
        if metric == "auc" or metric in ("mae", "rmse", "pearson", "bias"):
            ta = _labels(a, "y_true") if metric == "auc" else _reals(a, "a")
            tb = _reals(b, "b")
        else:
            ta, tb = _labels(a, "y_true"), _labels(b, "y_pred")
        r = dict(_m.bootstrap_ci(metric, ta, tb, int(n_resamples), int(seed), float(alpha), average))
        r["samples"] = _np(r["samples"])
        return r
    if not callable(metric):
        raise TypeError(f"bootstrap_ci: metric must be a name or a callable, got {type(metric).__name__}")
    arrs = [np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x) for x in arrays]
    n = len(arrs[0])
    if n == 0:
        raise ValueError("bootstrap_ci: arrays must not be empty, got n=0")
    if any(len(x) != n for x in arrs):
        raise ValueError(f"bootstrap_ci: arrays must have the same length, got lengths {[len(x) for x in arrs]}")
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha must be in (0, 1), got alpha={alpha}")
    idx = bootstrap_indices(n, n_resamples, seed)
    samples = np.empty(n_resamples)
    for i in range(n_resamples):
        try:
            samples[i] = float(metric(*[x[idx[i]] for x in arrs]))
        except ValueError:
            samples[i] = np.nan
    valid = np.sort(samples[~np.isnan(samples)])
    if valid.size == 0:
        raise ValueError("bootstrap_ci: the metric is undefined on every resample, got n_valid=0")
    return {
        "estimate": float(metric(*arrs)),
        "ci_low": float(np.percentile(valid, 100 * alpha / 2)),
        "ci_high": float(np.percentile(valid, 100 * (1 - alpha / 2))),
        "std_error": float(valid.std(ddof=1)) if valid.size > 1 else 0.0,
        "n_valid": int(valid.size),
        "samples": samples,
    }


def mcnemar(table=None, *, b=None, c=None, exact: bool = True, correction: bool = True) -> Dict[str, float]:
    """McNemar's test from a 2×2 paired table [[both right, A right B wrong], [A wrong B right, both wrong]]
    (or the discordant counts b, c), as statsmodels' mcnemar: exact binomial, or chi-square with continuity
    correction."""
    if table is not None:
        t = np.asarray(table, dtype=float)
        if t.shape != (2, 2):
            raise ValueError(f"mcnemar: table must be 2×2, got shape={t.shape}")
        b, c = t[0, 1], t[1, 0]
    if b is None or c is None:
        raise ValueError("mcnemar: give a 2×2 table or both discordant counts b and c")
    return dict(_m.mcnemar(float(b), float(c), bool(exact), bool(correction)))


def chi2_contingency(table, correction: bool = True) -> Dict[str, float]:
    """Pearson's chi-square test of independence of an r×c table (SciPy's chi2_contingency, Yates for df 1)."""
    return dict(_m.chi2_contingency(_reals(table, "table"), bool(correction)))


def compare_readers(y_true, pred_a, pred_b, exact: bool = True) -> Dict[str, Any]:
    """Two readers (e.g. the model and a radiologist) on the same cases: accuracies, the paired 2×2 table of
    correct/incorrect, McNemar's test on it, and the chi-square test of the 2×2 reader × correct table."""
    t, a, b = (_np(_labels(x, n)) for x, n in ((y_true, "y_true"), (pred_a, "pred_a"), (pred_b, "pred_b")))
    if not (len(t) == len(a) == len(b)) or len(t) == 0:
        raise ValueError(f"compare_readers: inputs must be non-empty and of equal length, got {len(t)}, {len(a)}, {len(b)}")
    ca, cb = a == t, b == t
    paired = np.array([[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]])
    unpaired = np.array([[ca.sum(), (~ca).sum()], [cb.sum(), (~cb).sum()]])
    out = {"accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()), "paired_table": paired,
           "mcnemar": mcnemar(paired, exact=exact)}
    try:
        out["chi2"] = chi2_contingency(unpaired)
    except ValueError:  # a reader with all right or all wrong answers in both: no test
        out["chi2"] = {"statistic": float("nan"), "p_value": float("nan"), "dof": 1.0}
    return out


def classification_report(y_true, y_pred, y_score=None, num_classes: Optional[int] = None, alpha: float = 0.05,
                          ci_method: str = "wilson", n_resamples: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """All classification metrics with (1 − alpha) intervals: proportions (accuracy, and per class sensitivity,
    specificity, PPV, NPV) by ``ci_method``; F1, balanced accuracy and macro averages by percentile bootstrap;
    AUC (binary 1-D y_score) by DeLong, or one-vs-rest AUCs for (N, K) scores."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    cm = _np(_m.confusion_matrix(t, p, _nc(num_classes)))
    K, n = cm.shape[0], int(cm.sum())
    report: Dict[str, Any] = {"n": n, "confusion_matrix": cm, "alpha": alpha}
    correct = int(np.trace(cm))
    report["accuracy"] = {"value": correct / n, "ci": proportion_ci(correct, n, ci_method, alpha)}
    bs = dict(n_resamples=n_resamples, seed=seed, alpha=alpha)
    b = bootstrap_ci("balanced_accuracy", t, p, **bs)
    report["balanced_accuracy"] = {"value": b["estimate"], "ci": (b["ci_low"], b["ci_high"])}
    per_class = {}
    for k in range(K):
        tp = int(cm[k, k]); fn = int(cm[k].sum()) - tp; fp = int(cm[:, k].sum()) - tp; tn = n - tp - fn - fp
        entry = {"support": tp + fn}
        for name, num, den in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                               ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
            entry[name] = {"value": num / den if den else 0.0,
                           "ci": proportion_ci(num, den, ci_method, alpha) if den else (float("nan"), float("nan"))}
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        tk, pk = (t == k).to(torch.int64), (p == k).to(torch.int64)
        fb = bootstrap_ci("f1", tk, pk, **bs)
        entry["f1"] = {"value": f1, "ci": (fb["ci_low"], fb["ci_high"])}
        per_class[k] = entry
    report["per_class"] = per_class
    for avg in ("macro", "weighted", "micro") if K > 2 else ("binary",):
        for name in ("precision", "recall", "specificity", "npv", "f1"):
            r = bootstrap_ci(name, t, p, average=avg, **bs)
            report[f"{name}_{avg}"] = {"value": r["estimate"], "ci": (r["ci_low"], r["ci_high"])}
    if y_score is not None:
        s = _reals(y_score, "y_score")
        if s.dim() == 1:
            d = delong_ci(t, s, alpha)
            report["auc"] = {"value": d["auc"], "ci": (d["ci_low"], d["ci_high"]), "method": "delong"}
            report["youden"] = youden_threshold(t, s)
            report["average_precision"] = average_precision(t, s)
        else:
            per = roc_auc(t, s, average=None)
            cis = [delong_ci((t == k).to(torch.int64), s[:, k], alpha) for k in range(s.shape[1])]
            report["auc_per_class"] = [{"value": float(v), "ci": (c["ci_low"], c["ci_high"])} for v, c in zip(per, cis)]
            report["auc_macro"] = float(np.mean(per))
    return report


# ----------------------------------------------------------------------------------------------- detection


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) boxes (x1, y1, x2, y2)."""
    return _np(_m.box_iou(_reals(boxes_a, "boxes_a"), _reals(boxes_b, "boxes_b")))


def _split(items: Sequence[dict], name: str, with_scores: bool):
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"detection: {name} must be a list of dicts (one per image), got {type(items).__name__}")
    boxes, scores, labels = [], [], []
    for i, d in enumerate(items):
        if not isinstance(d, dict):
            raise TypeError(f"detection: {name}[{i}] must be a dict with boxes/labels, got {type(d).__name__}")
        keys = ("boxes", "scores", "labels") if with_scores else ("boxes", "labels")
        for k in keys:
            if k not in d:
                raise ValueError(f"detection: {name}[{i}] lacks the key '{k}'")
        bx = _reals(d["boxes"], f"{name}[{i}]['boxes']")
        if bx.numel() == 0:
            bx = bx.reshape(0, 4)
        boxes.append(bx)
        labels.append(_labels(d["labels"], f"{name}[{i}]['labels']").reshape(-1))
        if with_scores:
            scores.append(_reals(d["scores"], f"{name}[{i}]['scores']").reshape(-1))
    return boxes, scores, labels


def _det_result(r: dict) -> Dict[str, Any]:
    out = {k: (float(v) if isinstance(v, float) else v) for k, v in r.items()}
    out["classes"] = np.asarray(r["classes"], dtype=np.int64)
    out["map_per_class"] = np.asarray(r["map_per_class"])
    out["mar_100_per_class"] = np.asarray(r["mar_100_per_class"])
    for k in ("precision", "recall"):
        if k in out:
            out[k] = _np(out[k])
    return out


def detection_map(predictions, targets, method: str = "coco", iou_thresholds=None,
                  max_detection_thresholds=None) -> Dict[str, Any]:
    """Mean average precision of boxes in torchvision's format (per image: dict boxes (N, 4) xyxy, scores,
    labels; targets: boxes, labels).

    "coco": pycocotools' COCOeval algorithm (IoU .50:.05:.95, 101-point interpolation, area ranges, maxDets 1/10/100;
    no crowd regions) with keys map, map_50, map_75, map_small/medium/large, mar_1/10/100, mar_small/medium/large,
    classes, map_per_class, mar_100_per_class (-1 = undefined, e.g. a class without ground truth) and the raw
    ``precision`` (T, R, K, A, M) / ``recall`` (T, K, A, M) arrays.
    "voc": Pascal VOC all-point AP; "voc07": VOC2007 11-point AP (IoU 0.5 unless iou_thresholds is given).
    IoU thresholds must lie in [0, 1]; ``max_detection_thresholds`` (COCO only, default (1, 10, 100)) must be
    three increasing positive counts.
    """
    pb, ps, pl = _split(predictions, "predictions", True)
    tb, _, tl = _split(targets, "targets", False)
    thr = [] if iou_thresholds is None else [float(t) for t in iou_thresholds]
    if method == "coco":
        max_dets = (1, 10, 100) if max_detection_thresholds is None else max_detection_thresholds
        return _det_result(_m.coco_evaluate(pb, ps, pl, tb, tl, thr, [int(x) for x in max_dets]))
    if max_detection_thresholds is not None and method in ("voc", "voc07"):
        raise ValueError(f"detection_map: max_detection_thresholds applies to method='coco' only, got method={method!r} "
                         f"max_detection_thresholds={max_detection_thresholds!r}")
    if method in ("voc", "voc07"):
        return _det_result(_m.voc_evaluate(pb, ps, pl, tb, tl, method, thr))
    raise ValueError(f"detection_map: method must be 'coco', 'voc' or 'voc07', got method={method!r}")


def detection_counts(predictions, targets, iou_threshold: float = 0.5, score_threshold: float = 0.0) -> Dict[str, int]:
    """TP / FP / FN at one IoU threshold as DSNet counts them: a prediction (score ≥ score_threshold) is correct
    when it overlaps a free ground-truth box of the same class with IoU ≥ iou_threshold (greedy by score)."""
    pb, ps, pl = _split(predictions, "predictions", True)
    tb, _, tl = _split(targets, "targets", False)
    return dict(_m.detection_counts(pb, ps, pl, tb, tl, float(iou_threshold), float(score_threshold)))


def detection_recall(predictions, targets, iou_threshold: float = 0.5, score_threshold: float = 0.0) -> float:
    """Detection recall TP / (TP + FN) = correctly detected and classified boxes / ground-truth boxes (DSNet eq. 4)."""
    c = detection_counts(predictions, targets, iou_threshold, score_threshold)
    return c["tp"] / c["n_targets"] if c["n_targets"] else 0.0


def detection_accuracy(predictions, targets, iou_threshold: float = 0.5, score_threshold: float = 0.0) -> float:
    """Detection accuracy as DSNet's text defines it, "the proportion of all predictions that the model predicts
    correctly": correct predictions / predictions = TP / (TP + FP) (equals detection precision at this IoU)."""
    c = detection_counts(predictions, targets, iou_threshold, score_threshold)
    return c["tp"] / c["n_predictions"] if c["n_predictions"] else 0.0


def dsnet_paper_map(tp, fp, num_classes) -> float:
    """DSNet paper's eq. (3), verbatim and NON-STANDARD: "Map = TP / (N (TP + FP))". Use detection_map for mAP."""
    return float(_m.dsnet_paper_map(float(tp), float(fp), float(num_classes)))


def dsnet_paper_accuracy(tp, tn, fn) -> float:
    """DSNet paper's eq. (5), verbatim and NON-STANDARD: "Acc = TP / (TP + TN + FN)". Use accuracy for (TP+TN)/N."""
    return float(_m.dsnet_paper_accuracy(float(tp), float(tn), float(fn)))


# ----------------------------------------------------------------------------------------------- segmentation


def _label_map(x, name):
    t = _tensor(x, name)
    if t.is_floating_point():
        if not bool(torch.all(t == torch.round(t))):
            raise ValueError(f"segmentation: {name} must be a label map (integers or bool), got non-integer values")
        t = t.to(torch.int64)
    return t


def overlap_counts(y_pred, y_true, num_classes: Optional[int] = None) -> np.ndarray:
    """(N, K, 3) per-image, per-class TP, FP, FN of label maps (N, *spatial); bool masks have K = 2."""
    return _np(_m.overlap_counts(_label_map(y_pred, "y_pred"), _label_map(y_true, "y_true"), _nc(num_classes)))


def _reduce(scores: np.ndarray, counts: np.ndarray, metric: str, reduction: str, empty_score: float):
    if reduction == "none":
        return scores
    if reduction == "per_class":  # mean over images, skipping NaN (empty) entries
        with np.errstate(invalid="ignore"):
            return np.array([np.nanmean(c) if np.any(~np.isnan(c)) else np.nan for c in scores.T])
    if reduction == "mean":  # MONAI's "mean": per-class means over images, then over classes, NaN skipped
        per = _reduce(scores, counts, metric, "per_class", empty_score)
        return float(np.nanmean(per)) if np.any(~np.isnan(per)) else float("nan")
    if reduction == "global":  # counts summed over images (micro), one value per class
        return _np(_m.overlap_from_counts(torch.from_numpy(counts.sum(0)), metric, float(empty_score)))
    raise ValueError(f"segmentation: reduction must be 'none', 'per_class', 'mean' or 'global', got {reduction!r}")


def _overlap(metric, y_pred, y_true, num_classes, include_background, reduction, empty_score):
    counts = overlap_counts(y_pred, y_true, num_classes)
    if not include_background:
        counts = counts[:, 1:]
    scores = _np(_m.overlap_from_counts(torch.from_numpy(counts), metric, float(empty_score)))
    return _reduce(scores, counts, metric, reduction, empty_score)


def dice(y_pred, y_true, num_classes: Optional[int] = None, include_background: bool = False,
         reduction: str = "mean", empty_score: float = float("nan")):
    """Dice 2|A∩B| / (|A| + |B|) per image and class of label maps (N, *spatial). ``empty_score`` where a class is
    absent from both masks (NaN: skipped by the means). reduction: "none" (N, K), "per_class" (K, mean over
    images), "mean" (scalar), "global" (K, from counts summed over images). Background (class 0) is excluded
    unless include_background."""
    return _overlap("dice", y_pred, y_true, num_classes, include_background, reduction, empty_score)


def iou(y_pred, y_true, num_classes: Optional[int] = None, include_background: bool = False,
        reduction: str = "mean", empty_score: float = float("nan")):
    """IoU (Jaccard) |A∩B| / |A∪B| with the conventions of dice."""
    return _overlap("iou", y_pred, y_true, num_classes, include_background, reduction, empty_score)


def hausdorff_distance(y_pred, y_true, percentile: float = 95.0, spacing=None, num_classes: Optional[int] = None,
                       include_background: bool = False):
    """Percentile Hausdorff distance (HD95 by default) between mask surfaces, MONAI's definition.

    Two masks of one image (same shape, any dims; nonzero = foreground) give a float. Label maps (N, *spatial)
    with ``num_classes`` give an (N, K) array, one value per image and class. Both empty: NaN; one empty: inf.
    """
    p, t = _label_map(y_pred, "y_pred"), _label_map(y_true, "y_true")
    sp = [] if spacing is None else [float(s) for s in spacing]
    if num_classes is None:
        return float(_m.hausdorff_distance(p, t, float(percentile), sp))
    if p.shape != t.shape or p.dim() < 2:
        raise ValueError(f"hausdorff_distance: label maps must be (N, *spatial) of equal shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    ks = range(0 if include_background else 1, int(num_classes))
    return np.array([[_m.hausdorff_distance(p[i] == k, t[i] == k, float(percentile), sp) for k in ks]
                     for i in range(p.shape[0])])


# ----------------------------------------------------------------------------------------------- agreement


def pearson(x, y, alpha: float = 0.05) -> Dict[str, float]:
    """Pearson's r, two-sided p (t test) and Fisher-z (1 − alpha) interval."""
    return dict(_m.pearson(_reals(x, "x"), _reals(y, "y"), float(alpha)))


def spearman(x, y, alpha: float = 0.05) -> Dict[str, float]:
    """Spearman's rho (Pearson r of mid-ranks), p as SciPy's spearmanr, Fisher-z interval with SE √(1.06/(n−3))."""
    return dict(_m.spearman(_reals(x, "x"), _reals(y, "y"), float(alpha)))


def mae(y_true, y_pred) -> float:
    """Mean absolute error mean |y_pred − y_true|."""
    return float(_m.mae(_reals(y_true, "y_true"), _reals(y_pred, "y_pred")))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error sqrt(mean (y_pred − y_true)²)."""
    return float(_m.rmse(_reals(y_true, "y_true"), _reals(y_pred, "y_pred")))


def bland_altman(reference, measured, alpha: float = 0.05) -> Dict[str, Any]:
    """Bland–Altman analysis of d = measured − reference: bias, SD, limits bias ± z SD, and t intervals of the
    bias and of each limit (Bland & Altman 1999)."""
    return dict(_m.bland_altman(_reals(reference, "reference"), _reals(measured, "measured"), float(alpha)))


def linear_fit(x, y) -> Dict[str, float]:
    """Least-squares line y = intercept + slope x with standard errors, r and p (SciPy's linregress)."""
    return dict(_m.linear_fit(_reals(x, "x"), _reals(y, "y")))


# ----------------------------------------------------------------------------------------------- accumulators


class ConfusionMatrixMetric:
    """Accumulates a confusion matrix over batches; compute any classification rate from it.

    >>> m = ConfusionMatrixMetric(num_classes=3)
    >>> m.update(y_true_batch, y_pred_batch)
    >>> m.compute("f1", average="macro")
    """

    def __init__(self, num_classes: int):
        self.num_classes = _nc(num_classes)
        self.reset()

    def reset(self) -> None:
        self.cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, y_true, y_pred) -> None:
        self.cm += _m.confusion_matrix(_labels(y_true, "y_true"), _labels(y_pred, "y_pred"), self.num_classes)

    def compute(self, metric: str = "accuracy", average: Optional[str] = "macro", pos_label: int = 1):
        if int(self.cm.sum()) == 0:
            raise ValueError("ConfusionMatrixMetric: compute() before any update(), got 0 samples")
        if metric == "confusion_matrix":
            return _np(self.cm.clone())
        if metric == "accuracy":
            return float(_m.accuracy_from_cm(self.cm))
        if metric == "balanced_accuracy":
            return float(_m.balanced_accuracy_from_cm(self.cm))
        r = _m.averaged_rate(self.cm, metric, "none" if average is None else average, int(pos_label), False)
        return _np(r) if average is None else float(r)


class Accumulator:
    """Generic accumulator: stores each batch's arrays and applies ``fn`` to their concatenation.

    >>> auc = Accumulator(roc_auc)            # or Accumulator(pearson), Accumulator(bland_altman), ...
    >>> auc.update(y_true_batch, y_score_batch); auc.compute(); auc.reset()
    """

    def __init__(self, fn: Callable[..., Any], **kwargs):
        self.fn, self.kwargs = fn, kwargs
        self.reset()

    def reset(self) -> None:
        self._batches: List[List[np.ndarray]] = []

    def update(self, *arrays) -> None:
        arrs = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in arrays]
        if self._batches and len(arrs) != len(self._batches[0]):
            raise ValueError(f"Accumulator: every update needs {len(self._batches[0])} arrays, got {len(arrs)}")
        self._batches.append(arrs)

    def compute(self):
        if not self._batches:
            raise ValueError("Accumulator: compute() before any update(), got 0 batches")
        cols = [np.concatenate([b[i] for b in self._batches]) for i in range(len(self._batches[0]))]
        return self.fn(*cols, **self.kwargs)


class DetectionMAP:
    """Accumulates detections and targets per batch (torchvision's format); compute() evaluates them all."""

    def __init__(self, method: str = "coco", iou_thresholds=None):
        self.method, self.iou_thresholds = method, iou_thresholds
        self.reset()

    def reset(self) -> None:
        self._preds: List[dict] = []
        self._targets: List[dict] = []

    def update(self, predictions, targets) -> None:
        if len(predictions) != len(targets):
            raise ValueError(f"DetectionMAP: predictions and targets must list the same images, got {len(predictions)} and {len(targets)}")
        self._preds.extend(predictions)
        self._targets.extend(targets)

    def compute(self) -> Dict[str, Any]:
        return detection_map(self._preds, self._targets, method=self.method, iou_thresholds=self.iou_thresholds)


class OverlapMetric:
    """Dice or IoU accumulated as per-image counts (no masks kept): update(y_pred, y_true) per batch."""

    def __init__(self, metric: str = "dice", num_classes: int = 2, include_background: bool = False,
                 reduction: str = "mean", empty_score: float = float("nan")):
        if metric not in ("dice", "iou"):
            raise ValueError(f"OverlapMetric: metric must be 'dice' or 'iou', got {metric!r}")
        self.metric, self.num_classes = metric, _nc(num_classes)
        self.include_background, self.reduction, self.empty_score = include_background, reduction, empty_score
        self.reset()

    def reset(self) -> None:
        self._counts: List[np.ndarray] = []

    def update(self, y_pred, y_true) -> None:
        self._counts.append(overlap_counts(y_pred, y_true, self.num_classes))

    def compute(self):
        if not self._counts:
            raise ValueError("OverlapMetric: compute() before any update(), got 0 batches")
        counts = np.concatenate(self._counts)
        if not self.include_background:
            counts = counts[:, 1:]
        scores = _np(_m.overlap_from_counts(torch.from_numpy(counts), self.metric, float(self.empty_score)))
        return _reduce(scores, counts, self.metric, self.reduction, self.empty_score)
