"""`osteonet train|evaluate|predict|check-data`: the tasks on the command line. Each function registers
one sub-command on the parser osteonet.cli builds."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any, Dict, List

from . import TASK_NAMES

__all__ = ["register_train", "register_evaluate", "register_predict", "register_check_data"]

#: the common flags and the option each sets (a task without that option refuses the flag in one line)
COMMON_FLAGS = {"model": "--model", "attention": "--attention", "epochs": "--epochs", "batch_size": "--batch-size",
                "lr": "--lr", "image_size": "--image-size"}


def _settings(task, args, table, where: str) -> Dict[str, Any]:
    """--set KEY=VALUE pairs (and, for train, the common flags) parsed by the task's option types."""
    given: Dict[str, Any] = {}
    for key, flag in (COMMON_FLAGS.items() if table is task.options else ()):
        value = getattr(args, key, None)
        if value is None:
            continue
        if key not in table:
            raise ValueError(f"{where}: {flag} is not an option of this task; its options: {', '.join(sorted(table))} "
                             "(set them with --set KEY=VALUE)")
        given[key] = task.parse_value(key, table[key], str(value), where) if isinstance(value, str) else value
    for item in args.set or []:
        if "=" not in item:
            raise ValueError(f"{where}: --set takes KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in table:
            task.unknown_option(key, table, where)
        given[key] = task.parse_value(key, table[key], raw, where)
    return given


def _print_json(obj: Any) -> None:
    print(json.dumps(obj))


def _train(a) -> int:
    from ..train import launch
    from . import get_task, run

    task = get_task(a.task)
    where = f"train --task {a.task}"
    options = _settings(task, a, task.options, where)
    if a.nproc < 1:
        raise ValueError(f"{where}: --nproc must be >= 1, got --nproc {a.nproc}")
    kwargs = dict(seed=a.seed, test_fraction=a.test_fraction, resume=a.resume, progress=not a.quiet,
                  command="osteonet " + " ".join(shlex.quote(v) for v in sys.argv[1:]))
    # the tasks train on the CPU, so the ranks talk over gloo even where there is a GPU
    card = launch(run.train, a.nproc, (a.task, a.data, a.out, options), kwargs, backend="gloo")
    with open(f"{a.out}/metrics.json") as f:
        metrics = json.load(f)
    line = task.headline(metrics)
    print(f"{a.task}: {line + ' ' if line else ''}on {metrics['n']} held-out samples -> {a.out}/metrics.json, "
          f"model.json, {', '.join(sorted(card['checkpoints'].values()))}")
    return 0


def _evaluate(a) -> int:
    from . import get_task, run
    from .card import find_card

    card, _ = find_card(a.checkpoint)
    if a.task is not None and a.task != card["task"]:
        raise ValueError(f"evaluate: the model was trained for task {card['task']!r}, got --task {a.task}")
    metrics = run.evaluate(a.checkpoint, a.data, a.out, split=a.split, seed=a.seed)
    line = get_task(card["task"]).headline(metrics)
    print(f"{card['task']}: {line + ' ' if line else ''}on {metrics['n']} samples -> {a.out}/metrics.json")
    return 0


def _predict(a) -> int:
    from . import get_task, run
    from .card import find_card

    inputs: List[str] = list(a.inputs or []) + list(a.input or [])
    if not inputs:
        raise ValueError("predict: give the input(s) as --input PATH or as arguments")
    card, _ = find_card(a.checkpoint)
    if a.task is not None and a.task != card["task"]:
        raise ValueError(f"predict: the model was trained for task {card['task']!r}, got --task {a.task}")
    task = get_task(card["task"])
    options = _settings(task, a, task.predict_options, f"predict --task {card['task']}")
    for res in run.predict(a.checkpoint, inputs, a.out, options):
        _print_json(res)
    return 0


def _check_data(a) -> int:
    from . import run

    summary = run.check_data(a.task, a.folder)
    print(f"{a.folder}: valid {a.task} layout; {json.dumps(summary)}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a task option (repeatable; see docs/tasks.md)")


def register_train(sub) -> None:
    t = sub.add_parser("train", help="train a task on a data folder (its documented layout)")
    t.add_argument("--task", required=True, choices=TASK_NAMES)
    t.add_argument("--data", required=True, help="the data folder")
    t.add_argument("--out", required=True, help="the run folder (model.json, checkpoints, metrics.json, pictures)")
    t.add_argument("--model", default=None, help="the task's model (classification: a backbone; segmentation: unet, "
                                                  "unet_plusplus; detection: the detector's backbone)")
    t.add_argument("--attention", default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--image-size", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--test-fraction", type=float, default=0.2, help="share of the groups (patients) held out")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--nproc", type=int, default=1, help="train on N processes of this machine (DistributedDataParallel, "
                                                        "gloo); --batch-size is per process")
    _common(t)
    t.set_defaults(fn=_train)


def register_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="evaluate a trained run on a data folder (metrics with 95 %% CIs)")
    e.add_argument("--checkpoint", required=True, help="the run folder, its model.json or a checkpoint in it")
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--task", default=None, choices=TASK_NAMES, help="checked against the model card")
    e.add_argument("--split", default="all", choices=["all", "test"], help="test: only the run's held-out samples")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    e.set_defaults(fn=_evaluate)


def register_predict(sub) -> None:
    r = sub.add_parser("predict", help="predict images, DICOM files or series folders, NIfTI volumes")
    r.add_argument("--checkpoint", required=True, help="the run folder, its model.json or a checkpoint in it")
    r.add_argument("inputs", nargs="*", metavar="INPUT")
    r.add_argument("--input", action="append", default=None, help="an input (repeatable; or give them as arguments)")
    r.add_argument("--out", required=True)
    r.add_argument("--task", default=None, choices=TASK_NAMES, help="checked against the model card")
    _common(r)
    r.set_defaults(fn=_predict)


def register_check_data(sub) -> None:
    c = sub.add_parser("check-data", help="validate a data folder against a task's layout (writes nothing)")
    c.add_argument("--task", required=True, choices=TASK_NAMES)
    c.add_argument("folder")
    c.set_defaults(fn=_check_data)
