"""Eval-mode parity with torchvision 0.14's Faster R-CNN (state dict loaded strictly)."""

import pytest
import torch
import torchvision

import osteonet
from conftest import match_detections as _match, randomise_detector_ as _randomise, scene as _scene


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
