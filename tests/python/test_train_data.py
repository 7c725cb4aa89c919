"""COCO-style detection data: reading, errors naming the file, transforms moving boxes with the image."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from osteonet.data import CocoDetection, collate, read_image
from osteonet.data import transforms as T


def make_coco(root, n=3, size=96, seed=0):
    """n images with one bright rectangle each (category 7) and a grey one (category 3)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n):
        img = (rng.random((size, size, 3)) * 40).astype(np.uint8)
        for k, (cat, val) in enumerate(((7, 250), (3, 150))):
            x, y = int(rng.integers(2, size // 2 - 20)) + k * size // 2, int(rng.integers(2, size - 30))
            w, h = int(rng.integers(12, 20)), int(rng.integers(12, 26))
            img[y:y + h, x:x + w] = val
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
        name = f"img{i}.png" if i % 2 == 0 else f"img{i}.jpg"
        Image.fromarray(img).save(root / name, quality=98)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    ann = {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "grey"}, {"id": 7, "name": "bright"}]}
    (root / "ann.json").write_text(json.dumps(ann))
    return ann


def test_reads_images_and_targets(tmp_path):
    ann = make_coco(tmp_path)
    ds = CocoDetection(str(tmp_path), str(tmp_path / "ann.json"))
    assert len(ds) == 3 and ds.num_classes == 3 and ds.categories == ["grey", "bright"]
    img, t = ds[0]
    assert img.shape == (3, 96, 96) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    x, y, w, h = ann["annotations"][0]["bbox"]
    assert t["boxes"][0].tolist() == [x, y, x + w, y + h]
    assert t["labels"].tolist() == [2, 1]  # category 7 -> label 2 (ids sorted), 3 -> 1
    assert int(t["image_id"]) == 1
    # the box holds the bright pixels
    assert img[:, y:y + h, x:x + w].mean() > 0.9
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == 2 and len(targets) == 2


def test_errors_name_the_file(tmp_path):
    ann = make_coco(tmp_path)
    with pytest.raises(ValueError, match="missing.json: no such file"):
        CocoDetection(str(tmp_path), str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        CocoDetection(str(tmp_path), str(tmp_path / "bad.json"))
    bad = json.loads(json.dumps(ann))
    bad["annotations"][1]["bbox"] = [90, 10, 20, 10]
    (tmp_path / "out.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"out.json: annotation 2: bbox lies outside .*img0.png"):
        CocoDetection(str(tmp_path), str(tmp_path / "out.json"))
    bad["annotations"][1]["bbox"] = [10, 10, 0, 10]
    (tmp_path / "deg.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="positive width"):
        CocoDetection(str(tmp_path), str(tmp_path / "deg.json"))
    (tmp_path / "img1.jpg").write_bytes(b"garbage")
    ds = CocoDetection(str(tmp_path), str(tmp_path / "ann.json"))
    with pytest.raises(ValueError, match=r"img1.jpg: not a readable PNG/JPEG"):
        ds[1]


def test_16_bit_grey_png(tmp_path):
    arr = (np.arange(64 * 32).reshape(32, 64) * 30).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    t = read_image(str(tmp_path / "g.png"))
    assert t.shape == (3, 32, 64)
    assert float(t[0, -1, -1]) == pytest.approx(arr[-1, -1] / 65535, abs=1e-6)


def _square(size=64, box=(10, 20, 30, 50)):
    img = torch.zeros(1, size, size)
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = 1
    return img, {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([1])}


def _bounds(img):
    ys, xs = torch.where(img[0] > 0.5)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_flip_and_resize_move_boxes():
    img, t = _square()
    f_img, f_t = T.RandomHorizontalFlip(p=1.0)(img, t)
    assert f_t["boxes"][0].tolist() == _bounds(f_img) == [34, 20, 54, 50]
    r_img, r_t = T.Resize((32, 128))(img, t)
    assert r_t["boxes"][0].tolist() == [20, 10, 60, 25]
    assert _bounds(r_img) == [20, 10, 60, 25]
    torch.manual_seed(0)
    s_img, s_t = T.RandomResize(0.5, 1.5)(img, t)
    scale = s_img.shape[-1] / 64
    torch.testing.assert_close(s_t["boxes"], t["boxes"] * scale)


def test_rotation_moves_boxes():
    img, t = _square()
    r_img, r_t = T.rotate(img, t, 90.0)  # a quarter turn of a square image is exact
    assert r_t["boxes"][0].round().tolist() == _bounds(r_img)
    img, t = _square(box=(20, 24, 40, 36))
    r_img, r_t = T.rotate(img, t, 10.0)
    b = r_t["boxes"][0]
    got = _bounds(r_img)  # rotated content lies inside the box, touching it within a pixel
    assert b[0] - 1 <= got[0] and got[2] <= b[2] + 1 and b[1] - 1 <= got[1] and got[3] <= b[3] + 1
    w0, h0 = 20, 12
    th = math.radians(10)
    assert float(b[2] - b[0]) == pytest.approx(w0 * math.cos(th) + h0 * math.sin(th), abs=1e-4)
    # a box rotated out of the image is dropped with its label
    img, t = _square(box=(0, 0, 4, 4))
    _, r_t = T.rotate(img, t, 45.0)
    assert r_t["boxes"].shape == (0, 4) and r_t["labels"].shape == (0,)


def test_color_jitter_keeps_boxes_and_range():
    img, t = _square()
    torch.manual_seed(1)
    j_img, j_t = T.Compose([T.ColorJitter(0.5, 0.5)])(img * 0.5 + 0.25, t)
    assert torch.equal(j_t["boxes"], t["boxes"]) and j_img.min() >= 0 and j_img.max() <= 1


def test_dicom_images_in_a_coco_set(tmp_path):
    """A COCO set over DICOM files: HU through the rescale tags and the bone window, equal to the PNG
    osteonet's generator writes of the same slice (hu_to_png8), within 8-bit rounding."""
    from osteonet.synth.writers import hu_to_png8, write_ct_dicom

    hu = np.full((64, 80), -1000, np.int16)
    hu[20:40, 30:50] = 700  # bone
    hu[5:15, 5:15] = 0
    write_ct_dicom(str(tmp_path / "s.dcm"), hu, pixel_spacing=0.7, patient_id="P1", study_uid="1.2", series_uid="1.2.3",
                   sop_uid="1.2.3.4", instance=1, z_mm=0.0, kvp=120)
    ann = {"images": [{"id": 1, "file_name": "s.dcm", "width": 80, "height": 64}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20], "area": 400, "iscrowd": 0}],
           "categories": [{"id": 1, "name": "vertebra"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    img, t = CocoDetection(str(tmp_path), str(tmp_path / "ann.json"))[0]
    assert img.shape == (3, 64, 80)
    assert torch.allclose(img[0], torch.from_numpy(hu_to_png8(hu) / 255.0).float(), atol=1 / 255)
    assert float(img[0, 25, 35]) == pytest.approx((700 - (400 - 900)) / 1800)
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(ValueError, match="bad.dcm"):
        read_image(str(tmp_path / "bad.dcm"))
