"""Models as real ``torch.nn.Module``s backed by osteonet's C++ modules.

The C++ module computes; the Python module mirrors its tree with the *same* tensors (same TensorImpl)
as parameters and buffers, so ``state_dict``/``load_state_dict`` (torchvision's names), optimisers,
``to()``, ``train()``/``eval()`` and autograd work as on any module.

Every mirrored submodule is a real module: LibTorch's own layers are their ``torch.nn`` classes
(``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.Sequential``, ...; ``type(m) is nn.Conv2d``), osteonet's
blocks are :class:`CppBlock` subclasses named after the C++ type (``Bottleneck``, ``DualSelective``)
whose forward runs the C++ block. Calling any of them computes what the model computes there.

The C++ forward calls each submodule through a call site that Python can take over. osteonet hands a
call to Python exactly when Python asked for it: a forward pre-hook, forward hook or backward hook on
that submodule, a module assigned in its place (``model.fc = nn.Linear(512, 7)``), a layer whose
Python state no longer matches C++ (a new ``nn.Parameter``, ``conv.stride = 1``), or a global module
hook. Otherwise the C++ path runs alone. What osteonet cannot honour (a hook on a part that takes
images and targets, a new child in a container C++ walks itself) raises one line saying so.
docs/python.md lists the idioms.
"""

from __future__ import annotations

import collections
import functools
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import _core

__all__ = ["list_models", "model_info", "create_model", "CppModule", "CppBlock", "OsteoModel", "InceptionOutputs",
           "AttentionModule", "FAMILIES"]

#: Training-mode output of inception_v3 with its auxiliary head (torchvision's field names).
InceptionOutputs = collections.namedtuple("InceptionOutputs", ["logits", "aux_logits"])

#: The model families of the registry.
FAMILIES = ("backbone", "detector", "segmenter", "aggregator", "attention")

_MISSING = object()


