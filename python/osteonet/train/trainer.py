"""osteonet's one training loop: epochs of ``step_fn(model, batch) -> loss`` over a loader, for every
task (osteonet.tasks), every reproduction and any torch.nn.Module with torch.optim.

The loop is Python because the model, autograd graph and optimiser live in Python; the parts that
define its behaviour are the C++ core's (bound): schedules, early stopping and the checkpoint checks.
A C++ program writes the same loop with those parts (examples/cpp/train_classifier.cpp) and the same
checkpoint format (docs/training.md).
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from .. import _core
from ..io import remove_stale_temporaries, write_json, write_text
from . import distributed
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .optim import get_lrs, make_schedule, set_lrs

__all__ = ["Trainer", "seed_everything", "freeze_batchnorm", "detection_step", "classification_step"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds torch, NumPy and ``random``. ``deterministic`` (opt-in, process-wide) also asks torch for
    deterministic kernels (warning, not failing, where an op has none) and turns cuDNN autotuning off;
    on the CPU osteonet's runs are bit-reproducible without it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _is_batchnorm(m: torch.nn.Module) -> bool:
    return isinstance(m, torch.nn.modules.batchnorm._BatchNorm)


def freeze_batchnorm(model: torch.nn.Module, frozen: bool = True) -> torch.nn.Module:
    """Every BatchNorm of ``model`` (torch's and osteonet's C++ ones) in eval mode, with its affine
    parameters frozen, and kept so through later ``model.train()`` calls (a forward pre-hook; osteonet's
    slice encoder keeps the flag in C++). ``frozen=False`` undoes it. Returns ``model``.

    Used by seed 002's two-stage training (§3.3.1) and by :class:`Trainer` ``(freeze_bn=True)``."""
    own = getattr(model, "freeze_batchnorm", None)
    if callable(own) and hasattr(model, "batchnorm_frozen"):  # the C++ module re-freezes in its own train()
        return own(frozen)
    bns = [m for m in model.modules() if _is_batchnorm(m)]
    for m in bns:
        for p in m.parameters(recurse=False):
            p.requires_grad_(not frozen)
    old = getattr(model, "_osteonet_bn_hook", None)
    if old is not None:
        old.remove()
        model._osteonet_bn_hook = None
    if frozen:
        def keep_eval(module, args):  # noqa: ANN001
            for m in bns:
                if m.training:
                    m.train(False)

        keep_eval(model, ())
        model._osteonet_bn_hook = model.register_forward_pre_hook(keep_eval)
    return model


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

    Building a Trainer changes no global state: seeding happens when :meth:`fit` starts a fresh run
    (not a resumed one), and determinism is opt-in.

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
        keep_best: after training, the model holds the weights of its best epoch (by ``monitor``), not
            of its last (from ``best.pt``, or a copy in memory without ``out_dir``).
        out_dir: folder for ``log.csv``, ``log.jsonl``, ``last.pt`` (everything :meth:`resume` needs), ``best.pt``
            (the best epoch's weights, without the optimiser's state), ``metrics.json`` (None: no files). Every
            file is written whole (osteonet.io's atomic writer).
        freeze_bn: BatchNorm in eval mode with frozen affine parameters (:func:`freeze_batchnorm`).
        seed: :func:`seed_everything` when :meth:`fit` starts a fresh run (None: leave the generators).
        deterministic: with ``seed``, also torch's deterministic algorithms (process-wide; off by default).
        generators: extra ``torch.Generator`` s the loader draws from (e.g. a sampler's, seeded by the caller);
            their states go into the checkpoints with the global ones, so a resumed run draws the same batches.
        amp: mixed precision: CUDA float16 autocast with a GradScaler; on CPU, bfloat16 autocast (only
            useful on CPUs with bf16 instructions; numerics differ from float32).
        progress: one line per epoch on stderr and a tqdm bar per epoch when stderr is a terminal.
        device: where batches are moved (default: the model's parameters' device).

    ``step_fn`` returns the loss, or ``(loss, n)`` to make the epoch's ``train_loss`` the mean weighted by
    ``n`` (e.g. samples per batch) instead of the mean over batches.

    **Several processes** (:func:`osteonet.train.launch`, ``osteonet train --nproc N``, torchrun, SLURM):
    when :meth:`fit` finds a process group (or joins the one ``RANK``/``WORLD_SIZE`` describe), ``step_fn``
    gets the model wrapped in DistributedDataParallel (gradients averaged over the ranks), the loader is
    replaced by the rank's share (:func:`osteonet.train.distributed.shard_loader`: a DistributedSampler
    seeded with ``seed`` and the epoch; its ``batch_size`` is per rank), ``train_loss`` and ``eval_fn``'s
    values are averaged over the ranks (so early stopping and the schedule decide alike everywhere), and
    rank 0 alone prints and writes files; each rank's generators are checkpointed, and a resume needs the
    same number of ranks. ``seed`` seeds rank ``r`` with ``seed + r`` (augmentations differ by rank).
    BatchNorm statistics are not synchronised: each rank normalises by its own batch, and the running
    statistics are rank 0's (DDP broadcasts its buffers).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any = None, *,
                 epochs: int = 10, eval_every: int = 1, clip_grad_norm: float = 0.0, monitor: str = "train_loss",
                 mode: str = "min", patience: int = 0, min_delta: float = 0.0, keep_best: bool = False,
                 out_dir: Optional[str] = None, freeze_bn: bool = False, seed: Optional[int] = None,
                 deterministic: bool = False, generators: Sequence[torch.Generator] = (), amp: bool = False,
                 progress: bool = True, device: Any = None) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"Trainer: epochs must be an int >= 0, got epochs={epochs!r}")
        if not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"Trainer: eval_every must be an int >= 1, got eval_every={eval_every!r}")
        if clip_grad_norm < 0:
            raise ValueError(f"Trainer: clip_grad_norm must be >= 0, got clip_grad_norm={clip_grad_norm}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"Trainer: seed must be an int or None, got seed={seed!r}")
        if any(not isinstance(g, torch.Generator) for g in generators):
            raise TypeError(f"Trainer: generators must be torch.Generator objects, got {[type(g).__name__ for g in generators]}")
        self.model, self.optimizer = model, optimizer
        self.schedule = make_schedule(schedule) if isinstance(schedule, str) else (schedule or make_schedule("constant"))
        self.schedule.attach(get_lrs(optimizer))
        self.epochs, self.eval_every, self.clip_grad_norm = epochs, eval_every, float(clip_grad_norm)
        self.monitor, self.mode, self.keep_best = monitor, mode, bool(keep_best)
        self.early_stopping = _core.train.EarlyStopping(int(patience), mode, float(min_delta))
        self.out_dir, self.freeze_bn, self.progress = out_dir, freeze_bn, progress
        self.seed, self.deterministic, self.generators = seed, bool(deterministic), list(generators)
        first = next(iter(model.parameters()), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        self.amp = bool(amp)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        # torch.amp.GradScaler("cuda") from torch 2.3 (torch.cuda.amp's is deprecated there); 1.13 has only that one
        scaler = getattr(getattr(torch, "amp", None), "GradScaler", None)
        on = self.amp and self.device.type == "cuda"
        self.scaler = scaler("cuda", enabled=on) if scaler is not None else torch.cuda.amp.GradScaler(enabled=on)
        self.epoch = 0
        self.history: List[Dict[str, float]] = []
        self.stopped_early = False
        self._resumed = False
        self._best_state: Optional[Dict[str, torch.Tensor]] = None
        self._net: torch.nn.Module = model  # what step_fn gets: the model, or its DDP wrapper inside fit

    # --------------------------------------------------------------------------------- checkpoints
    def state_extra(self) -> Dict[str, float]:
        return dict(self.early_stopping.state_dict())

    def save(self, path: str, resumable: bool = True) -> None:
        """The run's state (``resumable=False``: without the optimiser's, as ``best.pt``, which holds weights).
        Under several processes every rank calls it (their generators are gathered) and rank 0 writes."""
        ranks = distributed.all_gather(rng_state(self.generators)) if distributed.world_size() > 1 else None
        if distributed.is_main_process():
            save_checkpoint(path, self.model, self.optimizer if resumable else None, self.schedule, self.epoch,
                            self.state_extra(), self.history, self.scaler if resumable else None,
                            generators=self.generators, rng_ranks=ranks)

    def resume(self, path: str) -> "Trainer":
        """Continues from a checkpoint exactly as an uninterrupted run would (model, optimiser, schedule,
        epoch, every generator, early stopping, log so far)."""
        info = load_checkpoint(path, self.model, self.optimizer, self.schedule, restore_rng=True, scaler=self.scaler,
                               generators=self.generators)
        saved, size = info["rng_ranks"], distributed.world_size()
        if len(saved or [None]) != size:
            raise ValueError(f"Trainer.resume: {path} was written by a run of {len(saved or [None])} process(es), this "
                             f"run has {size}; resume it with as many (--nproc {len(saved or [None])})")
        if saved:
            set_rng_state(saved[distributed.rank()], self.generators)
        self.epoch, self.history = info["epoch"], info["history"]
        if "early_stopping.best" in info["extra"]:
            self.early_stopping.load_state_dict(info["extra"])
        self.stopped_early = bool(self.early_stopping.should_stop)
        self._resumed = True
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
        if self.progress and sys.stderr.isatty() and distributed.is_main_process():
            try:
                from tqdm import tqdm

                return tqdm(loader, desc=desc, leave=False, file=sys.stderr)
            except ImportError:
                pass
        return loader

    def train_one_epoch(self, loader: Iterable, step_fn: Callable) -> float:
        self.model.train()
        if self.freeze_bn:
            freeze_batchnorm(self.model)
        total, weight, n = 0.0, 0.0, 0
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for batch in self._bar(loader, f"epoch {self.epoch + 1}/{self.epochs}"):
            batch = self._to_device(batch)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                out = step_fn(self._net, batch)
            loss, w = out if isinstance(out, tuple) else (out, None)
            value = float(loss.detach())
            if not np.isfinite(value):
                raise ValueError(f"Trainer: the loss is not finite at epoch {self.epoch + 1} batch {n + 1}, got loss={value}")
            self.scaler.scale(loss).backward()
            if self.clip_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if w is None:
                total += value
                weight += 1.0
            else:
                total += value * float(w)
                weight += float(w)
            n += 1
        if n == 0:
            raise ValueError(f"Trainer: the loader gave no batch in epoch {self.epoch + 1}")
        if self._net is not self.model:  # DDP: every rank's losses, so every rank logs and decides alike
            total, weight = distributed.all_sum([total, weight])
        return total / weight

    def fit(self, train_loader: Iterable, step_fn: Callable = detection_step,
            eval_fn: Optional[Callable[[torch.nn.Module, int], Dict[str, float]]] = None,
            resume: bool = False) -> List[Dict[str, float]]:
        """Trains until ``epochs`` or early stopping; returns the epoch log (a list of dicts).

        ``resume``: continue from ``out_dir/last.pt`` when it exists (:meth:`resume`); a run that had
        finished only gets its final state back (weights, generators, log), so a sequence of stages
        resumed after an interruption ends exactly as an uninterrupted one.

        Under a process group (see the class docstring) every rank calls ``fit`` with the same arguments."""
        ranks = distributed.init_from_env("nccl" if self.device.type == "cuda" else "gloo")
        main = distributed.is_main_process()
        if self.out_dir:
            os.makedirs(self.out_dir, exist_ok=True)
            if main:
                remove_stale_temporaries(self.out_dir, recursive=False)
            if resume and os.path.exists(os.path.join(self.out_dir, "last.pt")):
                self.resume(os.path.join(self.out_dir, "last.pt"))
        elif resume:
            raise ValueError("Trainer.fit: resume=True needs out_dir (the folder holding last.pt), got out_dir=None")
        if self.seed is not None and self.epoch == 0 and not self._resumed:
            seed_everything(self.seed + (distributed.rank() if ranks > 1 else 0), self.deterministic)
        sampler = getattr(train_loader, "sampler", None)
        if ranks > 1:
            train_loader = distributed.shard_loader(train_loader, self.seed or 0)
            sampler = train_loader.sampler
            self._net = self._wrap_ddp()
        try:
            self._epochs(train_loader, sampler, step_fn, eval_fn)
        finally:
            self._net = self.model
        distributed.barrier()  # rank 0's files are whole before any rank reads best.pt or returns
        if self.keep_best:
            self.restore_best()
        if self.out_dir and main:
            final = {"epochs": self.epoch, "stopped_early": self.stopped_early, "monitor": self.monitor,
                     "best": self.early_stopping.best if np.isfinite(self.early_stopping.best) else None,
                     "best_epoch": self.best_epoch(), "last": self.history[-1] if self.history else None}
            write_json(os.path.join(self.out_dir, "metrics.json"), final, indent=2)
        return self.history

    def _wrap_ddp(self) -> torch.nn.Module:
        """The model in DistributedDataParallel (built after freezing BatchNorm: DDP expects a gradient for
        every parameter that requires one when it is built)."""
        if self.freeze_bn:
            freeze_batchnorm(self.model)
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ValueError("Trainer: under DistributedDataParallel the model needs a parameter that requires grad")
        cuda = self.device.type == "cuda"
        if cuda != (torch.distributed.get_backend() == "nccl"):
            raise ValueError(f"Trainer: the model is on {self.device} but the process group's backend is "
                             f"{torch.distributed.get_backend()} (nccl for CUDA, gloo for the CPU)")
        ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] if cuda else None
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _epochs(self, train_loader: Iterable, sampler: Any, step_fn: Callable, eval_fn: Optional[Callable]) -> None:
        while self.epoch < self.epochs and not self.stopped_early:
            t0 = time.perf_counter()
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler shuffles by epoch: a resume draws the same
                sampler.set_epoch(self.epoch)
            set_lrs(self.optimizer, self.schedule.lrs)
            lr = get_lrs(self.optimizer)[0]
            train_loss = self.train_one_epoch(train_loader, step_fn)
            self.epoch += 1
            rec: Dict[str, float] = {"epoch": self.epoch, "train_loss": train_loss, "lr": lr}
            if eval_fn is not None and (self.epoch % self.eval_every == 0 or self.epoch == self.epochs):
                self.model.eval()
                with torch.no_grad():
                    values = {k: float(v) for k, v in (eval_fn(self.model, self.epoch) or {}).items()}
                rec.update(distributed.all_mean(values, "Trainer: eval_fn") if self._net is not self.model else values)
            monitored = rec.get(self.monitor)
            improved = False
            if monitored is not None and np.isfinite(monitored):
                improved = self.early_stopping.update(monitored)
                self.stopped_early = bool(self.early_stopping.should_stop)
            self.schedule.step(monitored)
            rec["seconds"] = time.perf_counter() - t0
            self.history.append(rec)
            self._log(rec)
            if improved and self.keep_best and not self.out_dir:
                self._best_state = copy.deepcopy(self.model.state_dict())
            if self.out_dir:
                self.save(os.path.join(self.out_dir, "last.pt"))
                if improved:
                    self.save(os.path.join(self.out_dir, "best.pt"), resumable=False)

    def best_epoch(self) -> Optional[int]:
        """The epoch whose monitored value was the best (None before any)."""
        best, out = None, None
        for rec in self.history:
            v = rec.get(self.monitor)
            if v is None or not np.isfinite(v):
                continue
            if best is None or (v < best if self.mode == "min" else v > best):
                best, out = v, int(rec["epoch"])
        return out

    def restore_best(self) -> None:
        """Loads the best epoch's weights into the model (no-op before any improvement)."""
        path = os.path.join(self.out_dir, "best.pt") if self.out_dir else None
        if path and os.path.exists(path):
            load_checkpoint(path, self.model, restore_rng=False)
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    def _log(self, rec: Dict[str, float]) -> None:
        if not distributed.is_main_process():
            return
        if self.progress:
            print("  ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()),
                  file=sys.stderr, flush=True)
        if not self.out_dir:
            return
        clean = lambda r: {k: (v if np.isfinite(v) else None) for k, v in r.items()}  # noqa: E731
        write_text(os.path.join(self.out_dir, "log.jsonl"), "".join(json.dumps(clean(r)) + "\n" for r in self.history))
        # log.csv's columns cover metrics that appear later (eval every N); both files are rewritten whole.
        keys = ["epoch", "train_loss", "lr"]
        keys += sorted({k for r in self.history for k in r} - set(keys) - {"seconds"}) + ["seconds"]
        lines = [",".join(keys)] + [",".join("" if k not in r else repr(float(r[k])) if k != "epoch" else str(int(r[k]))
                                             for k in keys) for r in self.history]
        write_text(os.path.join(self.out_dir, "log.csv"), "\n".join(lines) + "\n")
