"""Checkpoints in the one format C++ (include/osteonet/train/checkpoint.hpp) and Python write, atomically.

A checkpoint is ``torch.save`` of one dict: ``osteonet_checkpoint`` (format version), ``writer``
("python"/"c++"), ``epoch``, ``model`` (state_dict), ``optimizer`` (torch.optim state_dict here; a
byte tensor from C++), ``schedule`` (the schedule's numbers), ``rng`` (torch, CUDA, NumPy and Python
generator states as tensors and numbers, so C++'s torch::pickle_load reads the file too), ``extra``
(early stopping, ...), ``history`` (the epoch log), with mixed precision on CUDA ``scaler`` and, from a
run of several processes, ``rng_ranks`` (every rank's ``rng``, in rank order; ``rng`` is rank 0's).

Integrity (format 2): ``checksums`` holds ``{"model": {name: SHA-256}}`` (C++'s ``tensor_sha256``: dtype,
shape and values of each tensor) and, for a checkpoint that stores a model card (``card_key``, e.g. the
OVF aggregators' ``"ovf"``), ``{"card": {"key", "json", "tensors"}}``. Every read verifies them before any
tensor reaches a model; a mismatch raises one ValueError naming the file and the tensor. Format-1 files
(before checksums) and plain state dicts still load, with a one-time :class:`UnverifiedWeightsWarning`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import random
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import _core
from .._errors import first_line
from ..io import write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_summary", "rng_state", "set_rng_state", "CHECKPOINT_VERSION",
           "serialize_checkpoint", "verify_file", "warn_unverified", "UnverifiedWeightsWarning"]

CHECKPOINT_VERSION = int(_core.train.CHECKPOINT_VERSION)
FIRST_VERIFIED_VERSION = int(_core.train.FIRST_VERIFIED_VERSION)


class UnverifiedWeightsWarning(UserWarning):
    """Weights loaded from a file that carries no checksum (a plain state dict, a format-1 checkpoint)."""


def warn_unverified(path: str, what: str) -> None:
    """The one-time note (per file: Python shows a warning once per message) that ``path``'s tensors are unverified."""
    warnings.warn(f"{path}: {what}; its tensors are unverified (no SHA-256 to check them against)",
                  UnverifiedWeightsWarning, stacklevel=3)


class _BatchPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles one-element lists and dicts with MARK..APPENDS / SETITEMS, as LibTorch's unpickler
    (torch::pickle_load) reads them; CPython's pickler writes the single-item APPEND/SETITEM opcodes."""

    def _batch_appends(self, items):  # noqa: D401
        items = list(items)
        if not items:
            return
        self.write(pickle.MARK)
        for x in items:
            self.save(x)
        self.write(pickle.APPENDS)

    def _batch_setitems(self, items):
        items = list(items)
        if not items:
            return
        self.write(pickle.MARK)
        for k, v in items:
            self.save(k)
            self.save(v)
        self.write(pickle.SETITEMS)


class _PickleModule:
    """What torch.save's ``pickle_module`` needs: a Pickler (and the names torch.load may look up)."""

    Pickler = _BatchPickler
    Unpickler = pickle.Unpickler
    load = staticmethod(pickle.load)
    dump = staticmethod(pickle.dump)
    __name__ = "osteonet_pickle"


