"""Optimisers by name over parameter groups, and learning-rate schedules (the C++ core's, bound)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence, Union

import torch

from .. import _core
from .._errors import nearest

__all__ = ["create_optimizer", "make_schedule", "Schedule", "SCHEDULE_NAMES", "OPTIMIZER_NAMES", "get_lrs", "set_lrs"]

OPTIMIZER_NAMES = ("sgd", "adam", "adamw")
SCHEDULE_NAMES = tuple(_core.train.schedule_names())
#: A schedule object (C++ ``osteonet::train::Schedule``): ``attach(base_lrs)``, ``step(metric=None)``,
#: ``lrs``, ``epoch``, ``state_dict()``, ``load_state_dict(state)``.
Schedule = _core.train.Schedule


def make_schedule(name: str = "constant", **options: Any) -> "Schedule":
    """A learning-rate schedule stepped once per epoch (the same C++ object the C++ trainer uses).

    ``"step"`` (``step_size``=30, ``gamma``=0.1) = torch StepLR; ``"cosine"`` (``t_max``, ``eta_min``=0) =
    CosineAnnealingLR; ``"plateau"`` (``factor``=0.5, ``patience``=10, ``mode``="min", ``threshold``=1e-4,
    ``cooldown``=0, ``min_lr``=0) = ReduceLROnPlateau (relative threshold), halving by default as seed 002
    trains; ``"constant"``. Any with ``warmup_epochs`` > 0 (``warmup_start_factor``=0.1) gets a linear
    warm-up multiplied on (= ChainedScheduler(LinearLR, inner)). Unknown names/keywords: ValueError.
    """
    return _core.train.make_schedule(name, **options)


def create_optimizer(name: str, params: Union[torch.nn.Module, Iterable[torch.Tensor], Sequence[Dict[str, Any]]],
                     lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0,
                     betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """A torch.optim optimiser by name, with the C++ ``make_optimizer``'s semantics.

    ``params``: a module, an iterable of tensors, or groups ``[{"params": [...], "lr_scale": 0.1}, ...]``
    (a group's rate is ``lr * lr_scale``, e.g. a lower rate for a pre-trained backbone). Parameters with
    ``requires_grad`` false are left out (frozen parts hold no optimiser state); empty groups are dropped.
    ``"sgd"`` (momentum, Nesterov, L2 weight decay), ``"adam"`` (L2 weight decay), ``"adamw"`` (decoupled decay).
    """
    if name not in OPTIMIZER_NAMES:
        near = nearest(name, OPTIMIZER_NAMES)
        raise ValueError(f"create_optimizer: unknown optimizer '{name}'; did you mean '{near}'? "
                         f"(valid: {', '.join(OPTIMIZER_NAMES)})")
    if lr < 0 or weight_decay < 0:
        raise ValueError(f"create_optimizer: lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params, "lr_scale": 1.0}]
    out: List[Dict[str, Any]] = []
    for g in groups:
        extra = set(g) - {"params", "lr_scale"}
        if extra:
            raise ValueError(f"create_optimizer: a group holds 'params' and 'lr_scale' only, got {sorted(extra)}")
        ps = [p for p in g["params"] if p.requires_grad]
        if ps:
            out.append({"params": ps, "lr": lr * float(g.get("lr_scale", 1.0))})
    if not out:
        raise ValueError(f"create_optimizer: no parameter requires a gradient, got {len(groups)} group(s)")
    if name == "sgd":
        if nesterov and momentum <= 0:
            raise ValueError(f"create_optimizer: Nesterov needs momentum > 0, got momentum={momentum}")
        return torch.optim.SGD(out, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(out, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def get_lrs(optimizer: torch.optim.Optimizer) -> List[float]:
    return [float(g["lr"]) for g in optimizer.param_groups]


def set_lrs(optimizer: torch.optim.Optimizer, lrs: Sequence[float]) -> None:
    if len(lrs) != len(optimizer.param_groups):
        raise ValueError(f"set_lrs: one rate per parameter group, got {len(lrs)} rates for {len(optimizer.param_groups)} groups")
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = float(lr)