# ---- the registry -------------------------------------------------------------------------------------
def list_models(family: Optional[str] = "backbone") -> List[str]:
    """Names of the registered models of ``family`` (``None``: every family; see :data:`FAMILIES`)."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"list_models: family must be one of {', '.join(FAMILIES)} or None, got family={family!r}")
    return [e["name"] for e in _core.registry_entries(family or "")]


def model_info(name: str) -> Dict[str, Any]:
    """``name``, ``family``, ``description``, ``torchvision`` (the reference builder, '' if none) and
    ``options``: every keyword the model takes with its default."""
    if not isinstance(name, str):
        raise TypeError(f"model_info: name must be a str, got {type(name).__name__}")
    family = _core.family_of(name)
    entry = next(e for e in _core.registry_entries(family) if e["name"] == name)
    return {"name": name, "family": family, "description": entry["description"], "torchvision": entry["reference"],
            "options": dict(_core.option_defaults(name))}


def create_model(name: str, num_classes: Optional[int] = None, attention: Optional[str] = None,
                 in_chans: Optional[int] = None, pretrained: Optional[str] = None, **options: Any) -> "CppModule":
    """Builds any registered model as a ``torch.nn.Module``: backbones, detectors, segmenters,
    aggregators and attention modules (:func:`list_models`).

    Args:
        name: a registered name (e.g. ``"resnet50"``, ``"dsnet_resnet50"``, ``"fasterrcnn"``, ``"unet"``,
            ``"lstm"``, ``"se"``).
        num_classes, attention, in_chans: the common keywords; left out, the model's own default
            (``model_info(name)["options"]`` lists every keyword and default).
        pretrained: a registered weights tag (``"imagenet"``: ``osteonet.weights.list_weights()``) for the
            model's backbone, or a file (a torchvision state dict or an osteonet checkpoint). The tag's model
            options (``stride_in_1x1=True`` for ``"imagenet"``) are applied; tensors that fit by name and shape
            load (a detector's under ``backbone.body.``), ``conv1`` adapted to ``in_chans``, and one line on
            stderr names what was new. Weights neither cached nor fetchable raise one RuntimeError line.
        **options: model keywords (``dropout``, ``aux_logits``, ``attention_placement``,
            ``stride_in_1x1``, ...) and attention keywords ``attn_<field>``.

    Raises:
        ValueError: unknown model or option name (with the nearest valid name), or a bad value.
        TypeError: an argument of the wrong type.
    """
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a str, got {type(name).__name__}")
    given = {"num_classes": num_classes, "attention": attention, "in_chans": in_chans}
    for key in ("num_classes", "in_chans"):
        v = given[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise TypeError(f"create_model: {key} must be an int, got {type(v).__name__}")
    if attention is not None and not isinstance(attention, str):
        raise TypeError(f"create_model: attention must be a str or None, got {type(attention).__name__}")
    config = {k: v for k, v in given.items() if v is not None}
    config.update(options)
    family = _core.family_of(name)
    if pretrained is not None:
        from .weights import load_pretrained, resolve

        config = resolve(name, pretrained, config)[1]
    cpp = _core.create(name, config)
    model = _wrapper(family, name)(cpp, name, config)
    if pretrained is not None:
        load_pretrained(model, pretrained, f"create_model({name!r}, pretrained={pretrained!r})")
    return model


def _check_family(name: Any, family: str, where: str) -> None:
    """`name` must be a registered model of `family` (unknown names: "did you mean")."""
    if not isinstance(name, str):
        raise TypeError(f"{where}: name must be a str, got {type(name).__name__}")
    actual = _core.family_of(name)
    if actual != family:
        names = ", ".join(e["name"] for e in _core.registry_entries(family))
        raise ValueError(f"{where}: '{name}' is a {actual}, not a {family} ({family}s: {names})")


def _wrapper(family: str, name: str) -> type:
    # The family modules import this one, so they are looked up here, when a model is built.
    if family == "detector":
        from .detection import Detector
        return Detector
    if family == "segmenter":
        from .segmentation import Segmenter
        return Segmenter
    if family == "aggregator":
        from .sequence import Aggregator
        return Aggregator
    if name == "ovf_resnet34":
        from .sequence import SliceEncoder
        return SliceEncoder
    if family == "attention":
        return AttentionModule
    return OsteoModel


# ---- mirror bookkeeping -------------------------------------------------------------------------------
class _Watched(collections.OrderedDict):
    """One of a mirrored module's own tables (``_modules``, ``_parameters``, ``_buffers``, hook tables)
    that reports every change to the model's mirror state, which may refuse it (raise) or carry it
    out itself. Pickled or copied, it is a plain OrderedDict (a copied twin is an ordinary module).

    The state and the owner are held weakly, so a model's mirror has no reference cycles."""

    def __init__(self, items: Iterable, state: "_MirrorState", owner: nn.Module, table: str) -> None:
        self._state = weakref.ref(state)
        self._owner = weakref.ref(owner)
        self._table = table
        super().__init__()
        for key, value in dict(items).items():
            collections.OrderedDict.__setitem__(self, key, value)

    def _before(self, key: Any, value: Any) -> bool:
        state, owner = self._state(), self._owner()
        if state is None or owner is None:
            return False
        return state.before_change(owner, self._table, key, value)

    def _after(self, key: Any) -> None:
        state, owner = self._state(), self._owner()
        if state is not None and owner is not None:
            state.after_change(owner, self._table, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._before(key, value):
            return  # carried out by the state (a buffer's new data moved into the tensor C++ holds)
        super().__setitem__(key, value)
        self._after(key)

    def __delitem__(self, key: Any) -> None:
        self._before(key, _MISSING)
        super().__delitem__(key)
        self._after(key)

    def pop(self, key: Any, *default: Any) -> Any:
        if key not in self:
            return super().pop(key, *default)
        value = self[key]
        del self[key]
        return value

    def popitem(self, last: bool = True) -> Tuple[Any, Any]:
        if not self:
            raise KeyError("popitem(): dictionary is empty")
        key = next(reversed(self)) if last else next(iter(self))
        return key, self.pop(key)

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self):
        return (collections.OrderedDict, (list(self.items()),))

    def __copy__(self) -> collections.OrderedDict:
        return collections.OrderedDict(self)


_HOOK_TABLES = tuple(t for t in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks")
                     if t in nn.Module().__dict__)
_KWARG_HOOK_TABLES = tuple(t for t in ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs",
                                       "_forward_hooks_always_called") if t in nn.Module().__dict__)
_GLOBAL_HOOKS = tuple(t for t in ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_backward_hooks",
                                  "_global_backward_pre_hooks") if hasattr(torch.nn.modules.module, t))
_OSTEONET_ATTRS = ("_osteonet_state", "_osteonet_qualname", "_osteonet_cpp_tensors")

# What each twin's forward reads besides its tensors: a change to any of these hands its calls to Python.
_CONV = ("stride", "padding", "dilation", "groups", "padding_mode", "_reversed_padding_repeated_twice")
_FORWARD_ATTRS: Dict[type, Tuple[str, ...]] = {
    nn.Conv1d: _CONV, nn.Conv2d: _CONV, nn.ConvTranspose2d: _CONV + ("output_padding",),
    nn.BatchNorm1d: ("eps", "momentum", "track_running_stats"), nn.BatchNorm2d: ("eps", "momentum", "track_running_stats"),
    nn.Linear: (), nn.ReLU: ("inplace",), nn.ReLU6: ("inplace",), nn.Hardswish: ("inplace",),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    nn.AvgPool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    nn.AdaptiveAvgPool2d: ("output_size",), nn.Dropout: ("p", "inplace"),
    nn.LSTM: ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
              "proj_size"),
    nn.Sequential: (), nn.ModuleList: (),
}
_WITH_TENSORS = {nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Linear, nn.LSTM}