def rng_state(generators: Sequence[torch.Generator] = ()) -> Dict[str, Any]:
    """Every generator a training step may draw from: torch (CPU, CUDA), NumPy's global, Python's ``random``,
    and ``generators`` (e.g. the one a sampler shuffles with) as ``"generators"``."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(cached),
        "python": torch.tensor(mt, dtype=torch.int64), "python_version": int(version),
        "python_gauss": float("nan") if gauss is None else float(gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    if generators:
        state["generators"] = [g.get_state() for g in generators]
    return state


def _rng_restorer(state: Dict[str, Any], generators: Sequence[torch.Generator] = ()):
    """Checks :func:`rng_state`'s ``state`` by loading it into scratch generators (so a damaged or foreign state
    is a ValueError before anything changed) and returns the function that restores the real ones."""
    try:
        cpu = state["torch"]
        torch.Generator().set_state(cpu)
        np_state = py_state = None
        if "numpy_keys" in state:
            keys = state["numpy_keys"].numpy()
            if keys.min(initial=0) < 0 or keys.max(initial=0) >= 2**32:
                raise ValueError("NumPy's keys are not 32-bit unsigned")
            np_state = ("MT19937", keys.astype(np.uint32), int(state["numpy_pos"]), int(state["numpy_has_gauss"]),
                        float(state["numpy_gauss"]))
            np.random.RandomState().set_state(np_state)
        if "python" in state:
            gauss = float(state["python_gauss"])
            py_state = (int(state["python_version"]), tuple(int(v) for v in state["python"].tolist()),
                        None if math.isnan(gauss) else gauss)
            random.Random().setstate(py_state)
        saved = list(state.get("generators", []))
        for s in saved:
            torch.Generator().set_state(s)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, AttributeError, IndexError) as e:
        raise ValueError(f"the random-number state cannot be restored ({type(e).__name__}: "
                         f"{first_line(e)[:200]})") from None
    if generators and len(saved) != len(generators):
        raise ValueError(f"set_rng_state: the state holds {len(saved)} extra generator(s), got generators of "
                         f"length {len(generators)}")

    def restore() -> None:
        torch.set_rng_state(cpu)
        if np_state is not None:
            np.random.set_state(np_state)
        if py_state is not None:
            random.setstate(py_state)
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state["cuda"].unbind(0)))
        for g, s in zip(generators, saved):
            g.set_state(s)

    return restore


def set_rng_state(state: Dict[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Restores :func:`rng_state`'s generators; ``generators`` (when given) get the saved extra states in
    order (a state saved with a different number of them raises ValueError). A damaged state is a
    ValueError and changes nothing."""
    _rng_restorer(state, generators)()


def save_checkpoint(path: str, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    schedule: Any = None, epoch: int = 0, extra: Optional[Dict[str, float]] = None,
                    history: Optional[List[Dict[str, float]]] = None, scaler: Any = None,
                    generators: Sequence[torch.Generator] = (), rng_ranks: Optional[List[Dict[str, Any]]] = None) -> None:
    """Saves everything a run needs to continue exactly, atomically (see the module docstring);
    ``generators``: extra torch generators (a sampler's) saved with the global ones; ``rng_ranks``: every
    rank's :func:`rng_state` in a run of several processes."""
    state: Dict[str, Any] = {
        "osteonet_checkpoint": CHECKPOINT_VERSION,
        "writer": "python",
        "epoch": int(epoch),
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},  # whole tensors
        "schedule": dict(schedule.state_dict()) if schedule is not None else {},
        "rng": rng_state(generators),
        "extra": {k: float(v) for k, v in (extra or {}).items()},
        "history": [{k: float(v) for k, v in rec.items()} for rec in (history or [])],
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    if rng_ranks:
        state["rng_ranks"] = list(rng_ranks)
    write_bytes(path, serialize_checkpoint(state))


def _card_parts(card: Dict[str, Any], prefix: str = "") -> "tuple[Dict[str, torch.Tensor], Dict[str, Any]]":
    """A model card's tensors by dotted name, and the rest (JSON-able) with the tensors left out."""
    tensors: Dict[str, torch.Tensor] = {}
    plain: Dict[str, Any] = {}
    for k, v in card.items():
        if isinstance(v, torch.Tensor):
            tensors[prefix + str(k)] = v
        elif isinstance(v, dict):
            sub_t, sub_p = _card_parts(v, f"{prefix}{k}.")
            tensors.update(sub_t)
            plain[str(k)] = sub_p
        else:
            plain[str(k)] = v
    return tensors, plain


def _card_json_sha256(plain: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=repr).encode()).hexdigest()


