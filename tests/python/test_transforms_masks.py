"""Transforms move masks (instance masks and label maps) with the image and its boxes; intensity
transforms (HU window, pixel mean, grey to RGB) against hand-worked values and osteonet.io.window."""

import numpy as np
import pytest
import torch

from osteonet.data import transforms as T
from osteonet.io import window


def scene(h=48, w=64):
    """An image with two rectangles, their boxes, instance masks and a label map (1, 2)."""
    img = torch.zeros(1, h, w)
    rects = [(5, 8, 20, 30), (30, 12, 50, 22)]  # x1 y1 x2 y2 (exclusive ends)
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    label = torch.zeros(h, w, dtype=torch.int64)
    for k, (x1, y1, x2, y2) in enumerate(rects):
        img[0, y1:y2, x1:x2] = 0.5 + 0.25 * k
        masks[k, y1:y2, x1:x2] = 1
        label[y1:y2, x1:x2] = k + 1
    boxes = torch.tensor(rects, dtype=torch.float32)
    return img, {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}, label


def bounds(m):
    ys, xs = torch.nonzero(m, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_flip_moves_masks_and_label_map():
    img, t, label = scene()
    _, out = T.RandomHorizontalFlip(p=1.0)(img, t)
    for k in range(2):
        assert bounds(out["masks"][k]) == out["boxes"][k].int().tolist()
    _, out = T.RandomHorizontalFlip(p=1.0)(img, {"masks": label})
    assert torch.equal(out["masks"], label.flip(-1))


def test_resize_keeps_labels_and_boxes_match_masks():
    img, t, label = scene()
    image, out = T.Resize((96, 128))(img, dict(t))
    assert image.shape == (1, 96, 128) and out["masks"].shape == (2, 96, 128) and out["masks"].dtype == torch.uint8
    for k in range(2):
        assert bounds(out["masks"][k]) == out["boxes"][k].int().tolist()
    _, out = T.Resize((24, 32))(img, {"masks": label})
    assert out["masks"].dtype == torch.int64 and set(out["masks"].unique().tolist()) == {0, 1, 2}


def test_rotation_by_90_turns_masks_with_boxes():
    img, t, label = scene(64, 64)
    image, out = T.rotate(img, dict(t), 90.0)
    for k in range(2):  # the box is the bounds of the rotated corners; at 90 degrees it is the mask's bounds
        assert bounds(out["masks"][k]) == out["boxes"][k].round().int().tolist()
    # the image and the label map turn alike
    _, lab = T.rotate(img, {"masks": label}, 90.0)
    assert torch.equal((image[0] > 0.6).long() + (image[0] > 0.1).long(), lab["masks"])
    assert torch.equal(lab["masks"], torch.rot90(label, 1, (0, 1)))


def test_translation_moves_and_drops():
    img, t, label = scene()
    image, out = T.translate(img, dict(t), 7, -3)
    assert torch.equal(image[:, 5:45, 7:], img[:, 8:48, :57])
    for k in range(2):
        assert bounds(out["masks"][k]) == out["boxes"][k].int().tolist()
    # shifted far right: the second rectangle leaves the image and is dropped with its mask and label
    image, out = T.translate(img, dict(t), 40, 0)
    assert out["boxes"].shape == (1, 4) and out["masks"].shape[0] == 1 and out["labels"].tolist() == [1]
    assert bounds(out["masks"][0]) == out["boxes"][0].int().tolist()
    _, lab = T.translate(img, {"masks": label}, -5, 4)
    assert torch.equal(lab["masks"][4:, :59], label[:44, 5:])
    torch.manual_seed(0)
    image, out = T.RandomTranslation(0.1, vertical=False)(img, dict(t))
    assert out["boxes"][:, [1, 3]].tolist() == t["boxes"][:, [1, 3]].tolist()  # horizontal only
    with pytest.raises(ValueError, match="max_shift"):
        T.RandomTranslation(1.5)


def test_mask_shape_must_match_image():
    img, t, _ = scene()
    t["masks"] = t["masks"][:, :10]
    with pytest.raises(ValueError, match=r"masks must be .* got \(2, 10, 64\)"):
        T.RandomHorizontalFlip(p=1.0)(img, t)


def test_intensity_transforms():
    hu = torch.tensor([[-1000.0, -500.0, 400.0, 1300.0, 3000.0]])
    out, tgt = T.HUWindow(400, 1800)(hu, {"x": 1})
    assert tgt == {"x": 1}
    assert out.tolist() == [[0.0, 0.0, 0.5, 1.0, 1.0]]
    assert np.allclose(out.numpy(), window(hu.numpy(), 400, 1800))
    with pytest.raises(ValueError, match="width must be positive"):
        T.HUWindow(0, 0)
    img = torch.arange(6.0).reshape(1, 2, 3)
    rgb, _ = T.GreyToRGB()(img, {})
    assert rgb.shape == (3, 2, 3) and torch.equal(rgb[2], img[0])
    with pytest.raises(ValueError, match="1 x H x W"):
        T.GreyToRGB()(torch.zeros(2, 4, 4), {})
    out, _ = T.SubtractPixelMean(img[0])(rgb, {})
    assert torch.equal(out, torch.zeros(3, 2, 3))
    with pytest.raises(ValueError, match="does not broadcast"):
        T.SubtractPixelMean(torch.zeros(5, 5))(rgb, {})