def _short_type(cpp_type: str) -> str:
    # "osteonet::backbones::ResNetImpl<osteonet::backbones::BasicBlock>" -> "ResNet": the template's own name
    # (a valid identifier: TorchScript serialises traced modules under their class names)
    return cpp_type.split("<", 1)[0].rsplit("::", 1)[-1].replace("Impl", "")


def _state_of(module: nn.Module) -> Optional["_MirrorState"]:
    ref = module.__dict__.get("_osteonet_state")
    return ref() if isinstance(ref, weakref.ref) else ref


class CppBlock(nn.Module):
    """A mirrored osteonet block (one subclass per C++ type, named after it): calling it runs the C++
    forward, in which its own submodules' call sites stay overridable."""

    _cpp_module: Any

    def forward(self, *args: Any) -> Any:
        state = _state_of(self)
        if state is not None:
            state.sync()
        return self._cpp_module.forward(*args)

    def _get_name(self) -> str:  # repr()
        return type(self).__name__

    def __reduce_ex__(self, protocol: int):
        raise TypeError(f"osteonet: {type(self).__name__} is part of a C++ model and cannot be copied or pickled alone; "
                        "copy or save the whole model (copy.deepcopy(model), torch.save(model)) or its state_dict()")


_BLOCK_CLASSES: Dict[str, type] = {}


def _block_class(cpp_type: str) -> type:
    name = _short_type(cpp_type)
    cls = _BLOCK_CLASSES.get(name)
    if cls is None:
        cls = type(name, (CppBlock,), {"__doc__": f"osteonet's C++ {name} (``{cpp_type}``) as a torch.nn.Module.",
                                       "__module__": __name__})
        _BLOCK_CLASSES[name] = cls
    return cls


class _Slot:
    """A call site: the C++ child `cpp`, registered as `name` in the mirror node `parent`."""

    __slots__ = ("parent", "name", "cpp", "mirror", "qualname", "opaque", "walked", "dirty", "checkpoint",
                 "__weakref__")

    def __init__(self, parent: nn.Module, name: str, cpp: Any, mirror: nn.Module, qualname: str, opaque: bool,
                 walked: bool) -> None:
        self.parent = weakref.ref(parent)
        self.name, self.cpp, self.mirror, self.qualname = name, cpp, mirror, qualname
        self.opaque, self.walked, self.dirty, self.checkpoint = opaque, walked, False, False

    def current(self) -> Any:
        parent = self.parent()
        return _MISSING if parent is None else parent._modules.get(self.name, _MISSING)

    def modified(self) -> bool:
        return self.current() is not self.mirror or self.dirty

    def call(self, *args: Any) -> Any:
        module = self.current()
        if module is _MISSING:
            raise AttributeError(f"osteonet: submodule '{self.qualname}' was deleted from the model, but the model's "
                                 "forward calls it")
        if module is None:
            raise TypeError(f"osteonet: submodule '{self.qualname}' is None, but the model's forward calls it")
        if self.checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)


def _has_hooks(module: nn.Module) -> bool:
    d = module.__dict__
    return any(d.get(t) for t in _HOOK_TABLES)


def _slot_caller(slot: _Slot) -> Callable[..., Any]:
    ref = weakref.ref(slot)

    def call(*args: Any) -> Any:
        s = ref()
        if s is None:
            raise RuntimeError("osteonet: the model this call belongs to was deleted")
        return s.call(*args)

    return call


def _detached(module: nn.Module) -> nn.Module:
    """A shallow copy of a former mirror twin that is an ordinary torch module (for pickling)."""
    import copy

    clone = copy.copy(module)
    for key in _OSTEONET_ATTRS:
        clone.__dict__.pop(key, None)
    for key, value in list(clone.__dict__.items()):
        if isinstance(value, _Watched):
            clone.__dict__[key] = collections.OrderedDict(value)
    return clone


