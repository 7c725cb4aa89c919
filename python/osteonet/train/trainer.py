"""The training loop for Python: osteonet (or any torch.nn.Module) models with torch.optim.

The loop is written in Python because the model, autograd graph and optimiser live in Python; the
parts that define its behaviour are the C++ core's (bound): schedules, early stopping, atomic writes
and the checkpoint checks. The C++ ``osteonet::train::Trainer`` runs the same loop for C++ users and
writes the same checkpoint format (docs/training.md).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch

from .. import _core
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .optim import get_lrs, make_schedule, set_lrs

__all__ = ["Trainer", "seed_everything", "freeze_batchnorm", "detection_step", "classification_step"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds torch, NumPy and ``random``; with ``deterministic`` also asks torch for deterministic kernels
    (warning, not failing, where an op has none) and disables cuDNN autotuning."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _is_batchnorm(m: torch.nn.Module) -> bool:
    return isinstance(m, torch.nn.modules.batchnorm._BatchNorm)


def freeze_batchnorm(model: torch.nn.Module) -> int:
    """BatchNorm layers (torch's and osteonet's mirrored C++ ones) to eval mode with frozen affine
    parameters. Returns how many. Call after every ``model.train()``, which would undo the mode."""
    n = 0
    for m in model.modules():
        if _is_batchnorm(m):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
            n += 1
    return n


def detection_step(model: torch.nn.Module, batch) -> torch.Tensor:
    """A detector's training step: ``batch = (images, targets)``; the loss is the sum of its losses."""
    images, targets = batch
    losses = model(list(images), list(targets))
    return sum(losses.values())


def classification_step(criterion: Optional[Callable] = None) -> Callable:
    """A classifier's step ``batch = (x, y)`` with ``criterion`` (cross-entropy by default)."""
    criterion = criterion or torch.nn.functional.cross_entropy

    def step(model, batch):
        x, y = batch
        return criterion(model(x), y)

    return step


