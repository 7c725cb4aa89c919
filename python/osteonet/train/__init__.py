"""osteonet.train: the training engine (optimisers, schedules, checkpoints, the loop).

Schedules, early stopping, atomic writes and checkpoint checks are the C++ core's
(``include/osteonet/train/``, bound); the loop itself is Python here and C++ in ``osteonet::train::Trainer``,
with the same semantics and one checkpoint format (see docs/training.md).
"""

from .checkpoint import (CHECKPOINT_VERSION, atomic_write, checkpoint_summary, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .optim import (OPTIMIZER_NAMES, SCHEDULE_NAMES, Schedule, create_optimizer, get_lrs, make_schedule, set_lrs)
from .trainer import Trainer, classification_step, detection_step, freeze_batchnorm, seed_everything
from .. import _core

#: Early stopping on a monitored value (C++ ``osteonet::train::EarlyStopping``).
EarlyStopping = _core.train.EarlyStopping

__all__ = ["Trainer", "create_optimizer", "make_schedule", "Schedule", "EarlyStopping", "save_checkpoint",
           "load_checkpoint", "checkpoint_summary", "atomic_write", "rng_state", "set_rng_state", "seed_everything",
           "freeze_batchnorm", "detection_step", "classification_step", "get_lrs", "set_lrs", "OPTIMIZER_NAMES",
           "SCHEDULE_NAMES", "CHECKPOINT_VERSION"]