class _MirrorState:
    """What ties one Python mirror to its C++ model: the call sites, and the Python state the C++ path
    assumes (train flags, the twins' forward attributes), checked before every C++ forward."""

    def __init__(self, root: "CppModule") -> None:
        self.root = weakref.ref(root)
        self.nodes: List[Tuple[nn.Module, Any]] = []  # (mirror, C++ module) below the root, parents first
        self.slots: Dict[int, _Slot] = {}  # id(mirror) -> its call site
        self.children: Dict[Tuple[int, str], _Slot] = {}  # (id(parent), name) -> call site
        self.watch: List[Tuple[Dict[str, Any], str, _Slot]] = []
        self.expected: List[Any] = []
        self.global_hooks = False
        self.quiet = 0

    # -- construction ---------------------------------------------------------------------------------
    def build(self, root: "CppModule") -> None:
        root.__dict__["_osteonet_cpp_tensors"] = self._adopt_tensors(root, root._cpp, "")
        self._mirror_children(root, root._cpp, "")
        self._watch_tables(root, is_root=True)
        for node, _ in self.nodes:
            self._watch_tables(node, is_root=False)
        self.expected = self._observed()

    def _mirror_children(self, node: nn.Module, cpp: Any, prefix: str) -> None:
        opaque, walked = set(cpp.opaque_children()), set(cpp.walked_children())
        for name, child in cpp.children():
            qualname = prefix + name
            mirror = self._mirror(child, qualname)
            node._modules[name] = mirror
            slot = _Slot(node, name, child, mirror, qualname, name in opaque, name in walked)
            self.slots[id(mirror)] = slot
            self.children[(id(node), name)] = slot
            self.nodes.append((mirror, child))
            for attr in _FORWARD_ATTRS.get(type(mirror), ()):
                if attr in mirror.__dict__:
                    self.watch.append((mirror.__dict__, attr, slot))
            self._mirror_children(mirror, child, qualname + ".")

    def _mirror(self, cpp: Any, qualname: str) -> nn.Module:
        config = cpp.leaf_config()
        if config is None:
            if not cpp.invocable:
                raise TypeError(f"osteonet: no torch.nn twin for the C++ module '{qualname}' ({cpp.type_name})")
            node = _block_class(cpp.type_name)()
            node.__dict__["_cpp_module"] = cpp
        else:
            cls_name, kwargs = config
            cls = getattr(nn, cls_name)
            node = cls(**kwargs, device="meta") if cls in _WITH_TENSORS else cls(**kwargs)
        node.__dict__["_osteonet_state"] = weakref.ref(self)
        node.__dict__["_osteonet_qualname"] = qualname
        node.__dict__["_osteonet_cpp_tensors"] = self._adopt_tensors(node, cpp, qualname)
        nn.Module.train(node, cpp.training)
        return node

    @staticmethod
    def _adopt_tensors(node: nn.Module, cpp: Any, qualname: str) -> frozenset:
        """The C++ module's tensors become the node's parameters and buffers (the same objects)."""
        params, buffers = dict(cpp.local_parameters()), dict(cpp.local_buffers())
        if type(node) in _WITH_TENSORS:
            expected_p = {k for k, v in node._parameters.items() if v is not None}
            expected_b = {k for k, v in node._buffers.items() if v is not None}
            if expected_p != set(params) or expected_b != set(buffers):
                raise RuntimeError(f"osteonet: the C++ module '{qualname}' ({cpp.type_name}) holds tensors "
                                   f"{sorted(params)} + {sorted(buffers)}, its torch.nn twin "
                                   f"{sorted(expected_p)} + {sorted(expected_b)}")
        for key, t in params.items():
            t.__class__ = nn.Parameter  # the same tensor object as C++'s, now an nn.Parameter
            node._parameters[key] = t
        for key, t in buffers.items():
            node._buffers[key] = t
        if isinstance(node, nn.LSTM):  # its flat weight list must point at the adopted tensors
            node._flat_weights = [getattr(node, wn) if hasattr(node, wn) else None for wn in node._flat_weights_names]
        return frozenset(params) | frozenset(buffers)

    def _watch_tables(self, node: nn.Module, is_root: bool) -> None:
        d = node.__dict__
        tables = ["_modules", "_parameters", "_buffers"]
        if not is_root:  # the root is called by Python: its hooks are PyTorch's business
            tables += [t for t in _HOOK_TABLES + _KWARG_HOOK_TABLES if t in d]
        for table in tables:
            d[table] = _Watched(d[table], self, node, table)

    # -- changes to a mirror's tables ----------------------------------------------------------------------
    def before_change(self, node: nn.Module, table: str, key: Any, value: Any) -> bool:
        """Refuses what osteonet cannot honour (raises); True when it carried the change out itself."""
        if self.quiet:
            return False
        where = node.__dict__.get("_osteonet_qualname", "") or self._root_name()
        if table in _HOOK_TABLES or table in _KWARG_HOOK_TABLES:
            slot = self.slots.get(id(node))
            if slot is not None and slot.opaque and value is not _MISSING:
                raise RuntimeError(
                    f"osteonet: hooks on '{slot.qualname}' ({type(node).__name__}) cannot fire: the model calls it "
                    "with images, targets or lists of maps, not through an overridable call; hook one of its tensor "
                    "submodules instead (e.g. a backbone stage or a head layer)")
            return False
        if table == "_modules":
            slot = self.children.get((id(node), key))
            if slot is None:  # a new child
                own = self.slots.get(id(node))
                if own is not None and isinstance(node, nn.ModuleList):
                    raise RuntimeError(f"osteonet: the children of '{own.qualname}' are fixed by the C++ forward; "
                                       f"replace existing ones ({own.qualname}[i] = ...) or the whole list")
                if own is not None and own.walked and isinstance(node, nn.Sequential):
                    raise RuntimeError(f"osteonet: '{own.qualname}' is walked child by child by the C++ forward, so "
                                       f"its children are fixed; replace existing ones ({own.qualname}[i] = ...)")
                return False
            if slot.opaque and value is not slot.mirror:
                raise RuntimeError(
                    f"osteonet: '{slot.qualname}' ({type(slot.mirror).__name__}) cannot be replaced or removed: the "
                    "model calls it with images, targets or lists of maps, not through an overridable call; replace "
                    "one of its tensor submodules instead")
            return False
        held = key in node.__dict__.get("_osteonet_cpp_tensors", ())
        twin = type(node) in _FORWARD_ATTRS
        if table == "_buffers" and held and isinstance(value, torch.Tensor):
            old = node._buffers.get(key)
            if isinstance(old, torch.Tensor):
                with torch.no_grad():  # keep the tensor C++ holds; give it the new data (as .to() does)
                    old.data = value.data
                return True
        if held and not twin:
            what = "parameter" if table == "_parameters" else "buffer"
            raise RuntimeError(
                f"osteonet: {what} '{key}' of '{where}' ({type(node).__name__}, a C++ block) cannot be reassigned or "
                f"removed; update it in place (with torch.no_grad(): t.copy_(new)) or replace the block")
        return False

    def after_change(self, node: nn.Module, table: str, key: Any) -> None:
        if self.quiet:
            return
        if table == "_modules":
            slot = self.children.get((id(node), key))
            if slot is not None:
                self.refresh(slot)
            else:
                own = self.slots.get(id(node))
                if own is not None and isinstance(node, nn.Sequential):  # its Python forward runs every child
                    own.dirty = True
                    self.refresh(own)
            return
        slot = self.slots.get(id(node))
        if slot is None:
            return
        if table in ("_parameters", "_buffers") and type(node) in _FORWARD_ATTRS:
            slot.dirty = True  # the twin's Python forward uses its new tensors
        self.refresh(slot)

    def _root_name(self) -> str:
        root = self.root()
        return root.model_name if root is not None else "model"

    # -- call sites ------------------------------------------------------------------------------------
    def refresh(self, slot: _Slot) -> None:
        """Installs or removes the Python override of one call site."""
        if slot.opaque:
            return
        python = slot.modified() or slot.checkpoint or self.global_hooks or _has_hooks(slot.mirror)
        if python:
            slot.cpp.set_call_override(_slot_caller(slot))
        elif slot.cpp.has_call_override:
            slot.cpp.clear_call_override()

    def release(self) -> None:
        for slot in self.slots.values():
            if slot.cpp.has_call_override:
                slot.cpp.clear_call_override()

    def python_parts(self) -> List[str]:
        """Qualified names of the call sites Python runs (replaced, hooked or changed submodules)."""
        return [s.qualname for s in self.slots.values() if not s.opaque and s.cpp.has_call_override]

    def modified(self) -> List[str]:
        """Qualified names of replaced or changed submodules (what the C++ model alone does not compute)."""
        return [s.qualname for s in self.slots.values() if s.modified()]

    # -- the per-forward check -------------------------------------------------------------------------
    def _observed(self) -> List[Any]:
        values = [n.training for n, _ in self.nodes]
        values.extend([d.get(k, _MISSING) for d, k, _ in self.watch])
        return values

    def sync(self) -> None:
        """Brings C++ in line with what Python changed since the last forward (cheap when nothing did)."""
        mod = torch.nn.modules.module
        global_hooks = any(getattr(mod, t) for t in _GLOBAL_HOOKS)
        if global_hooks != self.global_hooks:
            self.global_hooks = global_hooks
            for slot in self.slots.values():
                self.refresh(slot)
        observed = self._observed()
        if observed == self.expected:
            return
        n = len(self.nodes)
        for node, cpp in self.nodes:  # parents first: C++'s train() is recursive
            if node.training != cpp.training:
                cpp.train(node.training)
        for i, (_, _, slot) in enumerate(self.watch):
            if observed[n + i] != self.expected[n + i] and not slot.dirty:
                slot.dirty = True
                self.refresh(slot)
        self.expected = observed

    def read_training_from_cpp(self) -> None:
        """After a root train(): C++ may keep some modules in eval (a frozen BatchNorm); Python follows."""
        for node, cpp in self.nodes:
            node.training = cpp.training
        self.expected = self._observed()


