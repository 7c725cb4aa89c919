"""Models as real ``torch.nn.Module``s backed by osteonet's C++ modules.

The C++ module owns the computation; the Python module mirrors its hierarchy and registers the *same*
tensors (same TensorImpl) as parameters and buffers. So ``state_dict``/``load_state_dict`` (with
torchvision's nested names), ``parameters()``, ``to()``, ``train()``/``eval()`` and any
``torch.optim`` optimiser work, and gradients computed in C++ land on the Python parameters.
"""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from . import _core

__all__ = ["list_models", "model_info", "create_model", "CppModule", "OsteoModel", "InceptionOutputs"]

#: Training-mode output of inception_v3 with its auxiliary head (torchvision's field names).
InceptionOutputs = collections.namedtuple("InceptionOutputs", ["logits", "aux_logits"])


def list_models() -> List[str]:
    """Names of every registered model."""
    return list(_core.list_models())


def model_info(name: str) -> Dict[str, str]:
    """Description of a model and the torchvision builder of the same architecture ('' if none)."""
    return dict(_core.model_info(name))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"create_model: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"create_model: {name} must be >= {minimum}, got {name}={value}")
    return value


def create_model(name: str, num_classes: int = 1000, attention: Optional[str] = None, in_chans: int = 3,
                 **options: Any) -> "OsteoModel":
    """Builds a registered model as a ``torch.nn.Module``.

    Args:
        name: one of :func:`list_models` (e.g. ``"resnet50"``, ``"dsnet_resnet50"``).
        num_classes: classifier outputs; 0 removes the classifier (forward returns pooled features).
        attention: ``None``/``"none"``, ``"se"``, ``"eca"``, ``"sk"`` or ``"ds"``.
        in_chans: input channels (3 for torchvision weights, 1 for grey images).
        **options: model keywords (``dropout``, ``aux_logits``, ``transform_input``, ``width_mult``,
            ``zero_init_residual``, ``attention_placement="blocks"|"dsnet"``) and attention keywords
            ``attn_<field>`` (``attn_reduction``, ``attn_groups``, ``attn_gate``, ...).

    Raises:
        ValueError: unknown model, attention or option name (with the nearest valid name).
        TypeError: an argument of the wrong type.
    """
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a str, got {type(name).__name__}")
    if name.startswith("fasterrcnn"):
        from . import detection  # detectors: osteonet.detection.create_detector

        if num_classes == 1000:  # create_model's classification default; detectors default to COCO's 91
            num_classes = 91
        return detection.create_detector(name, num_classes=num_classes, attention=attention, **options)
    if attention is not None and not isinstance(attention, str):
        raise TypeError(f"create_model: attention must be a str or None, got {type(attention).__name__}")
    _check_int("num_classes", num_classes, 0)
    _check_int("in_chans", in_chans, 1)
    cpp = _core.create_model(name, num_classes, attention or "none", in_chans, options)
    config = dict(num_classes=num_classes, attention=attention, in_chans=in_chans, **options)
    return OsteoModel(cpp, name, config)


class _CppSubmodule(nn.Module):
    """A node of the mirrored hierarchy: holds the C++ submodule's tensors under their local names."""

    def __init__(self, root: "_core.Backbone", qualname: str, cpp_type: str) -> None:
        super().__init__()
        self._root = root
        self._qualname = qualname
        self._cpp_type = cpp_type.replace("osteonet::", "").replace("torch::nn::", "").replace("Impl", "")

    def train(self, mode: bool = True) -> "_CppSubmodule":
        super().train(mode)
        self._root.train_submodule(self._qualname, mode)
        return self

    def _get_name(self) -> str:  # shown by repr()
        return self._cpp_type

    def forward(self, *args: Any) -> Any:  # noqa: D401
        raise RuntimeError(f"{self._qualname}: osteonet submodules run inside their C++ model; call the model itself")


class _CppSequence(_CppSubmodule):
    """A mirrored container whose children are numbered (Sequential, ModuleList): indexable like one."""

    def __getitem__(self, idx: int) -> nn.Module:
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeError(f"{self._qualname}: index must be an int, got {type(idx).__name__}")
        n = len(self._modules)
        key = str(idx + n if idx < 0 else idx)
        if key not in self._modules:
            raise IndexError(f"{self._qualname}: index {idx} out of range for {n} children")
        return self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def _restore_identity(module: nn.Module, before: Dict[str, Dict[str, torch.Tensor]]) -> None:
    """After ``_apply`` (to/cuda/double/...), keep the tensor objects the C++ module shares.

    ``nn.Module._apply`` replaces buffers with new tensors; the C++ module would keep the old ones.
    Move the new data into the old objects instead (``old.data = new``), as it does for parameters.
    """
    for kind in ("_parameters", "_buffers"):
        table = getattr(module, kind)
        for key, old in before[kind].items():
            new = table.get(key)
            if old is None or new is None or new is old:
                continue
            with torch.no_grad():
                old.data = new.data
            if new.grad is not None:
                old.grad = new.grad
            table[key] = old


