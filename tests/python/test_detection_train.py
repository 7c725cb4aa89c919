"""Training: losses, target errors, and a DS detector overfitting a handful of images (mAP@0.5 = 1.0)."""

import pytest
import torch

import osteonet
from osteonet.detection import box_iou


def average_precision_50(dets, targets, num_classes):
    """mAP@0.5 (VOC-style all-point AP per class, averaged over classes present in the targets)."""
    aps = []
    for c in range(1, num_classes):
        n_gt = sum(int((t["labels"] == c).sum()) for t in targets)
        if n_gt == 0:
            continue
        records = []
        for i, d in enumerate(dets):
            for k in torch.where(d["labels"] == c)[0].tolist():
                records.append((float(d["scores"][k]), i, k))
        records.sort(key=lambda r: -r[0])
        used = [torch.zeros(int((t["labels"] == c).sum()), dtype=torch.bool) for t in targets]
        tp = []
        for _, i, k in records:
            gt = targets[i]["boxes"][targets[i]["labels"] == c]
            if gt.numel() == 0:
                tp.append(0)
                continue
            iou = box_iou(dets[i]["boxes"][k:k + 1], gt)[0]
            j = int(iou.argmax())
            if iou[j] >= 0.5 and not used[i][j]:
                used[i][j] = True
                tp.append(1)
            else:
                tp.append(0)
        tp_t = torch.tensor(tp, dtype=torch.float64)
        ctp = tp_t.cumsum(0)
        recall = ctp / n_gt
        precision = ctp / torch.arange(1, len(tp) + 1, dtype=torch.float64)
        ap, prev_r = 0.0, 0.0
        for r_idx in range(len(tp)):
            p_interp = float(precision[r_idx:].max())
            ap += (float(recall[r_idx]) - prev_r) * p_interp
            prev_r = float(recall[r_idx])
        aps.append(ap)
    return sum(aps) / len(aps)