# ---- the root of every mirrored model ----------------------------------------------------------------------
class CppModule(nn.Module):
    """Base of every Python module backed by a C++ osteonet model (``self._cpp``, an
    ``osteonet._core.Module``); mirrors its tree (see the module docstring)."""

    def __init__(self, cpp: Any, name: str, config: Dict[str, Any]) -> None:
        super().__init__()
        self.__dict__["_cpp"] = cpp
        self.model_name = name
        self.config = dict(config)
        self._build_mirror()
        self.train(True)

    def _build_mirror(self) -> None:
        state = _MirrorState(self)
        self.__dict__["_osteonet_state"] = state
        state.build(self)
        weakref.finalize(self, state.release)

    @property
    def family(self) -> str:
        return _core.family_of(self.model_name)

    def _sync(self) -> None:
        self._osteonet_state.sync()

    def train(self, mode: bool = True) -> "CppModule":
        if not isinstance(mode, bool):
            raise ValueError(f"{self.model_name}.train: mode must be a bool, got {type(mode).__name__}")
        super().train(mode)
        self._cpp.train(mode)
        self._osteonet_state.read_training_from_cpp()
        return self

    def python_parts(self) -> List[str]:
        """The submodules whose calls Python currently runs (hooks, replacements, changed layers)."""
        self._sync()
        return self._osteonet_state.python_parts()

    def python_modified(self) -> List[str]:
        """Replaced or changed submodules: what the C++ model alone (a runtime session, a C++ program
        built from the same weights) does not compute."""
        self._sync()
        return self._osteonet_state.modified()

    def _module_at(self, qualname: str) -> Any:
        module: Any = self
        for part in qualname.split("."):
            module = module._modules.get(part, _MISSING) if isinstance(module, nn.Module) else _MISSING
            if module is _MISSING:
                return _MISSING
        return module

    # -- PyTorch idioms that cannot work on a C++ forward ---------------------------------------------
    def __prepare_scriptable__(self) -> "CppModule":
        raise RuntimeError(f"osteonet: torch.jit.script cannot compile {self.model_name}'s C++ forward; use "
                           "torch.jit.trace(model, example) (the trace runs at any batch size) or osteonet's export")

    def _check_not_fx(self, x: Any) -> None:
        if type(x).__module__.startswith("torch.fx"):
            raise RuntimeError(f"osteonet: FX symbolic tracing cannot see inside {self.model_name}'s C++ forward; use "
                               "torch.jit.trace(model, example), or hooks on its submodules")

    # -- pickling, copying ------------------------------------------------------------------------------
    def _snapshot(self) -> Dict[str, Any]:
        """The C++ tree's tensors plus every Python-side change, for _restore."""
        state = self._osteonet_state
        state.sync()
        tensors = {}
        for node, cpp in [(self, self._cpp)] + state.nodes:
            q = node.__dict__.get("_osteonet_qualname", "")
            prefix = q + "." if q else ""
            for k, t in list(cpp.local_parameters()) + list(cpp.local_buffers()):
                tensors[prefix + k] = t.detach()
        replaced, hooks, checkpoint = {}, {}, []
        for slot in state.slots.values():
            cur = slot.current()
            if slot.checkpoint:
                checkpoint.append(slot.qualname)
            if cur is not slot.mirror:
                replaced[slot.qualname] = cur
            elif slot.dirty:
                replaced[slot.qualname] = _detached(cur)
            elif _has_hooks(cur):
                hooks[slot.qualname] = {t: collections.OrderedDict(cur.__dict__[t])
                                        for t in _HOOK_TABLES + _KWARG_HOOK_TABLES if cur.__dict__.get(t)}
        extra = {k: v for k, v in self._modules.items() if (id(self), k) not in state.children}
        training = {n.__dict__["_osteonet_qualname"]: n.training for n, _ in state.nodes}
        return {"tensors": tensors, "replaced": replaced, "hooks": hooks, "checkpoint": checkpoint, "extra": extra,
                "training": training, "family_state": self._family_state()}

    def _family_state(self) -> Dict[str, Any]:
        """Family-specific state a copy keeps (e.g. frozen BatchNorms)."""
        return {}

    def _restore_family_state(self, state: Dict[str, Any]) -> None:
        pass

    def _restore(self, snap: Dict[str, Any]) -> None:
        state = self._osteonet_state
        self._restore_family_state(snap["family_state"])
        tensors = snap["tensors"]
        with torch.no_grad():
            for node, cpp in [(self, self._cpp)] + state.nodes:
                q = node.__dict__.get("_osteonet_qualname", "")
                prefix = q + "." if q else ""
                for k, t in list(cpp.local_parameters()) + list(cpp.local_buffers()):
                    if prefix + k not in tensors:
                        raise RuntimeError(f"osteonet: the saved model lacks tensor '{prefix + k}'")
                    t.data = tensors[prefix + k]
        by_name = {s.qualname: s for s in state.slots.values()}
        for q, module in snap["replaced"].items():
            slot = by_name[q]
            slot.parent()._modules[slot.name] = module
        for q, tables in snap["hooks"].items():
            node = by_name[q].mirror
            for t, table in tables.items():
                node.__dict__[t].update(table)
        for q in snap["checkpoint"]:
            by_name[q].checkpoint = True
            state.refresh(by_name[q])
        for k, v in snap["extra"].items():
            self._modules[k] = v
        for node, _ in state.nodes:
            node.training = snap["training"].get(node.__dict__["_osteonet_qualname"], node.training)
        state.sync()

    def __reduce_ex__(self, protocol: int):
        # A plain nn.Module pickles its __dict__; this one pickles how to rebuild it: the registry name
        # and config, the tensors, and what Python changed (replacements, hooks, train flags).
        return (_rebuild, (type(self), self.model_name, self.config, self._snapshot(), self._root_extras()))

    def _root_extras(self) -> Dict[str, Any]:
        """The root's own hook tables and training flag (restored by _rebuild)."""
        tables = {t: collections.OrderedDict(self.__dict__[t]) for t in _HOOK_TABLES + _KWARG_HOOK_TABLES
                  if self.__dict__.get(t)}
        return {"hooks": tables, "training": self.training}

    def __deepcopy__(self, memo: Dict[int, Any]) -> "CppModule":
        import copy

        args = copy.deepcopy((self.config, self._snapshot(), self._root_extras()), memo)
        clone = _rebuild(type(self), self.model_name, *args)
        memo[id(self)] = clone
        return clone

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}"


