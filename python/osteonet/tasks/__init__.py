"""osteonet.tasks: one contract for every system osteonet implements, so a user trains, evaluates and
predicts on their own data with the same code that reproduces the papers' tables.

Tasks: ``classification`` (images -> classes), ``detection`` (DSNet: boxes with WHO classes on CT
slices), ``ovf`` (CNN/LSTM vertebral fracture on CT scans, two stages), ``segmentation`` (U-Net / U-Net++
label maps), ``bmd`` (vertebral-body U-Net + DenseNet-121 BMD regression, ACR classes) and ``hip``
(hip-region segmentation + per-region T-score classes). Each is a :class:`Task` (osteonet/tasks/base.py);
:func:`train`, :func:`evaluate`, :func:`predict` and :func:`check_data` run any of them
(docs/tasks.md; on the command line `osteonet train|evaluate|predict|check-data --task T`).
"""

from __future__ import annotations

import importlib
from typing import List

from .base import Option, Samples, Task

TASK_NAMES = ("classification", "detection", "ovf", "segmentation", "bmd", "hip")


def get_task(name: str) -> Task:
    """The task called ``name`` (ValueError with the nearest name otherwise)."""
    from .._errors import nearest

    if not isinstance(name, str):
        raise TypeError(f"get_task: name must be a str, got {type(name).__name__}")
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; did you mean {nearest(name, TASK_NAMES)!r}? "
                         f"(tasks: {', '.join(TASK_NAMES)})")
    return importlib.import_module(f"{__name__}.{name}").TASK


def list_tasks() -> List[str]:
    return list(TASK_NAMES)


from .run import check_data, evaluate, load, predict, train  # noqa: E402

__all__ = ["Task", "Option", "Samples", "get_task", "list_tasks", "train", "evaluate", "predict", "check_data", "load",
           "TASK_NAMES"]