def _toy_data(n=3, size=128, seed=0):
    """Bright rectangles (class 1) and dark discs' boxes (class 2) on noise."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i in range(n):
        img = torch.rand(3, size, size, generator=g) * 0.2
        boxes, labels = [], []
        for c in (1, 2):
            x1, y1 = torch.randint(4, size // 2 - 8, (2,), generator=g).tolist()
            x1 += (c - 1) * size // 2 - (c - 1) * 4
            w, h = torch.randint(28, 52, (2,), generator=g).tolist()
            x2, y2 = min(x1 + w, size - 1), min(y1 + h, size - 1)
            img[:, y1:y2, x1:x2] = 0.9 if c == 1 else 0.5
            if c == 2:
                img[0, y1:y2, x1:x2] = 0.1
            boxes.append([float(x1), float(y1), float(x2), float(y2)])
            labels.append(c)
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)})
    return images, targets


def test_training_returns_torchvision_losses_and_gradients():
    model = osteonet.create_model("fasterrcnn", backbone="mobilenet_v3_large", attention="ds", num_classes=3,
                                  min_size=128, max_size=128)
    images, targets = _toy_data(2)
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None
    assert model.backbone.body.attn_last.state_dict()  # DS module present and registered


@pytest.mark.parametrize("bad,msg", [
    ([10.0, 10.0, 10.0, 30.0], "degenerate"),
    ([10.0, 10.0, 200.0, 30.0], "outside the image"),
    ([float("nan"), 10.0, 20.0, 30.0], "finite"),
])
def test_bad_boxes_raise_one_clear_value_error(bad, msg):
    model = osteonet.create_model("fasterrcnn", backbone="mobilenet_v3_large", num_classes=3, min_size=64, max_size=64)
    images, targets = _toy_data(2, size=64)
    targets[1]["boxes"][1] = torch.tensor(bad)
    with pytest.raises(ValueError, match=rf"target 1, box 1 .*{msg}"):
        model(images, targets)


def test_bad_labels_raise_value_error():
    model = osteonet.create_model("fasterrcnn", backbone="mobilenet_v3_large", num_classes=3, min_size=64, max_size=64)
    images, targets = _toy_data(2, size=64)
    targets[0]["labels"][0] = 3
    with pytest.raises(ValueError, match=r"target 0, box 0 .*label must be in 1..2"):
        model(images, targets)


def test_unknown_option_and_backbone_are_reported():
    with pytest.raises(ValueError, match="did you mean 'box_score_thresh'"):
        osteonet.create_model("fasterrcnn", box_score_tresh=0.1)
    with pytest.raises(ValueError, match="did you mean 'resnet50'"):
        osteonet.create_model("fasterrcnn", backbone="resnet5O")


def test_ds_detector_overfits_to_map_1():
    torch.manual_seed(0)
    model = osteonet.create_model("fasterrcnn", backbone="mobilenet_v3_large", attention="ds", num_classes=3,
                                  min_size=128, max_size=128, rpn_batch_size_per_image=64,
                                  box_batch_size_per_image=64, rpn_score_thresh=0.0)
    images, targets = _toy_data(2)
    # 60 Adam steps through the training engine: one batch of both images per epoch.
    opt = osteonet.train.create_optimizer("adam", model, lr=1e-3)
    trainer = osteonet.train.Trainer(model, opt, epochs=60, progress=False, seed=None)
    history = trainer.fit([(images, targets)], osteonet.train.detection_step)
    assert len(history) == 60 and history[-1]["train_loss"] < history[0]["train_loss"]
    model.eval()
    # From scratch, 60 steps leave BatchNorm's running statistics (momentum 0.01 in MobileNetV3) far
    # from the batch statistics the model trained with; evaluate with batch statistics (the BN
    # submodules back in train mode, the detector itself in eval) to test what was learned.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()
    with torch.no_grad():
        dets = model(images)
    assert average_precision_50(dets, targets, 3) == pytest.approx(1.0)


def test_trains_under_autocast_with_roi_align_in_float32():
    """Mixed precision (the Trainer's amp: bfloat16 autocast on the CPU, float16 on CUDA): the detector's
    losses are finite and RoIAlign runs in float32 on reduced-precision maps (torchvision's autocast rule),
    equal to RoIAlign of the same maps cast to float32."""
    from osteonet.detection import roi_align

    torch.manual_seed(0)
    feats = torch.randn(1, 8, 32, 32).to(torch.bfloat16)
    rois = torch.tensor([[0.0, 3.3, 4.7, 20.1, 28.9], [0.0, 0.0, 0.0, 31.0, 31.0]])
    got = roi_align(feats, rois, (7, 7), 1.0, 2, True)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, roi_align(feats.float(), rois, (7, 7), 1.0, 2, True).to(torch.bfloat16))
    model = osteonet.create_model("fasterrcnn", backbone="resnet18", num_classes=2, min_size=128, max_size=128).train()
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 70.0, 90.0]]), "labels": torch.tensor([1])} for _ in images]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(v.float() for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("backbone,attention", [("dsnet_resnet50", None), ("resnet50", "se"), ("mobilenet_v3_large", "eca")])
def test_attention_modules_train_whatever_trainable_backbone_layers(backbone, attention):
    """trainable_backbone_layers freezes early stages of a pretrained body; attention modules are new (never in
    pretrained weights) and always train, on ResNets (attn_stem, attn_last, blocks' attn) as on MobileNets."""
    kw = {"attention": attention} if attention else {}
    m = osteonet.create_model("fasterrcnn", backbone=backbone, num_classes=2, min_size=128, max_size=128,
                              trainable_backbone_layers=1, **kw)
    attn = {n: p.requires_grad for n, p in m.named_parameters() if n.startswith("backbone.body.") and ".attn" in n
            or n.startswith("backbone.body.attn")}
    assert attn and all(attn.values()), [n for n, g in attn.items() if not g][:3]
    body = {n: p.requires_grad for n, p in m.named_parameters() if n.startswith("backbone.body.") and n not in attn}
    assert any(body.values()) and not all(body.values())  # the stage freezing itself still applies
