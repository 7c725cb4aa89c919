"""Shared pytest fixtures for osteonet's Python tests."""

import importlib
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


# torchvision Faster R-CNN helpers shared by the detection parity and runtime tests.
def randomise_detector_(model: torch.nn.Module, seed: int, peak: float = 20.0) -> None:
    """Random BN statistics and heads peaked by ``peak``, so that the models detect something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        p = model.roi_heads.box_predictor
        p.cls_score.weight.mul_(peak)
        p.cls_score.bias.copy_(torch.randn(p.cls_score.bias.shape, generator=g) * 2)
        model.rpn.head.cls_logits.weight.mul_(peak)


def scene(h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Rectangles of random colours on a smooth gradient (structure for the features to see)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2]) * 0.5
    for _ in range(6):
        y1, x1 = int(torch.randint(0, h - 40, (1,), generator=g)), int(torch.randint(0, w - 40, (1,), generator=g))
        hh, ww = int(torch.randint(20, h // 2, (1,), generator=g)), int(torch.randint(20, w // 2, (1,), generator=g))
        img[:, y1:y1 + hh, x1:x1 + ww] = torch.rand(3, 1, 1, generator=g)
    return img


def match_detections(ours: dict, ref: dict) -> None:
    """Every reference detection has one of ours with the same label, IoU > 0.99, score within 1e-3
    (osteonet.export.same_detections, the criterion the export checks with), and there are more than 5."""
    same_detections = importlib.import_module("osteonet.export").same_detections

    assert ours["boxes"].shape == ref["boxes"].shape, (ours["boxes"].shape, ref["boxes"].shape)
    assert ref["boxes"].shape[0] > 5
    assert same_detections(ref, ours), f"some of the {ref['boxes'].shape[0]} reference detections are unmatched"


def check_table_layout(table: dict, paper: str, paper_id: str) -> None:
    """The one table.json layout of every reproduction (osteonet/reproduce/table.py)."""
    assert table["osteonet_table"] == 1 and table["paper"] == paper and table["paper_id"] == paper_id
    assert {"title", "preset", "seed", "data", "config", "rows", "extras", "files", "timing"} <= set(table)
    assert table["rows"]
    for row in table["rows"]:
        assert row["paper_id"] == paper_id and isinstance(row["method"], str) and row["metrics"], row
        for name, cell in row["metrics"].items():
            assert {"value", "ci", "paper"} <= set(cell), (row["method"], name)
            if cell["ci"] is not None and cell["value"] is not None and None not in cell["ci"]:
                assert cell["ci"][0] - 1e-9 <= cell["value"] <= cell["ci"][1] + 1e-9, (row["method"], name, cell)
    assert any(cell["paper"] is not None for row in table["rows"] for cell in row["metrics"].values())
