"""Multi-process training: :func:`launch` starts the ranks on one machine (torch.multiprocessing, spawn),
and the few rank helpers :class:`osteonet.train.Trainer` runs DistributedDataParallel with.

Debian's torch 1.13 on Python 3.11 cannot start workers with ``python -m torch.distributed.run``, so
osteonet starts its own: one process per rank on a free local port, gloo on the CPU, NCCL when there is
a GPU per rank. The launcher watches its children: a rank that dies (killed, or raising) stops the others
and raises one ``RuntimeError`` line naming it; the process group's ``timeout`` is the second guard.
Across machines, torchrun or SLURM start the ranks: the Trainer joins the group their environment
variables describe (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

__all__ = ["launch", "rank", "world_size", "is_main_process", "barrier", "init_from_env", "shard_loader",
           "all_sum", "all_mean", "all_gather", "DEFAULT_TIMEOUT"]

#: seconds a collective may wait for a missing rank before it fails (init_process_group's ``timeout``)
DEFAULT_TIMEOUT = 900.0


# ------------------------------------------------------------------------------------------- ranks
def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    """True on rank 0, the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Waits for every rank (nothing without a process group)."""
    if _active() and dist.get_world_size() > 1:
        dist.barrier()


def init_from_env(backend: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Joins the process group torchrun / SLURM describe in the environment (``WORLD_SIZE`` > 1 with
    ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; under NCCL ``LOCAL_RANK`` picks the GPU) unless one is
    already initialised. ``backend``: ``"gloo"`` for models on the CPU, ``"nccl"`` for models on a GPU
    (None: NCCL where CUDA is). Returns the world size (1: a single process)."""
    if _active():
        return dist.get_world_size()
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return 1
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ValueError(f"distributed: WORLD_SIZE={size} is set but {', '.join(missing)} is not (set by torchrun, or "
                         "by your SLURM script from SLURM_PROCID and the first node's address)")
    if not dist.is_available():
        raise RuntimeError(f"distributed: WORLD_SIZE={size} is set but this torch has no torch.distributed")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    _without_libuv()
    dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout))
    return dist.get_world_size()


def _collective_device() -> torch.device:
    """Where tensors for collectives live: the current GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(values: Sequence[float]) -> List[float]:
    """``values`` summed over the ranks (float64; the values themselves without a process group)."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` without a process group)."""
    if world_size() == 1:
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_mean(metrics: Dict[str, float], where: str) -> Dict[str, float]:
    """The ranks' ``{name: value}`` averaged name by name, the same on every rank. Ranks that report
    different names raise one ValueError (``where`` names the caller)."""
    if world_size() == 1:
        return dict(metrics)
    every = all_gather({k: float(v) for k, v in metrics.items()})
    names = [sorted(m) for m in every]
    for r, n in enumerate(names):
        if n != names[0]:
            raise ValueError(f"{where}: every rank must report the same metrics, got rank 0 {names[0]} and rank {r} {n}")
    return {k: sum(m[k] for m in every) / len(every) for k in every[0]}


def shard_loader(loader: Any, seed: int, where: str = "Trainer") -> Any:
    """The rank's share of ``loader``: a DataLoader like it whose sampler is a DistributedSampler (shuffled,
    with ``seed`` and the epoch, where the loader shuffled; in order where it did not). ``batch_size`` stays
    the loader's, so it is per rank. A loader that already has a DistributedSampler is returned as it is;
    anything osteonet cannot shard faithfully (not a DataLoader, an IterableDataset, a custom sampler or
    batch sampler, sampling with replacement) raises one ValueError."""
    from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
    from torch.utils.data.distributed import DistributedSampler

    how = "give each rank its share with a torch.utils.data.distributed.DistributedSampler"
    if not isinstance(loader, DataLoader):
        raise ValueError(f"{where}: under DistributedDataParallel the training loader must be a torch DataLoader "
                         f"(or {how}), got {type(loader).__name__}")
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError(f"{where}: under DistributedDataParallel an IterableDataset cannot be split by rank here; {how}")
    sampler = loader.sampler
    if type(loader.batch_sampler) is not BatchSampler:
        raise ValueError(f"{where}: under DistributedDataParallel a custom batch_sampler cannot be split by rank here, "
                         f"got {type(loader.batch_sampler).__name__}; {how}")
    if isinstance(sampler, RandomSampler):
        if sampler.replacement or sampler._num_samples is not None:
            raise ValueError(f"{where}: under DistributedDataParallel a RandomSampler with replacement or num_samples "
                             f"cannot be split by rank here; {how}")
        shuffle = True
    elif isinstance(sampler, SequentialSampler):
        shuffle = False
    else:
        raise ValueError(f"{where}: under DistributedDataParallel the sampler {type(sampler).__name__} cannot be split "
                         f"by rank here; {how}")
    return DataLoader(loader.dataset, batch_size=loader.batch_size,
                      sampler=DistributedSampler(loader.dataset, shuffle=shuffle, seed=int(seed)),
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      drop_last=loader.drop_last, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
                      prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers)


