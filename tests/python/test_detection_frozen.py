"""torchvision's pretrained-detector layout: FrozenBatchNorm2d body and trainable_backbone_layers.

torchvision builds FrozenBatchNorm2d only when weights are requested; the reference here is built the
same way from its parts (resnet_fpn_backbone(norm_layer=FrozenBatchNorm2d) + FasterRCNN, and
mobilenet_backbone for the freezing rule of MobileNets), without downloading anything.
"""

import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

import osteonet
from test_detection_parity import _match, _scene


def _frozen_reference(trainable_layers, **kwargs):
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=trainable_layers)
    return FasterRCNN(backbone, num_classes=91, **kwargs)


def _randomise_frozen(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.numel()
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        p = model.roi_heads.box_predictor
        p.cls_score.weight.mul_(20)
        p.cls_score.bias.copy_(torch.randn(p.cls_score.bias.shape, generator=g) * 2)
        model.rpn.head.cls_logits.weight.mul_(20)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_frozen_resnet50_fpn_loads_strictly_and_matches_torchvision():
    torch.manual_seed(0)
    kwargs = dict(min_size=320, max_size=480)
    ref = _frozen_reference(3, **kwargs)
    _randomise_frozen(ref, 0)
    ref.eval()
    ours = osteonet.create_model("fasterrcnn_resnet50_fpn", frozen_bn=True, **kwargs)
    sd = ref.state_dict()
    assert not any(k.endswith("num_batches_tracked") for k in sd if k.startswith("backbone.body"))
    assert set(ours.state_dict()) == set(sd)
    ours.load_state_dict(sd, strict=True)
    ours.eval()
    # Same parameters (FrozenBatchNorm2d's four tensors are buffers), same ones trainable.
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in ref.named_parameters()}
    assert {n for n, _ in ours.named_buffers()} == {n for n, _ in ref.named_buffers()}
    assert _trainable(ours) == _trainable(ref)
    g = torch.Generator().manual_seed(1)
    images = [_scene(300, 400, g), _scene(350, 270, g)]
    with torch.no_grad():
        a, b = ours(images), ref(images)
    for o, r in zip(a, b):
        _match(o, r)
    # Frozen statistics: a training step leaves every FrozenBatchNorm2d buffer as it was.
    before = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("backbone.body")}
    ours.train()
    losses = ours(images[:1], [{"boxes": torch.tensor([[10.0, 20, 100, 120]]), "labels": torch.tensor([1])}])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items() if k in before)
    params = dict(ours.named_parameters())
    assert params["backbone.body.layer1.0.conv1.weight"].grad is None
    assert params["backbone.body.layer4.0.conv1.weight"].grad is not None

@pytest.mark.parametrize("layers", [0, 1, 3, 5])
def test_trainable_backbone_layers_resnet(layers):
    ref = _frozen_reference(layers)
    ours = osteonet.create_model("fasterrcnn_resnet50_fpn", frozen_bn=True, trainable_backbone_layers=layers)
    assert _trainable(ours) == _trainable(ref)


def test_trainable_backbone_layers_default_and_bn_variant():
    # Without frozen_bn (torchvision without weights): BatchNorm2d and everything trainable.
    ref = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    ours = osteonet.create_model("fasterrcnn_resnet50_fpn")
    assert _trainable(ours) == _trainable(ref)
    # frozen_bn defaults to 3 trainable layers, like torchvision's pretrained builder.
    assert _trainable(osteonet.create_model("fasterrcnn_resnet50_fpn", frozen_bn=True)) == _trainable(_frozen_reference(3))
    # BatchNorm2d body with some layers frozen: requires_grad as torchvision's extractor sets it.
    ours = osteonet.create_model("fasterrcnn_resnet50_fpn", trainable_backbone_layers=2)
    ref = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=torch.nn.BatchNorm2d,
                                         trainable_layers=2), num_classes=91)
    assert _trainable(ours) == _trainable(ref)


@pytest.mark.parametrize("layers", [0, 2, 3, 6])
def test_trainable_backbone_layers_mobilenet(layers):
    bb = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=layers,
                            norm_layer=torch.nn.BatchNorm2d)
    ours = osteonet.create_model("fasterrcnn_mobilenet_v3_large_fpn", trainable_backbone_layers=layers)
    ref = {"backbone." + n for n, p in bb.named_parameters() if p.requires_grad}
    mine = {n for n in _trainable(ours) if n.startswith("backbone.")}
    assert mine == ref


@pytest.mark.parametrize("name,value", [("fasterrcnn_resnet50_fpn", 6), ("fasterrcnn_resnet50_fpn", -1),
                                        ("fasterrcnn_mobilenet_v3_large_fpn", 7)])
def test_trainable_backbone_layers_range(name, value):
    with pytest.raises(ValueError, match="trainable_backbone_layers must be in"):
        osteonet.create_model(name, trainable_backbone_layers=value)


def test_frozen_bn_only_for_resnets():
    with pytest.raises(ValueError, match="frozen_bn"):
        osteonet.create_model("fasterrcnn_mobilenet_v3_large_fpn", frozen_bn=True)
    with pytest.raises(ValueError, match="frozen_bn"):
        osteonet.create_model("fasterrcnn", backbone="vgg16", frozen_bn=True)
