"""U-Net / U-Net++: shapes for odd sizes, gradients, losses against hand-worked references, golden
outputs, sliding-window equality, a tiny overfit to Dice > 0.95, matting, errors."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from osteonet import metrics
from osteonet.segmentation import (balanced_class_weights, combined_loss, create_segmenter, cross_entropy_loss, dice_loss,
                                   keep_largest_component, mat_region, predict_labels, segmentation_step,
                                   sliding_window_inference)
from test_models_reference import deterministic_fill_

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "segmentation.json")
SMALL = {"unet": dict(base_channels=8, depth=3), "unet_plusplus": dict(base_channels=8, depth=3),
         "unet_resnet18": dict(encoder="resnet18"), "unet_vgg16": dict(encoder="vgg16")}


def build(case, **kw):
    opts = dict(SMALL[case])
    name = "unet" if case.startswith("unet_") and case != "unet_plusplus" else case
    return create_segmenter(name, **{**dict(in_chans=1, num_classes=3), **kw, **opts})


@pytest.mark.parametrize("case", sorted(SMALL))
@pytest.mark.parametrize("size", [(64, 64), (67, 53), (45, 90)])
def test_output_has_input_size_for_odd_sizes(case, size):
    m = build(case).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 1, *size))
    assert y.shape == (2, 3, *size)


@pytest.mark.parametrize("case", sorted(SMALL))
def test_every_parameter_gets_a_gradient(case):
    m = build(case).train()
    loss = combined_loss(m(torch.randn(2, 1, 48, 40)), torch.randint(0, 3, (2, 48, 40)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_gradcheck_double():
    m = create_segmenter("unet_plusplus", in_chans=1, num_classes=2, base_channels=2, depth=2).double().eval()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,), eps=1e-6, atol=1e-5)


def test_gradcheck_classic_unet_double():
    m = create_segmenter("unet", in_chans=1, num_classes=2, base_channels=2, depth=2).double().eval()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("loss", ["dice", "ce", "combined"])
def test_loss_gradients_match_finite_differences(loss):
    fn = {"dice": dice_loss, "ce": cross_entropy_loss, "combined": lambda l, t: combined_loss(l, t, 0.7, 1.3)}[loss]
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    assert torch.autograd.gradcheck(lambda l: fn(l, target), (logits,), eps=1e-6, atol=1e-6)


def test_deep_supervision_heads():
    m = create_segmenter("unet_plusplus", in_chans=1, num_classes=2, base_channels=4, depth=3, deep_supervision=True)
    outs = m.train()(torch.randn(1, 1, 32, 32))
    assert isinstance(outs, list) and len(outs) == 3
    m.eval()
    with torch.no_grad():
        mean = m(torch.randn(1, 1, 32, 32))
    assert mean.shape == (1, 2, 32, 32)


def test_losses_against_hand_references():
    logits = torch.randn(2, 3, 5, 4)
    target = torch.randint(0, 3, (2, 5, 4))
    p = logits.softmax(1)
    g = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    inter, denom = (p * g).sum((0, 2, 3)), p.sum((0, 2, 3)) + g.sum((0, 2, 3))
    ref = 1 - ((2 * inter + 1e-5) / (denom + 1e-5)).mean()
    assert torch.allclose(dice_loss(logits, target), ref, atol=1e-6)
    assert torch.allclose(cross_entropy_loss(logits, target), F.cross_entropy(logits, target), atol=1e-6)
    assert torch.allclose(combined_loss(logits, target, 0.5, 2.0), 0.5 * F.cross_entropy(logits, target) + 2 * ref, atol=1e-6)
    b = torch.randn(2, 1, 5, 4)
    bt = (torch.rand(2, 5, 4) > 0.5).float()
    assert torch.allclose(cross_entropy_loss(b, bt), F.binary_cross_entropy_with_logits(b, bt.unsqueeze(1)))
    perfect = torch.full((1, 2, 3, 3), -20.0)
    perfect[0, 1] = 20.0
    assert dice_loss(perfect, torch.ones(1, 3, 3, dtype=torch.long), include_background=False) < 1e-4


def test_loss_errors():
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 2\]"):
        dice_loss(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 5))
    with pytest.raises(TypeError, match="integer class indices"):
        dice_loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="N x H x W"):
        cross_entropy_loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 5, 4, dtype=torch.long))


def golden_value(case):
    m = build(case).eval()
    deterministic_fill_(m)
    h = torch.arange(48.0).view(1, 1, 48, 1)
    w = torch.arange(40.0).view(1, 1, 1, 40)
    x = torch.sin(0.21 * h + 0.13 * w) + torch.cos(0.05 * h * w / 8)
    with torch.no_grad():
        y = m(x)
    return [float(y.mean()), float(y.std()), float(y[0, :, 10, 7].sum()), float(y[0, 2, 40, 30])]


@pytest.mark.parametrize("case", sorted(SMALL))
def test_golden_outputs(case):
    with open(GOLDEN) as f:
        expected = json.load(f)[case]
    got = golden_value(case)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_sliding_window_equals_whole_image_where_both_fit():
    m = build("unet").eval()
    x = torch.randn(1, 1, 64, 48)
    with torch.no_grad():
        whole = m(x)
    assert torch.equal(sliding_window_inference(m, x, window=(64, 48)), whole)
    assert torch.equal(sliding_window_inference(m, x, window=(128, 128)), whole)
    # A pointwise model (1x1 convolution) gives the same everywhere, so any tiling blends to it.
    point = torch.nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        for blend in ("constant", "gaussian"):
            tiled = sliding_window_inference(point, x, window=(20, 16), overlap=0.5, blend=blend)
            assert torch.allclose(tiled, point(x), atol=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(m, x, window=(32, 32), overlap=1.0)


@pytest.mark.parametrize("name,opts", [("unet", dict(base_channels=8, depth=2)),
                                       ("unet_plusplus", dict(base_channels=8, depth=2, deep_supervision=True))])
def test_tiny_overfit_reaches_dice_095(name, opts):
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    masks, images = [], []
    for cy, cx, r in [(10, 12, 6), (20, 18, 8), (16, 8, 5), (8, 22, 7)]:
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).long()
        masks.append(disk)
        images.append(disk.float() * 0.8 + 0.1 * torch.randn(32, 32))
    x, y = torch.stack(images).unsqueeze(1), torch.stack(masks)
    m = create_segmenter(name, in_chans=1, num_classes=2, **opts)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    step = segmentation_step()  # averages the deep-supervision heads' losses
    for _ in range(60):
        opt.zero_grad()
        loss = step(m, (x, y))
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        pred = m(x).argmax(1)
    inter = ((pred == 1) & (y == 1)).sum().item()
    d = 2 * inter / ((pred == 1).sum().item() + (y == 1).sum().item())
    assert d > 0.95, d
    assert float(metrics.dice(pred.numpy(), y.numpy(), num_classes=2, reduction="mean")) > 0.95


def test_segmentation_step_averages_heads_and_predict_labels_resizes():
    m = create_segmenter("unet_plusplus", in_chans=1, num_classes=3, base_channels=4, depth=3, deep_supervision=True)
    x, y = torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    torch.manual_seed(1)
    heads = m.train()(x)
    expected = sum(combined_loss(h, y) for h in heads) / len(heads)
    torch.manual_seed(1)
    assert torch.allclose(segmentation_step()(m, (x, y)), expected, atol=1e-6)
    m.eval()
    with torch.no_grad():
        logits = m(x)
    assert torch.equal(predict_labels(m, x, batch_size=1), logits.argmax(1))
    up = predict_labels(m, x, out_size=(40, 40))
    assert up.shape == (2, 40, 40) and up.dtype == torch.int64
    assert torch.equal(up, F.interpolate(logits, size=(40, 40), mode="bilinear", align_corners=False).argmax(1))
    assert not m.training
    with pytest.raises(ValueError, match="N x C x H x W"):
        predict_labels(m, torch.randn(16, 16))


def test_class_weighted_step_and_balanced_weights():
    y = torch.zeros(1, 10, 10, dtype=torch.long)
    y[0, :1] = 1  # 10 pixels of class 1, 90 of class 0, none of class 2
    w = balanced_class_weights(y, 3)
    raw = [0.9 ** -0.5, 0.1 ** -0.5, 0.1 ** -0.5]  # the absent class takes the largest weight
    assert w == pytest.approx([v / (sum(raw) / 3) for v in raw])
    logits = torch.randn(1, 3, 10, 10)
    m = lambda x: logits  # a "model" returning fixed logits
    got = segmentation_step(0.5, 2.0, class_weights=w)(m, (None, y))
    ref = 0.5 * F.cross_entropy(logits, y, weight=torch.tensor(w)) + 2.0 * dice_loss(logits, y)
    assert torch.allclose(got, ref, atol=1e-6)
    assert not torch.allclose(got, segmentation_step(0.5, 2.0)(m, (None, y)))
    with pytest.raises(ValueError, match="one class weight per class, got 2 weights for 3 classes"):
        segmentation_step(class_weights=[1.0, 1.0])(m, (None, y))


def test_keep_largest_component():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[1:4, 1:4] = True
    mask[6:10, 5:10] = True
    mask[0, 9] = True
    kept = keep_largest_component(mask)
    assert int(kept.sum()) == 20 and bool(kept[7, 7]) and not bool(kept[2, 2])
    assert not keep_largest_component(torch.zeros(4, 4, dtype=torch.bool)).any()


def test_matting_crops_and_masks():
    img = torch.arange(100.0).view(1, 10, 10)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:6, 3:8] = True
    out = mat_region(img, mask, size=8, margin=0.0)
    assert out.shape == (1, 8, 8)
    exact = mat_region(img, mask, size=4, margin=0.0)
    assert exact.min() >= 23 and exact.max() <= 57  # values from inside the region only
    with pytest.raises(ValueError, match="mask is empty"):
        mat_region(img, torch.zeros(10, 10, dtype=torch.bool))


def test_errors_one_line():
    with pytest.raises(ValueError, match="did you mean 'unet'"):
        create_segmenter("unte")
    with pytest.raises(ValueError, match="did you mean 'base_channels'"):
        create_segmenter("unet", base_chanels=8)
    m = build("unet")
    with pytest.raises(ValueError, match="expected 1 input channels, got 3"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(32, 32))


if __name__ == "__main__":  # regenerate: python tests/python/test_segmentation.py
    with open(GOLDEN, "w") as f:
        json.dump({c: golden_value(c) for c in sorted(SMALL)}, f, indent=1)
    print("wrote", GOLDEN)