def _rebuild(cls: type, name: str, config: Dict[str, Any], snap: Dict[str, Any],
             extras: Optional[Dict[str, Any]] = None) -> "CppModule":
    """Unpickles (or deep-copies) a model: builds it from its config, then restores its tensors and
    what Python changed."""
    model = create_model(name, **config)
    if not isinstance(model, cls):
        raise TypeError(f"osteonet: {name} rebuilt as {type(model).__name__}, expected {cls.__name__}")
    extras = extras or {}
    nn.Module.train(model, extras.get("training", True))
    model._restore(snap)
    for t, table in extras.get("hooks", {}).items():
        model.__dict__[t].update(table)
    return model


class AttentionModule(CppModule):
    """A registered attention module (SE, ECA, SK, DS) on its own: ``forward(x)`` -> attended map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_not_fx(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.model_name}: expected a torch.Tensor, got {type(x).__name__}")
        self._sync()
        return self._cpp.forward(x)


class OsteoModel(CppModule):
    """A registered backbone. ``forward(x)`` returns logits (N x num_classes); timm's surface:
    ``forward_features``, ``forward_head``, ``forward_intermediates``, ``reset_classifier``,
    ``set_grad_checkpointing``, ``feature_info``."""

    def __init__(self, cpp: Any, name: str, config: Dict[str, Any]) -> None:
        self.__dict__["_impl"] = _core.as_backbone(cpp)
        super().__init__(cpp, name, config)

    # --- computation -------------------------------------------------------------------------
    def _check(self, x: Any, where: str) -> torch.Tensor:
        self._check_not_fx(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.model_name}.{where}: expected a torch.Tensor, got {type(x).__name__}")
        self._sync()
        return x

    def forward(self, x: torch.Tensor) -> Any:
        x = self._check(x, "forward")
        if self.training and self.model_name == "inception_v3":
            heads = self._impl.forward_heads(x)
            if len(heads) == 2:
                return InceptionOutputs(heads[0], heads[1])
            return heads[0]
        return self._cpp.forward(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling (N x C x h x w): what :meth:`forward_head` takes."""
        return self._impl.forward_features(self._check(x, "forward_features"))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling and the classifier on :meth:`forward_features`' map (``pre_logits``: pooled features)."""
        return self._impl.forward_head(self._check(x, "forward_head"), bool(pre_logits))

    def forward_intermediates(self, x: torch.Tensor, indices: Union[None, int, Sequence[int]] = None,
                              intermediates_only: bool = False) -> Any:
        """The feature maps of :attr:`feature_info` (timm's API): ``indices`` selects them (an int n: the
        last n; a list: those positions; None: all). Returns ``(final_features, intermediates)``, or the
        list alone with ``intermediates_only``."""
        x = self._check(x, "forward_intermediates")
        walked = [s.qualname for s in self._osteonet_state.slots.values()
                  if s.walked and s.parent() is self and not s.opaque and s.cpp.has_call_override]
        if walked:
            raise RuntimeError(f"{self.model_name}.forward_intermediates walks {walked[0]} child by child, so its "
                               f"hooks or replacement would be skipped; hook or replace its children instead")
        maps = list(self._impl.forward_intermediates(x))
        n = len(maps)
        if indices is None:
            keep = list(range(n))
        elif isinstance(indices, int) and not isinstance(indices, bool):
            if not 1 <= indices <= n:
                raise ValueError(f"{self.model_name}.forward_intermediates: indices must be in 1..{n}, got {indices}")
            keep = list(range(n - indices, n))
        else:
            keep = [int(i) for i in indices]
            bad = [i for i in keep if not -n <= i < n]
            if bad:
                raise ValueError(f"{self.model_name}.forward_intermediates: indices must lie in [-{n}, {n}), got {bad}")
            keep = [i % n for i in keep]
        inter = [maps[i] for i in keep]
        if intermediates_only:
            return inter
        return maps[-1], inter

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier with ``num_classes`` outputs (0 removes it), built in
        C++: the model stays one C++ program (fast, exportable, usable by runtime sessions)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"{self.model_name}.reset_classifier: num_classes must be an int, got "
                            f"{type(num_classes).__name__}")
        if num_classes < 0:
            raise ValueError(f"{self.model_name}.reset_classifier: num_classes must be >= 0, got {num_classes}")
        parts = self.python_parts()
        if parts:
            raise RuntimeError(f"{self.model_name}.reset_classifier: remove the hooks and replacements first "
                               f"(Python runs {', '.join(parts)}); the mirror is rebuilt")
        training = self.training
        self._impl.reset_classifier(num_classes)
        self.config["num_classes"] = num_classes
        old = self._osteonet_state
        old.quiet += 1
        try:
            for t in ("_modules", "_parameters", "_buffers"):
                self.__dict__[t] = collections.OrderedDict()
        finally:
            old.quiet -= 1
        old.release()
        self._build_mirror()
        self.train(training)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recomputes each block's activations in the backward pass instead of keeping them
        (``torch.utils.checkpoint``, non-reentrant), block by block of every stage; state-dict keys
        and outputs are unchanged."""
        if not isinstance(enable, bool):
            raise TypeError(f"{self.model_name}.set_grad_checkpointing: enable must be a bool, got "
                            f"{type(enable).__name__}")
        slots = _checkpoint_slots(self)
        if not slots:
            raise ValueError(f"{self.model_name}: set_grad_checkpointing needs residual, dense or inception blocks; "
                             f"{self.model_name} has none (its layers are single convolutions)")
        state = self._osteonet_state
        for slot in slots:
            slot.checkpoint = enable
            state.refresh(slot)

    @property
    def grad_checkpointing(self) -> bool:
        return any(s.checkpoint for s in self._osteonet_state.slots.values())

    # --- description -----------------------------------------------------------------------------
    @property
    def feature_info(self) -> List[Dict[str, Any]]:
        """Feature maps the backbone exposes: ``name``, ``channels``, ``stride`` per stage."""
        return list(self._impl.feature_info)

    @property
    def num_classes(self) -> int:
        """Outputs of the classifier (0 without one), also after the head was replaced in Python."""
        path = self._impl.head_path
        if not path or not self._replaced_on(path):
            return self._impl.num_classes
        head = self._module_at(path)
        if isinstance(head, nn.Identity):
            return 0
        if isinstance(head, nn.Linear):
            return head.out_features
        raise AttributeError(f"{self.model_name}.num_classes: the classifier '{path}' was replaced by a "
                             f"{type(head).__name__}, whose output count osteonet cannot read")

    @property
    def in_chans(self) -> int:
        """Input channels, also after the first convolution was replaced in Python."""
        path = self._impl.stem_path
        if not self._replaced_on(path):
            return self._impl.in_chans
        stem = self._module_at(path)
        if isinstance(stem, nn.Conv2d):
            return stem.in_channels
        raise AttributeError(f"{self.model_name}.in_chans: the first convolution '{path}' was replaced by a "
                             f"{type(stem).__name__}, whose input channels osteonet cannot read")

    def _replaced_on(self, path: str) -> bool:
        """True when a module on `path` (or an ancestor) was replaced or changed in Python."""
        parts = path.split(".")
        prefixes = {".".join(parts[:i + 1]) for i in range(len(parts))}
        return any(s.qualname in prefixes and s.modified() for s in self._osteonet_state.slots.values())

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}, num_classes={self._impl.num_classes}, in_chans={self._impl.in_chans}"


def _checkpoint_slots(model: CppModule) -> List[_Slot]:
    """The call sites of every osteonet block in the model's top-level stages (ResNet's layerN.i,
    MobileNet's inverted residuals, DenseNet's dense blocks and transitions, Inception's mixed blocks)."""
    state = model._osteonet_state
    out = []
    for key, child in model._modules.items():
        slot = state.children.get((id(model), key))
        if slot is None or slot.opaque:
            continue
        if isinstance(child, CppBlock) and type(child).__name__.startswith("Inception"):
            out.append(slot)
        elif isinstance(child, nn.Sequential) and not slot.walked:
            out += [state.children[(id(child), k)] for k, g in child._modules.items()
                    if isinstance(g, CppBlock) and (id(child), k) in state.children]
        elif isinstance(child, nn.Sequential):  # walked (features): its blocks are called one by one
            out += [state.children[(id(child), k)] for k, g in child._modules.items()
                    if isinstance(g, CppBlock) and (id(child), k) in state.children]
    return out