class Trainer:
    """Epochs of ``step_fn(model, batch) -> loss`` over a loader, with everything a paper's recipe needs.

    Args:
        model: any ``nn.Module`` (osteonet models included).
        optimizer: a torch.optim optimiser (e.g. :func:`osteonet.train.create_optimizer`).
        schedule: an :func:`osteonet.train.make_schedule` object or name (stepped once per epoch with
            the monitored value; the plateau schedule needs one every epoch).
        epochs: total epochs (a resumed run continues up to this number).
        eval_every: evaluate after every N-th epoch and the last.
        clip_grad_norm: clip the gradients' global L2 norm (0: off).
        monitor, mode: the value early stopping, ``best.pt`` and the plateau schedule watch:
            ``"train_loss"`` or a key of ``eval_fn``'s result; ``"min"`` or ``"max"``.
        patience, min_delta: early stopping after ``patience`` evaluations without improvement (0: off).
        out_dir: folder for ``log.csv``, ``log.jsonl``, ``last.pt``, ``best.pt``, ``metrics.json`` (None: no files).
        freeze_bn: BatchNorm in eval mode with frozen affine parameters.
        seed, deterministic: :func:`seed_everything` at construction (seed None: leave the generators).
        amp: mixed precision: CUDA float16 autocast with a GradScaler; on CPU, bfloat16 autocast (only
            useful on CPUs with bf16 instructions; numerics differ from float32).
        progress: a tqdm bar (plain lines when tqdm is missing or output is not a terminal).
        device: where batches are moved (default: the model's parameters' device).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any = None, *,
                 epochs: int = 10, eval_every: int = 1, clip_grad_norm: float = 0.0, monitor: str = "train_loss",
                 mode: str = "min", patience: int = 0, min_delta: float = 0.0, out_dir: Optional[str] = None,
                 freeze_bn: bool = False, seed: Optional[int] = 0, deterministic: bool = True, amp: bool = False,
                 progress: bool = True, device: Any = None) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"Trainer: epochs must be an int >= 0, got epochs={epochs!r}")
        if not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"Trainer: eval_every must be an int >= 1, got eval_every={eval_every!r}")
        if clip_grad_norm < 0:
            raise ValueError(f"Trainer: clip_grad_norm must be >= 0, got clip_grad_norm={clip_grad_norm}")
        self.model, self.optimizer = model, optimizer
        self.schedule = make_schedule(schedule) if isinstance(schedule, str) else (schedule or make_schedule("constant"))
        self.schedule.attach(get_lrs(optimizer))
        self.epochs, self.eval_every, self.clip_grad_norm = epochs, eval_every, float(clip_grad_norm)
        self.monitor, self.mode = monitor, mode
        self.early_stopping = _core.train.EarlyStopping(int(patience), mode, float(min_delta))
        self.out_dir, self.freeze_bn, self.progress = out_dir, freeze_bn, progress
        first = next(iter(model.parameters()), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        self.amp = bool(amp)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.amp and self.device.type == "cuda")
        self.epoch = 0
        self.history: List[Dict[str, float]] = []
        self.stopped_early = False
        if seed is not None:
            seed_everything(int(seed), deterministic)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)

    # --------------------------------------------------------------------------------- checkpoints
    def state_extra(self) -> Dict[str, float]:
        return dict(self.early_stopping.state_dict())

    def save(self, path: str) -> None:
        save_checkpoint(path, self.model, self.optimizer, self.schedule, self.epoch, self.state_extra(),
                        self.history, self.scaler)

    def resume(self, path: str) -> "Trainer":
        """Continues from a checkpoint exactly as an uninterrupted run would (model, optimiser, schedule,
        epoch, RNG, early stopping, log so far)."""
        info = load_checkpoint(path, self.model, self.optimizer, self.schedule, restore_rng=True, scaler=self.scaler)
        self.epoch, self.history = info["epoch"], info["history"]
        if "early_stopping.best" in info["extra"]:
            self.early_stopping.load_state_dict(info["extra"])
        self.stopped_early = bool(self.early_stopping.should_stop)
        return self

    # --------------------------------------------------------------------------------- the loop
    def _to_device(self, batch):
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(b) for b in batch)
        return batch

    def _bar(self, loader: Iterable, desc: str):
        if self.progress:
            try:
                from tqdm import tqdm

                return tqdm(loader, desc=desc, leave=False, file=sys.stderr, disable=not sys.stderr.isatty())
            except ImportError:
                pass
        return loader

    def train_one_epoch(self, loader: Iterable, step_fn: Callable) -> float:
        self.model.train()
        if self.freeze_bn:
            freeze_batchnorm(self.model)
        total, n = 0.0, 0
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for batch in self._bar(loader, f"epoch {self.epoch + 1}/{self.epochs}"):
            batch = self._to_device(batch)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                loss = step_fn(self.model, batch)
            value = float(loss.detach())
            if not np.isfinite(value):
                raise ValueError(f"Trainer: the loss is not finite at epoch {self.epoch + 1} batch {n + 1}, got loss={value}")
            self.scaler.scale(loss).backward()
            if self.clip_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += value
            n += 1
        if n == 0:
            raise ValueError(f"Trainer: the loader gave no batch in epoch {self.epoch + 1}")
        return total / n

    def fit(self, train_loader: Iterable, step_fn: Callable = detection_step,
            eval_fn: Optional[Callable[[torch.nn.Module, int], Dict[str, float]]] = None) -> List[Dict[str, float]]:
        """Trains until ``epochs`` or early stopping; returns the epoch log (a list of dicts)."""
        while self.epoch < self.epochs and not self.stopped_early:
            t0 = time.perf_counter()
            set_lrs(self.optimizer, self.schedule.lrs)
            lr = get_lrs(self.optimizer)[0]
            train_loss = self.train_one_epoch(train_loader, step_fn)
            self.epoch += 1
            rec: Dict[str, float] = {"epoch": self.epoch, "train_loss": train_loss, "lr": lr}
            if eval_fn is not None and (self.epoch % self.eval_every == 0 or self.epoch == self.epochs):
                self.model.eval()
                with torch.no_grad():
                    for k, v in (eval_fn(self.model, self.epoch) or {}).items():
                        rec[k] = float(v)
            monitored = rec.get(self.monitor)
            improved = False
            if monitored is not None and np.isfinite(monitored):
                improved = self.early_stopping.update(monitored)
                self.stopped_early = bool(self.early_stopping.should_stop)
            self.schedule.step(monitored)
            rec["seconds"] = time.perf_counter() - t0
            self.history.append(rec)
            self._log(rec)
            if self.out_dir:
                self.save(os.path.join(self.out_dir, "last.pt"))
                if improved:
                    self.save(os.path.join(self.out_dir, "best.pt"))
        if self.out_dir:
            final = {"epochs": self.epoch, "stopped_early": self.stopped_early, "monitor": self.monitor,
                     "best": self.early_stopping.best if np.isfinite(self.early_stopping.best) else None,
                     "last": self.history[-1] if self.history else None}
            atomic_write(os.path.join(self.out_dir, "metrics.json"), json.dumps(final, indent=2).encode())
        return self.history

    def _log(self, rec: Dict[str, float]) -> None:
        if self.progress:
            print("  ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()),
                  file=sys.stderr, flush=True)
        if not self.out_dir:
            return
        with open(os.path.join(self.out_dir, "log.jsonl"), "a") as f:
            f.write(json.dumps({k: (v if np.isfinite(v) else None) for k, v in rec.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # Rewritten whole (atomically) so its columns cover metrics that appear later (eval every N).
        keys = ["epoch", "train_loss", "lr"]
        keys += sorted({k for r in self.history for k in r} - set(keys) - {"seconds"}) + ["seconds"]
        lines = [",".join(keys)] + [",".join("" if k not in r else repr(float(r[k])) if k != "epoch" else str(int(r[k]))
                                             for k in keys) for r in self.history]
        atomic_write(os.path.join(self.out_dir, "log.csv"), ("\n".join(lines) + "\n").encode())
