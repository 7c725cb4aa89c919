"""Shared pytest fixtures for osteonet's Python tests."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> None:
    """Moves every parameter and BatchNorm statistic away from its initial value (so identity-initialised
    modules such as DS compute something non-trivial) in a seeded way."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g, dtype=t.dtype) * scale
            if name.endswith("running_var"):
                t.copy_(1.0 + noise.abs())
            elif name.endswith("running_mean"):
                t.copy_(noise)
            else:
                t.add_(noise)
