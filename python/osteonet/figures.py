"""Pictures people would rather look at than numbers: confusion matrices, ROC curves, training
curves, boxes and labels over images. Written atomically as PNG (matplotlib, Agg)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .io import write_with


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    _plt().close(fig)


def confusion_matrix_png(path: str, cm: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix") -> None:
    plt = _plt()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    _save(fig, path)


def roc_png(path: str, curves: Dict[str, Dict[str, Sequence[float]]], title: str = "ROC") -> None:
    """curves: label -> {"fpr": [...], "tpr": [...], "auc": float}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, c in curves.items():
        ax.plot(c["fpr"], c["tpr"], label=f"{label} (AUC {c['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("1 - specificity"), ax.set_ylabel("sensitivity"), ax.set_title(title), ax.legend(loc="lower right")
    _save(fig, path)


def mask_overlay_png(path: str, images: Sequence[np.ndarray], truths: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                     titles: Sequence[str], num_labels: int = 2, cols: int = 4, zoom_margin: Optional[float] = None,
                     heading: str = "reference (solid) and predicted (dashed) outlines") -> None:
    """Images in a grid with the reference (solid) and predicted (dashed) outline of each label 1..num_labels-1.
    With `zoom_margin`, each panel shows only the box of both masks widened by that fraction of its size."""
    plt = _plt()
    n = len(images)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(images[i], cmap="gray")
        both = (np.asarray(truths[i]) > 0) | (np.asarray(preds[i]) > 0)
        if zoom_margin is not None and both.any():
            ys, xs = np.nonzero(both)
            my, mx = zoom_margin * (np.ptp(ys) + 1) + 4, zoom_margin * (np.ptp(xs) + 1) + 4
            ax.set_xlim(xs.min() - mx, xs.max() + mx)
            ax.set_ylim(ys.max() + my, ys.min() - my)
        for k in range(1, num_labels):
            c = colors((k - 1) % 10)
            pairs = ((truths[i], "solid", c), (preds[i], "dashed", c)) if num_labels > 2 else \
                ((truths[i], "solid", "lime"), (preds[i], "dashed", "red"))
            for m, style, c in pairs:
                mk = (np.asarray(m) == k).astype(float)
                if 0 < mk.sum() < mk.size:
                    ax.contour(mk, levels=[0.5], colors=[c], linewidths=1.0, linestyles=style)
        ax.set_title(titles[i], fontsize=8)
    fig.suptitle(heading, fontsize=9)
    _save(fig, path)


def bland_altman_png(path: str, reference: Sequence[float], measured: Sequence[float], ba: Dict, units: str = "",
                     title: str = "Bland–Altman") -> None:
    """Difference (measured − reference) against the mean, with the bias and the limits of agreement."""
    plt = _plt()
    ref, mea = np.asarray(reference, float), np.asarray(measured, float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter((ref + mea) / 2, mea - ref, s=12, alpha=0.7)
    for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
        if key in ba:
            ax.axhline(ba[key], color="k", ls=style, lw=1)
            ax.text(ax.get_xlim()[1], ba[key], f" {key} {ba[key]:.1f}", va="center", fontsize=8)
    ax.set_xlabel(f"mean of reference and predicted {units}"), ax.set_ylabel(f"predicted − reference {units}")
    ax.set_title(title)
    _save(fig, path)


def scatter_png(path: str, reference: Sequence[float], predicted: Sequence[float], units: str = "",
                title: str = "predicted vs reference") -> None:
    """Predicted against reference values with the identity line."""
    plt = _plt()
    ref, pred = np.asarray(reference, float), np.asarray(predicted, float)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(ref, pred, s=12, alpha=0.7)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"reference {units}"), ax.set_ylabel(f"predicted {units}"), ax.set_title(title)
    _save(fig, path)


def training_curves_png(path: str, history: List[Dict[str, float]]) -> None:
    plt = _plt()
    keys = [k for k in sorted({k for r in history for k in r}) if k not in ("epoch", "seconds", "lr")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in keys:
        pts = [(r["epoch"], r[k]) for r in history if k in r and r[k] is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=k)
    ax.set_xlabel("epoch"), ax.legend(), ax.set_title("training")
    _save(fig, path)


def detections_png(path: str, images: Sequence[np.ndarray], truths: Sequence[Dict], predictions: Sequence[Dict],
                   class_names: Sequence[str], score_threshold: float = 0.5, titles: Optional[Sequence[str]] = None,
                   max_per_image: Optional[int] = None) -> None:
    """Ground-truth boxes (green, solid) and predicted boxes (red, dashed; label and score) over grey
    images, one panel per image; predictions below ``score_threshold`` are not drawn, and at most the
    ``max_per_image`` highest-scoring ones are (boxes x1 y1 x2 y2, labels 1..K indexing ``class_names``)."""
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(1, max(1, n), figsize=(4 * max(1, n), 4.4), squeeze=False)
    name = lambda l: class_names[int(l) - 1] if 0 < int(l) <= len(class_names) else str(int(l))
    for i, ax in enumerate(axes[0]):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.asarray(images[i]), cmap="gray")
        for b, l in zip(np.asarray(truths[i]["boxes"]).reshape(-1, 4), np.asarray(truths[i]["labels"]).reshape(-1)):
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="lime", lw=1.5))
            ax.text(b[0], b[3] + 2, name(l), color="lime", fontsize=7, va="top")
        p = predictions[i]
        scores = np.asarray(p["scores"]).reshape(-1)
        order = np.argsort(-scores, kind="stable")[:max_per_image]
        for j in order:
            b, l, sc = np.asarray(p["boxes"]).reshape(-1, 4)[j], np.asarray(p["labels"]).reshape(-1)[j], scores[j]
            if sc < score_threshold:
                continue
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="red", lw=1.2, ls="--"))
            ax.text(b[0], b[1] - 2, f"{name(l)} {sc:.2f}", color="red", fontsize=7)
        ax.set_title(titles[i] if titles else f"test image {i}", fontsize=8)
    top = f"the {max_per_image} highest-scoring " if max_per_image else ""
    fig.suptitle(f"ground truth (green) and {top}detections with score >= {score_threshold:g} (red)", fontsize=9)
    _save(fig, path)


def image_with_text_png(path: str, image: np.ndarray, lines: Sequence[str],
                        boxes: Optional[Sequence[Sequence[float]]] = None) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image, cmap="gray")
    for b in boxes or []:
        ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="red", lw=1.5))
    ax.set_title("\n".join(lines), fontsize=9)
    ax.axis("off")
    _save(fig, path)
