"""osteonet: deep-learning models for osteoporosis imaging, a C++ (LibTorch) core with Python bindings."""

import torch  # noqa: F401  (must be imported before the extension, which links LibTorch)

from . import _core
from . import clinical
from . import metrics
from . import models
from . import split
from . import segmentation
from . import synth
from . import io
from . import detection
from . import train
from . import data
from . import sequence
from . import runtime
from . import tasks
from . import weights
from .models import create_model, list_models
from .export import export

__version__ = _core.__version__

__all__ = ["create_model", "list_models", "export", "clinical", "data", "detection", "io", "metrics", "models",
           "runtime", "segmentation", "sequence", "split", "synth", "tasks", "train", "weights", "__version__"]
