"""Atomic file writes: write to a temporary file in the target folder, flush and fsync, then rename
over the target (POSIX rename is atomic), so a crash leaves the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[Any]:
    """``with atomic_write(path) as f: f.write(...)`` — the file appears only when the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str, obj: Any, indent: int = 1) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)


def write_with(path: str, writer: Callable[[str], None]) -> None:
    """Atomically writes a file produced by a library that wants a path (PIL, pydicom, nibabel)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    suffix = base[base.index("."):] if "." in base else ""  # keep ".nii.gz": libraries choose the format by it
    fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