def serialize_checkpoint(state: Dict[str, Any], card_key: Optional[str] = None) -> bytes:
    """The bytes of a checkpoint dict (``osteonet_checkpoint``, ``model``, ...) with its ``checksums`` added:
    the model tensors' and, when ``card_key`` names a model card stored in it, the card's. Every writer of a
    checkpoint goes through here."""
    checksums: Dict[str, Any] = {"model": dict(_core.train.state_checksums(state["model"]))}
    if card_key is not None:
        tensors, plain = _card_parts(state[card_key])
        checksums["card"] = {"key": card_key, "json": _card_json_sha256(plain),
                             "tensors": dict(_core.train.state_checksums(tensors))}
    buf = io.BytesIO()
    torch.save({**state, "checksums": checksums}, buf, pickle_module=_PickleModule)
    return buf.getvalue()


def _tensor_dict(where: str, what: str, d: Any) -> Dict[str, torch.Tensor]:
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items()):
        raise ValueError(f"{where}: corrupted, its {what} is not a dict of name -> tensor; nothing was loaded")
    return d


def _hex_dict(where: str, what: str, d: Any) -> Dict[str, str]:
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
        raise ValueError(f"{where}: corrupted, its {what} are not a dict of name -> SHA-256; nothing was loaded")
    return d


def _verify(path: str, state: Dict[str, Any]) -> int:
    """Checks a checkpoint dict against its checksums (C++'s verify_checksums); returns the number of tensors
    verified (0 with a one-time note for a format-1 file). ValueError naming the file and what differs."""
    where = f"checkpoint {path}"
    if state["osteonet_checkpoint"] < FIRST_VERIFIED_VERSION:
        warn_unverified(path, f"osteonet checkpoint format {state['osteonet_checkpoint']} (written before checksums)")
        return 0
    sums = state.get("checksums")
    if not isinstance(sums, dict) or not isinstance(sums.get("model"), dict):
        raise ValueError(f"{where}: corrupted, format {state['osteonet_checkpoint']} requires checksums and none are "
                         "stored; nothing was loaded")
    _core.train.verify_checksums(where, _tensor_dict(where, "model state", state["model"]),
                                 _hex_dict(where, "model checksums", sums["model"]))
    n = len(state["model"])
    card_sums = sums.get("card")
    if card_sums is not None:
        key = card_sums.get("key") if isinstance(card_sums, dict) else None
        if not isinstance(state.get(key), dict):
            raise ValueError(f"{where}: corrupted, its model card {key!r} is missing; nothing was loaded")
        tensors, plain = _card_parts(state[key])
        _core.train.verify_checksums(f"{where} (model card)", tensors,
                                     _hex_dict(where, "model card checksums", card_sums.get("tensors")))
        if _card_json_sha256(plain) != card_sums.get("json"):
            raise ValueError(f"{where}: corrupted, the numbers and names of its model card {key!r} do not match their "
                             "SHA-256; nothing was loaded")
        n += len(tensors)
    return n


def _read(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    path = os.fspath(path)
    _core.train.check_checkpoint_file(path)  # ValueError: missing, empty, not a zip archive, truncated
    try:
        state = torch.load(path, map_location=map_location)
    except Exception as e:  # noqa: BLE001  (any unpickling failure is one clear error)
        raise ValueError(f"checkpoint {path}: not an osteonet checkpoint (cannot be unpickled: "
                         f"{first_line(e)})") from None
    if not isinstance(state, dict) or "osteonet_checkpoint" not in state:
        what = type(state).__name__
        raise ValueError(f"checkpoint {path}: not an osteonet checkpoint (no 'osteonet_checkpoint' key in a {what})")
    version = state["osteonet_checkpoint"]
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path}: format is newer than this osteonet reads, got version={version!r} "
                         f"(reads <= {CHECKPOINT_VERSION})")
    for key in ("epoch", "model"):
        if key not in state:
            raise ValueError(f"checkpoint {path}: not an osteonet checkpoint (no '{key}' key)")
    state["_verified_tensors"] = _verify(path, state)
    return state


