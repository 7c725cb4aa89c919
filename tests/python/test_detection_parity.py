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
        model.rpn.head.cls_logits.weight.mul_(20)


def _scene(h, w, g):
    """Rectangles of random colours on a smooth gradient (structure for the features to see)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2]) * 0.5
    for _ in range(6):
        y1, x1 = int(torch.randint(0, h - 40, (1,), generator=g)), int(torch.randint(0, w - 40, (1,), generator=g))
        hh, ww = int(torch.randint(20, h // 2, (1,), generator=g)), int(torch.randint(20, w // 2, (1,), generator=g))
        img[:, y1:y1 + hh, x1:x1 + ww] = torch.rand(3, 1, 1, generator=g)
    return img


def _match(ours, ref):
    assert ours["boxes"].shape == ref["boxes"].shape, (ours["boxes"].shape, ref["boxes"].shape)
    assert ref["boxes"].shape[0] > 5
    iou = box_iou(ref["boxes"], ours["boxes"])
    same_label = ref["labels"][:, None] == ours["labels"][None, :]
    close_score = (ref["scores"][:, None] - ours["scores"][None, :]).abs() < 1e-3
    ok = ((iou > 0.99) & same_label & close_score).any(1)
    assert ok.all(), f"{int((~ok).sum())} of {ok.numel()} torchvision detections unmatched"


# The random-weight MobileNetV3 detector scores thousands of boxes almost equally (0.139..0.145), so
# float32 rounding (RoIAlign sums in another order) can reorder near-ties at NMS and the top-100 cut;
# in float64 the rounding is far below the score gaps and the comparison is exact in substance.
@pytest.mark.parametrize("name,dtype", [("fasterrcnn_resnet50_fpn", torch.float32),
                                        ("fasterrcnn_resnet50_fpn", torch.float64),
                                        ("fasterrcnn_mobilenet_v3_large_fpn", torch.float64)])
def test_eval_parity_with_torchvision(name, dtype):
    torch.manual_seed(0)
    kwargs = dict(min_size=320, max_size=480)
    ref = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, **kwargs)
    _randomise(ref, 0)
    ref.eval()
    ours = osteonet.create_model(name, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.to(dtype)
    ours.to(dtype)
    g = torch.Generator().manual_seed(1)
    images = [_scene(300, 400, g).to(dtype), _scene(350, 270, g).to(dtype)]
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
