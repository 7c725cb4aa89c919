"""Eval-mode parity with torchvision 0.14's Faster R-CNN (state dict loaded strictly)."""

import pytest
import torch
import torchvision

import osteonet
from osteonet.detection import box_iou


def _randomise(model, seed):
    """Random BN statistics and peaked heads, so that the models detect something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        p = model.roi_heads.box_predictor
        p.cls_score.weight.mul_(20)
        p.cls_score.bias.copy_(torch.randn(p.cls_score.bias.shape, generator=g) * 2)
        p.bbox_pred.weight.mul_(5)
        model.rpn.head.cls_logits.weight.mul_(20)


def _match(ours, ref):
    assert ours["boxes"].shape == ref["boxes"].shape, (ours["boxes"].shape, ref["boxes"].shape)
    assert ref["boxes"].shape[0] > 5
    iou = box_iou(ref["boxes"], ours["boxes"])
    same_label = ref["labels"][:, None] == ours["labels"][None, :]
    close_score = (ref["scores"][:, None] - ours["scores"][None, :]).abs() < 1e-3
    ok = ((iou > 0.99) & same_label & close_score).any(1)
    assert ok.all(), f"{int((~ok).sum())} of {ok.numel()} torchvision detections unmatched"


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_eval_parity_with_torchvision(name):
    torch.manual_seed(0)
    kwargs = dict(min_size=320, max_size=480)
    ref = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, **kwargs)
    _randomise(ref, 0)
    ref.eval()
    ours = osteonet.create_model(name, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 300, 400, generator=g), torch.rand(3, 350, 270, generator=g)]
    with torch.no_grad():
        a, b = ours(images), ref(images)
    for o, r in zip(a, b):
        _match(o, r)


def test_state_dict_keys_equal_torchvision():
    ref = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    ours = osteonet.create_model("fasterrcnn_resnet50_fpn")
    assert set(ours.state_dict()) == set(ref.state_dict())
    ref = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    ours = osteonet.create_model("fasterrcnn_mobilenet_v3_large_fpn")
    assert set(ours.state_dict()) == set(ref.state_dict())