def load_checkpoint(path: str, model: Optional[torch.nn.Module] = None, optimizer: Optional[torch.optim.Optimizer] = None,
                    schedule: Any = None, restore_rng: bool = True, scaler: Any = None,
                    map_location: Any = "cpu", generators: Sequence[torch.Generator] = ()) -> Dict[str, Any]:
    """Restores what :func:`save_checkpoint` (or the C++ trainer) saved into the given objects (each optional).

    Returns ``{"epoch", "writer", "extra", "history", "rng_ranks"}`` (``rng_ranks``: every rank's generator
    states from a run of several processes, else None). A missing, empty, truncated or foreign file, or a
    model state that does not fit ``model``, raises one ValueError naming the file.
    """
    state = _read(path, map_location)
    restore_generators = None
    if restore_rng and "rng" in state:  # checked before anything is loaded
        try:
            restore_generators = _rng_restorer(state["rng"], generators)
        except ValueError as e:
            raise ValueError(f"checkpoint {path}: {e}; nothing was loaded") from None
    if optimizer is not None:
        opt = state.get("optimizer")
        if opt is None or isinstance(opt, torch.Tensor):
            raise ValueError(f"checkpoint {path}: holds no torch.optim state (written by {state.get('writer', '?')}); "
                             "pass optimizer=None to load the model alone")
    # All or nothing: a part that fails after the model took its tensors (a damaged optimiser state, which
    # the checksums do not cover, or a state dict that fits in part) puts the model's tensors back.
    before = {k: v.detach().clone() for k, v in model.state_dict().items()} if model is not None else None
    try:
        if model is not None:
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as e:
                detail = " ".join(line.strip() for line in str(e).splitlines()[1:3])
                raise ValueError(f"checkpoint {path}: the model state does not fit this model ({detail})") from None
        try:
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
            if schedule is not None:
                schedule.load_state_dict({k: float(v) for k, v in state.get("schedule", {}).items()})
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, AttributeError, IndexError) as e:
            raise ValueError(f"checkpoint {path}: its optimiser, schedule or scaler state cannot be restored "
                             f"({type(e).__name__}: {first_line(e)[:200]}); nothing was loaded") from None
    except BaseException:
        if before is not None:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(before[k])
        raise
    if restore_generators is not None:
        restore_generators()
    return {"epoch": int(state["epoch"]), "writer": state.get("writer", "?"), "extra": dict(state.get("extra", {})),
            "history": [dict(r) for r in state.get("history", [])], "rng_ranks": state.get("rng_ranks")}


def verify_file(path: str) -> Dict[str, Any]:
    """What ``osteonet verify FILE`` reports: ``{"path", "verified", "tensors", "what"}``. An osteonet checkpoint
    is read and verified (a corrupted one raises ValueError naming the tensor); a plain state dict or a
    format-1 checkpoint is ``verified=False`` (nothing to check it against)."""
    path = os.fspath(path)
    _core.train.check_checkpoint_file(path)
    try:
        raw = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001  (any unpickling failure is one clear error)
        raise ValueError(f"{path}: cannot be unpickled ({first_line(e)})") from None
    if isinstance(raw, dict) and "osteonet_checkpoint" in raw:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedWeightsWarning)
            state = _read(path)
        n = state["_verified_tensors"]
        if n == 0:
            return {"path": path, "verified": False, "tensors": len(state["model"]),
                    "what": f"osteonet checkpoint format {state['osteonet_checkpoint']}, written before checksums"}
        return {"path": path, "verified": True, "tensors": n,
                "what": f"osteonet checkpoint format {state['osteonet_checkpoint']}, written by {state.get('writer', '?')}"}
    if isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return {"path": path, "verified": False, "tensors": len(raw), "what": "a plain state dict (no checksum)"}
    raise ValueError(f"{path}: neither an osteonet checkpoint nor a state dict (holds a {type(raw).__name__})")


def checkpoint_summary(path: str) -> Dict[str, Any]:
    """Version, writer, epoch, keys and model tensor shapes, read by the C++ core (torch::pickle_load)."""
    return dict(_core.train.checkpoint_summary(str(path)))
