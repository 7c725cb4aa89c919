"""Detection ops against torchvision.ops and torchvision's detection parts (values and gradients)."""

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from osteonet import _core
from osteonet import detection as det


def random_boxes(n, size=200.0, gen=None):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("n,thresh", [(0, 0.5), (1, 0.5), (50, 0.3), (700, 0.5), (1500, 0.7)])
def test_nms_matches_torchvision(n, thresh):
    g = torch.Generator().manual_seed(n)
    boxes, scores = random_boxes(n, gen=g), torch.rand(n, generator=g)
    assert torch.equal(det.nms(boxes, scores, thresh), torchvision.ops.nms(boxes, scores, thresh))


@pytest.mark.parametrize("n", [30, 800, 2500])  # small: coordinate trick; large (> 4000 coords): per class
def test_batched_nms_matches_torchvision(n):
    g = torch.Generator().manual_seed(n)
    boxes, scores = random_boxes(n, gen=g), torch.rand(n, generator=g)
    idxs = torch.randint(0, 5, (n,), generator=g)
    assert torch.equal(det.batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, False), (0, True), (3, True)])
def test_roi_align_values_and_gradients(sampling_ratio, aligned):
    g = torch.Generator().manual_seed(sampling_ratio + 7)
    x = torch.randn(2, 5, 23, 31, generator=g, dtype=torch.float64)
    boxes = random_boxes(40, size=160.0, gen=g).double()
    boxes[:3] = torch.tensor([[-20.0, -10, 5, 3], [150, 90, 190, 130], [3.0, 3, 3.2, 3.1]], dtype=torch.float64)
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).double(), boxes], 1)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = det.roi_align(x1, rois, (7, 6), 0.125, sampling_ratio, aligned)
    ref = torchvision.ops.roi_align(x2, rois, (7, 6), 0.125, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-9)


def test_roi_align_float32_close():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 50, 60, generator=g)
    rois = torch.cat([torch.zeros(100, 1), random_boxes(100, size=200.0, gen=g)], 1)
    torch.testing.assert_close(det.roi_align(x, rois, 7, 0.25, 2), torchvision.ops.roi_align(x, rois, 7, 0.25, 2),
                               rtol=1e-5, atol=1e-5)


def test_box_coder_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    props, gt = random_boxes(64, gen=g), random_boxes(64, gen=g)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        tv = tv_utils.BoxCoder(weights)
        torch.testing.assert_close(_core.box_encode(gt, props, weights), tv.encode_single(gt, props))
        codes = torch.randn(64, 12, generator=g) * 3
        torch.testing.assert_close(_core.box_decode(codes, props, weights), tv.decode_single(codes, props))


def test_anchors_match_torchvision():
    sizes, ratios = ((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3
    feats = [torch.zeros(2, 8, 25, 34), torch.zeros(2, 8, 13, 17), torch.zeros(2, 8, 7, 9)]
    images = ImageList(torch.zeros(2, 3, 100, 136), [(100, 130), (90, 136)])
    ref = AnchorGenerator(sizes, ratios)(images, feats)
    ours = _core.grid_anchors([list(s) for s in sizes], [list(r) for r in ratios], (100, 136), feats)
    assert torch.equal(ours, ref[0]) and torch.equal(ours, ref[1])


def test_multiscale_roi_align_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    feats = {str(i): torch.randn(2, 4, 64 // 2**i, 80 // 2**i, generator=g) for i in range(4)}
    boxes = [random_boxes(30, size=250.0, gen=g), random_boxes(20, size=250.0, gen=g) * 1.2]
    sizes = [(256, 320), (250, 300)]
    ref = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(feats, boxes, sizes)
    ours = _core.multiscale_roi_align(list(feats.values()), boxes, sizes, 7, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, True)])
def test_roi_align_many_rois_batches_and_second_order(sampling_ratio, aligned):
    # The CPU kernel: many RoIs over 3 images (some outside the map, some tiny), values and gradients
    # against torchvision in float64; second derivatives (torchvision has none) by finite differences.
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 8, 19, 27, generator=g, dtype=torch.float64)
    boxes = random_boxes(300, size=240.0, gen=g).double() - 20
    rois = torch.cat([torch.randint(0, 3, (300, 1), generator=g).double(), boxes], 1)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = det.roi_align(x1, rois, (4, 5), 0.1, sampling_ratio, aligned)
    ref = torchvision.ops.roi_align(x2, rois, (4, 5), 0.1, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-9)
    small = x[:, :2, :9, :11].clone().requires_grad_()
    r = rois[:6].clone()
    r[:, 1:] = r[:, 1:] * 0.4
    assert torch.autograd.gradgradcheck(lambda t: det.roi_align(t, r, (3, 2), 0.1, sampling_ratio, aligned), (small,))
