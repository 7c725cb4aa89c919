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
