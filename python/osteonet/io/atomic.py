"""osteonet's one atomic writer (Python; C++ has the same in include/osteonet/train/checkpoint.hpp).

Bytes go to a hidden temporary file beside the target (``.<name>.<random>.tmp[.<ext>]``), are flushed and
fsynced, the temporary file is renamed over the target (POSIX rename is atomic) and the folder is
fsynced, so a crash leaves the old file or the new one, never half of one. A process killed between
the write and the rename leaves only its hidden temporary file: the next write of the same file deletes
it (one writer per file), and :func:`remove_stale_temporaries` cleans a whole folder (the trainer and
``osteonet train --resume`` call it on their run folder).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from typing import Any, Callable, Iterator, List

__all__ = ["atomic_write", "write_bytes", "write_text", "write_json", "write_with", "remove_stale_temporaries"]


def _stale_of(folder: str, base: str) -> List[str]:
    """The temporaries an interrupted write of ``folder/base`` left (``.<base>.<random>.tmp[.<ext>]``; the random
    part of Python's and C++'s names has no dot)."""
    prefix = "." + base + "."
    out = []
    for p in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*.tmp*")):
        rest = os.path.basename(p)[len(prefix):]
        random_part, _, after = rest.partition(".tmp")
        if random_part and "." not in random_part and (after == "" or after.startswith(".")):
            out.append(p)
    return out


def _temporary(path: str, suffix: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    for stale in _stale_of(folder, os.path.basename(path)):  # a killed earlier write of this file (one writer per file)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; what osteonet writes is an ordinary file
    return tmp


def _commit(tmp: str, path: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself durable (some file systems refuse a folder fd)
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_with(path: str, writer: Callable[[str], None]) -> None:
    """Atomically writes the file ``writer(temporary_path)`` produces (PIL, pydicom, nibabel, torch.save
    want a path). The temporary name ends in the target's extension (``.nii.gz``): libraries choose the
    format by it."""
    path = os.fspath(path)
    base = os.path.basename(path)
    tmp = _temporary(path, ".tmp" + (base[base.index(".", 1):] if "." in base[1:] else ""))
    try:
        writer(tmp)
        _commit(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[Any]:
    """``with atomic_write(path, "w") as f: f.write(...)``: the file appears only when the block succeeds."""
    path = os.fspath(path)
    tmp = _temporary(path, ".tmp")
    try:
        with open(tmp, mode) as f:
            yield f
        _commit(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str, obj: Any, indent: int = 1) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)


def remove_stale_temporaries(folder: str, recursive: bool = True) -> List[str]:
    """Deletes the hidden temporary files an interrupted atomic write (Python's or C++'s) left in ``folder``
    (``.<name>.<random>.tmp[.<ext>]``); returns their paths. Call it only where no other process is writing."""
    if not os.path.isdir(folder):
        return []
    where = os.path.join(folder, "**") if recursive else folder
    stale = sorted({p for pattern in (".*.tmp", ".*.tmp.*")
                    for p in glob.glob(os.path.join(where, pattern), recursive=recursive)})
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    return stale
