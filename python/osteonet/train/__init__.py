"""osteonet.train: the one training engine (optimisers, schedules, checkpoints, the loop).

Schedules, early stopping and the checkpoint checks are the C++ core's (``include/osteonet/train/``,
bound); the loop is :class:`Trainer` here, which every task and reproduction uses. C++ programs write
their loop with the same parts and checkpoint format (examples/cpp/train_classifier.cpp, docs/training.md).
Files are written by osteonet's one atomic writer (:mod:`osteonet.io`). Several processes:
:func:`launch` starts them, the Trainer runs DistributedDataParallel (:mod:`osteonet.train.distributed`).
"""

from . import distributed
from .checkpoint import (CHECKPOINT_VERSION, UnverifiedWeightsWarning, checkpoint_summary, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state, verify_file)
from .optim import (OPTIMIZER_NAMES, SCHEDULE_NAMES, Schedule, create_optimizer, get_lrs, make_schedule, set_lrs)
from .distributed import launch
from .trainer import Trainer, classification_step, detection_step, freeze_batchnorm, seed_everything
from .. import _core

#: Early stopping on a monitored value (C++ ``osteonet::train::EarlyStopping``).
EarlyStopping = _core.train.EarlyStopping

__all__ = ["Trainer", "launch", "distributed", "create_optimizer", "make_schedule", "Schedule", "EarlyStopping", "save_checkpoint",
           "load_checkpoint", "checkpoint_summary", "rng_state", "set_rng_state", "seed_everything",
           "freeze_batchnorm", "detection_step", "classification_step", "get_lrs", "set_lrs", "OPTIMIZER_NAMES",
           "SCHEDULE_NAMES", "CHECKPOINT_VERSION", "verify_file", "UnverifiedWeightsWarning"]
