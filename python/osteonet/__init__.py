"""osteonet: deep-learning models for osteoporosis imaging, a C++ (LibTorch) core with Python bindings."""

import torch  # noqa: F401  (must be imported before the extension, which links LibTorch)

from . import _core
from . import metrics
from . import models
from . import detection
from . import runtime
from .models import create_model, list_models

__version__ = _core.__version__

__all__ = ["create_model", "list_models", "detection", "metrics", "runtime", "models", "__version__"]
