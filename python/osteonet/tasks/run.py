"""The runner every task goes through (and so `osteonet train|evaluate|predict|check-data` and the
reproductions): train -> model card + metrics on the held-out split; evaluate a card on a data folder;
predict real inputs; check a data folder.

A run folder holds ``model.json`` (the card), one folder per training stage (``last.pt``, ``best.pt``,
``log.csv``...), ``metrics.json``, ``predictions.json`` and pictures. Every file is written whole
(osteonet.io's atomic writer); ``--resume`` continues an interrupted run and ends as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from .. import _core
from ..io import remove_stale_temporaries, write_json
from ..train import distributed
from . import get_task
from .card import CARD_NAME, find_card, save_card, synthetic_notice
from .layout import provenance

__all__ = ["train", "evaluate", "predict", "check_data", "load"]


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def check_data(task: str, folder: str) -> Dict[str, Any]:
    """Validates ``folder`` against ``task``'s layout (nothing is written); returns counts."""
    return get_task(task).check_data(os.fspath(folder))


def train(task: str, data: str, out: str, options: Optional[Dict[str, Any]] = None, *, seed: int = 0,
          test_fraction: float = 0.2, resume: bool = False, progress: bool = True,
          command: Optional[str] = None) -> Dict[str, Any]:
    """Trains ``task`` on the folder ``data`` into the run folder ``out``: split by group (patient / source
    id) into training and test parts, train every stage, evaluate on the test part (``metrics.json``,
    ``predictions.json``, pictures) and write the model card. Returns the card.

    Under a process group (``osteonet train --nproc N``, :func:`osteonet.train.launch`, torchrun) every rank
    calls it: the stages train with DistributedDataParallel, rank 0 alone writes and evaluates (the other
    ranks return the card after training)."""
    t = get_task(task)
    opts = t.resolve(dict(options or {}), where=f"train --task {task}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"train: test_fraction must be in (0, 1), got test_fraction={test_fraction}")
    data, out = os.fspath(data), os.fspath(out)
    card_path = os.path.join(out, CARD_NAME)
    request = {"task": task, "data": os.path.abspath(data), "options": opts, "seed": seed, "test_fraction": test_fraction}
    continuing = os.path.isdir(out) and bool(os.listdir(out))
    if continuing:
        if not resume:
            raise ValueError(f"train: {out} already holds files; pass --resume to continue that run, or choose a new --out")
        if os.path.exists(card_path):
            with open(card_path) as f:
                old = json.load(f)
            before = {k: old.get("request", {}).get(k) for k in request}
            changed = [k for k in request if json.dumps(before[k], sort_keys=True) != json.dumps(request[k], sort_keys=True)]
            if changed:
                k = changed[0]
                raise ValueError(f"train --resume: {out} was started with other settings, got {k}={request[k]!r} "
                                 f"where the run has {k}={before[k]!r}")
    distributed.init_from_env("gloo")  # torchrun / SLURM: join before deciding who writes (tasks train on the CPU)
    distributed.barrier()  # every rank has looked at `out` before rank 0 writes there
    main = distributed.is_main_process()
    progress = progress and main
    if continuing and main:
        remove_stale_temporaries(out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    summary = t.check_data(data)
    samples = t.read(data)
    tr, te = t.split(samples, test_fraction, seed)
    info = provenance(data)
    info.update(layout=task, counts=samples.counts(), train=samples.counts(tr), test=samples.counts(te),
                group_column=samples.group_column)
    card: Dict[str, Any] = {"task": task, "status": "training", "osteonet_version": _core.__version__,
                            "command": command, "request": request, "training_data": info,
                            "split": {"seed": seed, "test_fraction": test_fraction, "by": samples.group_column or "sample",
                                      "test": [samples.ids[i] for i in te]}}
    if main:
        save_card(out, card)
    _log(progress, f"{task}: {len(tr)} training and {len(te)} test samples from {data} "
                   f"({'split by ' + samples.group_column if samples.group_column else 'no group ids: split by sample'})")
    bundle, part = t.fit(samples, tr, opts, out, seed, resume, progress)
    card.update(part)
    if not main:
        return card
    card["baseline"] = t.baseline_facts(samples, tr)
    metrics, preds = t.evaluate(bundle, samples, te, out, seed=seed, baseline=card["baseline"])
    metrics = {"task": task, "split": "test", "data": os.path.abspath(data), "n": len(te), **metrics}
    write_json(os.path.join(out, "metrics.json"), metrics)
    write_json(os.path.join(out, "predictions.json"), preds)
    card.update(status="trained", seconds=round(time.time() - t0, 1), data_summary=summary)
    save_card(out, card)
    return card


def load(checkpoint: str):
    """(task, card, run folder, model bundle) of a trained run (a run folder, its model.json or a checkpoint in it)."""
    card, run_dir = find_card(checkpoint)
    t = get_task(card["task"])
    return t, card, run_dir, t.load(card, run_dir)


def evaluate(checkpoint: str, data: str, out: str, split: str = "all", seed: int = 0) -> Dict[str, Any]:
    """Evaluates a trained run on the folder ``data`` (``split="test"``: only the samples the card held out,
    for the folder it was trained on). Writes metrics.json, predictions.json and pictures into ``out``."""
    t, card, run_dir, bundle = load(checkpoint)
    data = os.fspath(data)
    t.check_data(data)
    samples = t.read(data)
    if split == "all":
        idx = list(range(len(samples)))
    elif split == "test":
        held = set(card["split"]["test"])
        idx = [i for i, s in enumerate(samples.ids) if s in held]
        if not idx:
            raise ValueError(f"evaluate --split test: none of the run's {len(held)} test samples is in {data}")
    else:
        raise ValueError(f"evaluate: split must be 'all' or 'test', got split={split!r}")
    metrics, preds = t.evaluate(bundle, samples, idx, out, seed=seed, baseline=card.get("baseline"))
    metrics = {"task": card["task"], "split": split, "data": os.path.abspath(data), "n": len(idx),
               "model": os.path.join(run_dir, CARD_NAME), **metrics}
    notice = synthetic_notice(card)
    if notice:
        metrics["notice"] = notice
    write_json(os.path.join(out, "metrics.json"), metrics)
    write_json(os.path.join(out, "predictions.json"), preds)
    return metrics


def predict(checkpoint: str, inputs: Sequence[str], out: str, options: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Predicts each input (an image, DICOM file or series folder, NIfTI) with a trained run; writes
    ``<name>.json`` and pictures (and masks) per input into ``out``. Every result names the model and
    what it was trained on, and says so when that was osteonet's synthetic data."""
    t, card, run_dir, bundle = load(checkpoint)
    opts = t.resolve({**t.checkpoint_options(os.fspath(checkpoint), card), **dict(options or {})},
                     where=f"predict --task {card['task']}", table=t.predict_options)
    os.makedirs(out, exist_ok=True)
    results = []
    data = card.get("training_data") or {}
    for path in inputs:
        res = {"input": os.fspath(path), "task": card["task"]}
        notice = synthetic_notice(card)
        res.update(t.predict(bundle, os.fspath(path), out, dict(opts, _notice=notice)))
        res["model"] = {"card": os.path.join(run_dir, CARD_NAME), "trained_on": data.get("source", "unknown"),
                        "synthetic_training_data": bool(data.get("synthetic")), "training_folder": data.get("folder"),
                        "training_samples": data.get("train"), "folder_counts": data.get("counts")}
        if notice:
            res["notice"] = notice
        name = res.pop("_name")
        res["json"] = os.path.join(out, f"{name}.json")
        write_json(res["json"], res)
        results.append(res)
    return results
