"""WHO and ACR categories at and around their thresholds, scalar and array forms, errors."""

import numpy as np
import pytest
import torch

from osteonet import clinical


def test_who_thresholds_hand_worked():
    assert [clinical.who_class(t) for t in (0.5, -1.0, -1.01, -2.49, -2.5, -4.0)] == [0, 0, 1, 1, 2, 2]
    assert clinical.CLASS_NAMES == ["normal", "osteopenia", "osteoporosis"]
    assert clinical.class_index("osteopenia") == 1


def test_acr_thresholds_hand_worked():
    assert [clinical.acr_class(b) for b in (150, 120.01, 120, 80, 79.99, 10)] == [0, 0, 1, 1, 2, 2]


def test_array_and_tensor_forms_agree_with_scalar():
    t = np.random.default_rng(0).normal(-1.5, 1.5, 1000)
    arr = clinical.who_class(t)
    assert arr.dtype == np.int64 and list(arr) == [clinical.who_class(v) for v in t]
    ten = clinical.who_class(torch.tensor(t, dtype=torch.float32))
    assert isinstance(ten, torch.Tensor) and ten.tolist() == [clinical.who_class(float(v)) for v in torch.tensor(t, dtype=torch.float32)]
    assert list(clinical.acr_class([130, 100, 50])) == [0, 1, 2]
    assert clinical.t_score(90.0, 160.0, 28.0) == pytest.approx(-2.5)


def test_errors_are_one_line():
    with pytest.raises(ValueError, match="finite"):
        clinical.who_class(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        clinical.who_class([0.0, float("nan")])
    with pytest.raises(ValueError, match=">= 0"):
        clinical.acr_class(-5)
    with pytest.raises(ValueError, match="did you mean 'osteopenia'"):
        clinical.class_index("osteopnia")
    with pytest.raises(TypeError):
        clinical.who_class("low")
    with pytest.raises(TypeError):
        clinical.who_class(True)