class CppModule(nn.Module):
    """Base of every Python module backed by a C++ osteonet module (``self._cpp``).

    The C++ object must offer ``named_parameters()``, ``named_buffers()``, ``module_tree()``,
    ``train(mode)`` and ``train_submodule(qualname, mode)``; this class mirrors its hierarchy with the
    same tensors and keeps them shared through ``to()``/``cuda()``/``double()``.
    """

    def __init__(self, cpp: Any, name: str, config: Dict[str, Any]) -> None:
        super().__init__()
        self._cpp = cpp
        self.model_name = name
        self.config = dict(config)
        self._build_mirror()
        self.train(True)

    def _build_mirror(self) -> None:
        params = dict(self._cpp.named_parameters())
        buffers = dict(self._cpp.named_buffers())
        nodes: Dict[str, nn.Module] = {"": self}
        tree = self._cpp.module_tree()
        numbered = {q.rpartition(".")[0] for q, *_ in tree if q.rpartition(".")[2].isdigit()}
        for qualname, cpp_type, pnames, bnames in tree:
            parent, _, local = qualname.rpartition(".")
            cls = _CppSequence if qualname in numbered else _CppSubmodule
            node = cls(self._cpp, qualname, cpp_type)
            nodes[parent].add_module(local, node)
            nodes[qualname] = node
            for p in pnames:
                t = params[f"{qualname}.{p}"]
                t.__class__ = nn.Parameter  # same tensor object as C++'s, now an nn.Parameter
                node.register_parameter(p, t)
            for b in bnames:
                node.register_buffer(b, buffers[f"{qualname}.{b}"])

    def train(self, mode: bool = True) -> "CppModule":
        if not isinstance(mode, bool):
            raise ValueError(f"{self.model_name}.train: mode must be a bool, got {type(mode).__name__}")
        super().train(mode)
        self._cpp.train(mode)
        return self

    def _apply(self, fn, *args, **kwargs):  # type: ignore[override]
        before = {
            name: {"_parameters": dict(m._parameters), "_buffers": dict(m._buffers)}
            for name, m in self.named_modules()
        }
        super()._apply(fn, *args, **kwargs)
        for name, m in self.named_modules():
            _restore_identity(m, before[name])
        return self

    def __reduce__(self):
        raise TypeError(f"{self.model_name}: pickle the state_dict() instead of the model "
                        "(rebuild with osteonet.create_model and load_state_dict)")


class OsteoModel(CppModule):
    """A registered osteonet model. ``forward(x)`` returns logits (N x num_classes)."""

    # --- computation -------------------------------------------------------------------------
    def _check(self, x: Any, where: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.model_name}.{where}: expected a torch.Tensor, got {type(x).__name__}")
        return x

    def forward(self, x: torch.Tensor) -> Any:
        x = self._check(x, "forward")
        if self.training and self.model_name == "inception_v3":
            heads = self._cpp.forward_heads(x)
            if len(heads) == 2:
                return InceptionOutputs(heads[0], heads[1])
            return heads[0]
        return self._cpp.forward(x)

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """One feature map per entry of :attr:`feature_info`."""
        return list(self._cpp.forward_features(self._check(x, "forward_features")))

    @property
    def feature_info(self) -> List[Dict[str, Any]]:
        """Feature maps the backbone exposes: ``name``, ``channels``, ``stride`` per stage."""
        return list(self._cpp.feature_info)

    @property
    def num_classes(self) -> int:
        return self._cpp.num_classes

    @property
    def in_chans(self) -> int:
        return self._cpp.in_chans

    # --- nn.Module plumbing ------------------------------------------------------------------
    def __deepcopy__(self, memo: Dict[int, Any]) -> "OsteoModel":
        config = dict(self.config)
        clone = create_model(self.model_name, **config)
        clone.load_state_dict(self.state_dict())
        first = next(iter(self.state_dict().values()), None)
        if first is not None:
            clone.to(device=first.device, dtype=next(self.parameters()).dtype)
        clone.train(self.training)
        memo[id(self)] = clone
        return clone

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}, num_classes={self.num_classes}, in_chans={self.in_chans}"
