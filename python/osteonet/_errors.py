"""One-line errors: what osteonet keeps of an exception it turns into its own message."""
from __future__ import annotations

import traceback


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when the message is empty."""
    text = str(error)
    return text.splitlines()[0] if text.strip() else type(error).__name__


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
