"""Clinical bone-density categories (C++: include/osteonet/clinical/categories.hpp).

- WHO (DXA T-score): normal >= -1.0, osteopenia between, osteoporosis <= -2.5.
- ACR (QCT trabecular BMD, mg/cm³): normal > 120, osteopenia 80-120, osteoporosis < 80.

Class indices: 0 normal, 1 osteopenia, 2 osteoporosis (what osteonet's models predict).
"""

from __future__ import annotations

from typing import Any, List, Union

import numpy as np
import torch

from . import _core

__all__ = ["CLASS_NAMES", "class_index", "who_class", "acr_class", "t_score"]

_c = _core.clinical
CLASS_NAMES: List[str] = list(_c.class_names())


def class_index(name: str) -> int:
    """Index of a class name ('normal', 'osteopenia', 'osteoporosis')."""
    if not isinstance(name, str):
        raise TypeError(f"class_index: expected a str, got {type(name).__name__}")
    return _c.class_index(name)


def _apply(scalar_fn, tensor_fn, values: Any, where: str) -> Union[int, np.ndarray, torch.Tensor]:
    if isinstance(values, bool):
        raise TypeError(f"{where}: expected a number or an array, got bool")
    if isinstance(values, (int, float, np.floating, np.integer)):
        return scalar_fn(float(values))
    if isinstance(values, torch.Tensor):
        return tensor_fn(values.detach().cpu().double())
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: expected numbers, got {type(values).__name__}") from None
    return tensor_fn(torch.from_numpy(arr)).numpy()


def who_class(t_score: Any) -> Union[int, np.ndarray, torch.Tensor]:
    """WHO class index of T-score(s): a number gives an int, an array an int64 array (tensor in, tensor out)."""
    return _apply(_c.who_class, _c.who_class_tensor, t_score, "who_class")


def acr_class(bmd_mg_cm3: Any) -> Union[int, np.ndarray, torch.Tensor]:
    """ACR class index of QCT trabecular BMD value(s) in mg/cm³."""
    return _apply(_c.acr_class, _c.acr_class_tensor, bmd_mg_cm3, "acr_class")


def t_score(bmd: Any, young_mean: float, young_sd: float) -> Any:
    """(bmd - young_mean) / young_sd, element-wise."""
    if young_sd <= 0:
        raise ValueError(f"t_score: young_sd must be positive, got young_sd={young_sd}")
    if isinstance(bmd, torch.Tensor):
        return (bmd - young_mean) / young_sd
    return (np.asarray(bmd, dtype=np.float64) - young_mean) / young_sd if not np.isscalar(bmd) else (float(bmd) - young_mean) / young_sd
