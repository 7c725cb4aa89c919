"""The model card: ``model.json`` in a run folder, beside its checkpoints. It holds what rebuilding the
model needs (task, architecture, every option, preprocessing, classes or labels, checkpoint paths
relative to the folder) and what the model was trained on (the data folder, whether it is osteonet's
built-in synthetic data, counts, the split), so ``osteonet evaluate`` and ``predict`` need nothing else
and every prediction can say what its model learned from.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

from ..io import write_json

__all__ = ["CARD_NAME", "CARD_VERSION", "find_card", "save_card", "synthetic_notice"]

CARD_NAME = "model.json"
CARD_VERSION = 1


def save_card(run_dir: str, card: Dict[str, Any]) -> str:
    path = os.path.join(run_dir, CARD_NAME)
    write_json(path, {"osteonet_model_card": CARD_VERSION, **card}, indent=1)
    return path


def find_card(checkpoint: str, where: str = "checkpoint") -> Tuple[Dict[str, Any], str]:
    """(card, run folder) for ``checkpoint``: a run folder, its model.json, or a file inside the run folder
    (or one of its stage folders). A missing or unfinished card raises one ValueError."""
    checkpoint = os.fspath(checkpoint)
    if not os.path.exists(checkpoint):
        raise ValueError(f"{where} {checkpoint}: no such file or folder")
    if os.path.isdir(checkpoint):
        candidates = [os.path.join(checkpoint, CARD_NAME)]
    elif os.path.basename(checkpoint) == CARD_NAME:
        candidates = [checkpoint]
    else:
        d = os.path.dirname(os.path.abspath(checkpoint))
        candidates = [os.path.join(d, CARD_NAME), os.path.join(os.path.dirname(d), CARD_NAME)]
    path = next((c for c in candidates if os.path.exists(c)), None)
    if path is None:
        raise ValueError(f"{where} {checkpoint}: no {CARD_NAME} beside it (a run folder of `osteonet train` "
                         "holds one)")
    try:
        with open(path) as f:
            card = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a model card ({type(e).__name__})") from None
    if not isinstance(card, dict) or "osteonet_model_card" not in card or "task" not in card:
        raise ValueError(f"{path}: not an osteonet model card (no 'osteonet_model_card' and 'task' keys)")
    if card["osteonet_model_card"] > CARD_VERSION:
        raise ValueError(f"{path}: the card is newer than this osteonet reads, got version="
                         f"{card['osteonet_model_card']} (reads <= {CARD_VERSION})")
    if card.get("status") != "trained":
        raise ValueError(f"{path}: training has not finished (status={card.get('status')!r}); continue it with "
                         "`osteonet train ... --resume`")
    return card, os.path.dirname(os.path.abspath(path))


def synthetic_notice(card: Dict[str, Any]) -> Optional[str]:
    """The sentence every prediction of a model trained on osteonet's synthetic data carries (None otherwise)."""
    data = card.get("training_data") or {}
    if not data.get("synthetic"):
        return None
    return ("trained on osteonet's built-in synthetic data only: this output shows that the pipeline runs, "
            "it is not a finding about a real scan")
