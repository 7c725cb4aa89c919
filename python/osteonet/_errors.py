"""One-line errors: what osteonet keeps of an exception it turns into its own message, and the nearest valid
name for "did you mean" (as the C++ registry's)."""
from __future__ import annotations

import traceback
from typing import Sequence


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, or its type's name when the message is empty."""
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)


def release_frames(error: BaseException) -> None:
    """Clear the local variables of the finished frames ``error`` and its causes hold.

    A failed ``torch.onnx.export`` leaves its symbolic functions' frames in the exception's traceback, and
    they hold the new TorchScript Graph through a pybind11 reference that does not own it (torch 1.13 hands
    the Graph to Python that way). While such a Python object lives, a later Graph allocated at the freed
    address is cast back to it, and the next export fails with "Unable to cast from non-held to held
    instance". An exception kept by its caller (``sys.last_value`` in a notebook, pytest's ``excinfo``,
    the context of osteonet's own one-line error) must not keep those frames alive."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def nearest(name: str, valid: Sequence[str]) -> str:
    """The valid name closest to ``name`` (edit distance; the first of equals), for "did you mean" messages."""
    return min(valid, key=lambda v: _edit_distance(str(name), v)) if valid else ""


def _edit_distance(a: str, b: str) -> int:
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[-1]
