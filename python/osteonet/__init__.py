"""osteonet: deep-learning models for osteoporosis imaging, a C++ (LibTorch) core with Python bindings."""

import torch  # noqa: F401  (must be imported before the extension, which links LibTorch)

try:  # written by setup.py at build time
    from ._build_info import TORCH_VERSION as _BUILT_WITH
except ImportError:  # a source tree without a build: importing the extension below says what is missing
    _BUILT_WITH = None
if _BUILT_WITH is not None and _BUILT_WITH.split("+")[0] != torch.__version__.split("+")[0]:
    raise ImportError(f"osteonet was built against torch {_BUILT_WITH}, but torch {torch.__version__} is installed; "
                      "rebuild it against this torch: pip install --no-build-isolation --no-deps .")

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