# ------------------------------------------------------------------------------------------- launcher
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """A rank ends when the launcher dies (Linux), instead of waiting on its peers until the timeout."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _without_libuv() -> None:
    """torch >= 2.4 makes its TCPStore on libuv unless ``USE_LIBUV=0``; Debian's torch 2.x is built without
    libuv and fails the rendezvous ("use_libuv was requested but PyTorch was build without libuv support").
    The legacy store works in every torch: osteonet's rendezvous uses it unless ``USE_LIBUV`` is set."""
    os.environ.setdefault("USE_LIBUV", "0")


def _worker(rank_: int, nproc: int, port: int, backend: str, timeout: float, threads: int, folder: str,
            fn: Callable, args: Sequence[Any], kwargs: Dict[str, Any]) -> None:
    _die_with_parent()
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank_), WORLD_SIZE=str(nproc),
                          LOCAL_RANK=str(rank_), LOCAL_WORLD_SIZE=str(nproc))
        torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank_)
        _without_libuv()
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank_, world_size=nproc,
                                timeout=datetime.timedelta(seconds=timeout))
        try:
            out = fn(*args, **kwargs)
        finally:
            dist.destroy_process_group()
        if rank_ == 0:
            torch.save(out, os.path.join(folder, "result.pt"))
    except BaseException as e:  # noqa: BLE001 -- reported to the launcher, then the rank exits non-zero
        first = (str(e).strip().splitlines() or [""])[0]
        with open(os.path.join(folder, f"error.{rank_}"), "w") as f:
            f.write(f"{type(e).__name__}: {first}" if first else type(e).__name__)
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def _stop(procs: List[Any], grace: float = 5.0) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _failure(r: int, code: int, folder: str) -> str:
    path = os.path.join(folder, f"error.{r}")
    if os.path.exists(path):
        with open(path) as f:
            return f"rank {r} raised {f.read().strip()}"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"rank {r} was killed by signal {name} (exit code {code})"
    return f"rank {r} exited with code {code}"


def _written_at(folder: str, rank_: int) -> float:
    """When rank ``rank_`` wrote its error (ns), or infinity when it wrote none."""
    try:
        return float(os.stat(os.path.join(folder, f"error.{rank_}")).st_mtime_ns)
    except OSError:
        return float("inf")


def launch(fn: Callable, nproc: int, args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None, *,
           backend: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT, threads: Optional[int] = None) -> Any:
    """Runs ``fn(*args, **kwargs)`` on ``nproc`` ranks of one machine and returns rank 0's result.

    Each rank is a fresh process (torch.multiprocessing's spawn: ``fn`` and its arguments must be picklable,
    e.g. a module-level function) in a process group on a free local port: ``backend`` ``"nccl"`` where CUDA
    has a GPU per rank (rank ``r`` uses GPU ``r``), ``"gloo"`` otherwise; ``timeout`` (seconds) bounds every
    collective. Each rank uses ``threads`` CPU threads (default: the cores divided among the ranks). Inside
    ``fn``, :class:`osteonet.train.Trainer` trains with DistributedDataParallel. ``nproc=1`` calls ``fn``
    in this process, without a process group.

    A rank that raises or dies stops the others and raises one ``RuntimeError`` naming the rank and its
    error, exit code or signal; rank 0's result comes back through ``torch.save``."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"launch: nproc must be an int >= 1, got nproc={nproc!r}")
    if timeout <= 0:
        raise ValueError(f"launch: timeout must be > 0 seconds, got timeout={timeout}")
    kwargs = dict(kwargs or {})
    if nproc == 1:
        return fn(*args, **kwargs)
    if not dist.is_available():
        raise RuntimeError("launch: this torch has no torch.distributed")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend = backend or ("nccl" if gpus >= nproc else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"launch: backend must be 'gloo' or 'nccl', got backend={backend!r}")
    if backend == "nccl" and gpus < nproc:
        raise ValueError(f"launch: nccl needs a GPU per rank, got nproc={nproc} and {gpus} GPU(s)")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // nproc)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"launch: threads must be an int >= 1 (torch threads per rank), got threads={threads!r}")
    ctx = torch.multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="osteonet-launch-") as folder:
        port = _free_port()
        procs = [ctx.Process(target=_worker, name=f"osteonet-rank-{r}",
                             args=(r, nproc, port, backend, float(timeout), int(threads), folder, fn, tuple(args), kwargs))
                 for r in range(nproc)]
        try:
            for p in procs:
                p.start()
            failed: List[str] = []
            while not failed:
                # one look at who is alive: a rank may exit between two looks, and wait([]) never returns
                alive = [p for p in procs if p.exitcode is None]
                if not alive:
                    break
                multiprocessing.connection.wait([p.sentinel for p in alive], timeout=5.0)
                for p in procs:
                    p.join(0)
                # a signal is the cause; a peer's error ("connection closed") is its consequence, so among the
                # ranks that raised, the first to write its error is named (not the lowest rank: under load a
                # peer's "connection reset" can arrive at the launcher first)
                bad = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                bad.sort(key=lambda rc: (rc[1] >= 0, _written_at(folder, rc[0]), rc[0]))
                failed = [_failure(r, code, folder) for r, code in bad]
        finally:
            _stop(procs)
        if failed:
            more = f" ({len(failed) - 1} other rank(s) failed after it)" if len(failed) > 1 else ""
            raise RuntimeError(f"launch: {failed[0]}; the run was stopped{more}")
        path = os.path.join(folder, "result.pt")
        return torch.load(path) if os.path.exists(path) else None
