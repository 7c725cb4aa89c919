"""Seed 002's pipeline: aggregators on hand-made sequences, the LSTM against torch.nn.LSTM with the same
weights, padding invariance, gradient checks, the slice encoder's head and frozen BatchNorm, a tiny
two-stage training run, reorientation to sagittal, and occlusion on images with a known answer."""

import copy
import os

import numpy as np
import pytest
import torch
from torch import nn

import osteonet
from osteonet import sequence as seq


class RefLstmAggregator(nn.Module):
    """Seed 002's CNN/LSTM aggregator in plain PyTorch: LSTM(32, 256) -> dropout 0.2 -> FC -> sigmoid."""

    def __init__(self, input_size=32, hidden_size=256):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(hidden_size, 1)

    def forward(self, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return torch.sigmoid(self.fc(self.dropout(h[-1]))).squeeze(1)


# ---- rule aggregators ----------------------------------------------------------------------------
def test_rule_aggregators_exact_values_and_padding():
    p = torch.tensor([[0.1, 0.7, 0.5, 0.2], [0.3, 0.4, 0.99, 0.99]], dtype=torch.float64)
    lengths = torch.tensor([4, 2])
    assert seq.create_aggregator("max")(p, lengths).tolist() == pytest.approx([0.7, 0.4])
    assert seq.create_aggregator("mean")(p, lengths).tolist() == pytest.approx([0.375, 0.35])
    # 0.5 ties with the threshold and votes positive (2 of 4); the scan at exactly 0.5 is positive.
    assert seq.create_aggregator("vote")(p, lengths).tolist() == pytest.approx([0.5, 0.0])
    assert seq.create_aggregator("vote", threshold=0.35)(p, lengths).tolist() == pytest.approx([0.5, 0.5])
    # Padding is never read (NaN there changes nothing); a NaN probability in a valid slice gives a NaN scan,
    # with lengths as without (a comparison would have voted it "no fracture").
    padded = p.clone()
    padded[1, 2:] = float("nan")
    for name, want in (("mean", [0.375, 0.35]), ("vote", [0.5, 0.0]), ("max", [0.7, 0.4])):
        assert seq.create_aggregator(name)(padded, lengths).tolist() == pytest.approx(want)
    bad = p.clone()
    bad[0, 1] = float("nan")
    for name in ("mean", "vote"):
        for lens in (lengths, None):
            out = seq.create_aggregator(name)(bad, lens) if lens is not None else seq.create_aggregator(name)(bad)
            assert torch.isnan(out[0]) and not torch.isnan(out[1]), (name, lens)
    # A list of unequal sequences is padded for you.
    as_list = seq.create_aggregator("mean")([p[0], p[1, :2]])
    assert as_list.tolist() == pytest.approx([0.375, 0.35])
    # Gradients of max go to the arg-max slice only, of mean evenly over the valid slices.
    x = p.clone().requires_grad_()
    seq.create_aggregator("max")(x, lengths).sum().backward()
    assert x.grad.tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]
    x.grad = None
    seq.create_aggregator("mean")(x, lengths).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[0.25] * 4, [0.5, 0.5, 0, 0]], dtype=torch.float64))


def test_mask_and_errors():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert seq.lengths_from_mask(mask).tolist() == [2, 1]
    with pytest.raises(ValueError, match="did you mean 'lstm'"):
        seq.create_aggregator("lstn")
    with pytest.raises(ValueError, match="lengths must lie in"):
        seq.create_aggregator("max")(torch.rand(2, 3, 1), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="expected D=32"):
        seq.create_aggregator("lstm")(torch.rand(1, 3, 8))
    with pytest.raises(TypeError):
        seq.create_aggregator("lstm")(torch.rand(1, 3, 32), torch.tensor([1.5]))
    with pytest.raises(ValueError) as e:
        seq.create_aggregator("vote", threshold=2.0)
    assert "\n" not in str(e.value)


# ---- LSTM ----------------------------------------------------------------------------------------
def _lstm_pair():
    agg = seq.create_aggregator("lstm")
    ref = RefLstmAggregator()
    ref.load_state_dict(agg.state_dict())  # torch.nn.LSTM's parameter names
    return agg.eval(), ref.eval()


def test_lstm_matches_torch_lstm_with_the_same_weights():
    agg, ref = _lstm_pair()
    assert set(agg.state_dict()) == set(ref.state_dict())
    seqs = [torch.randn(t, 32) for t in (7, 3, 5, 1)]
    x, lengths = seq.pad_sequences(seqs)
    with torch.no_grad():
        got = agg(x, lengths)
        want = ref(x, lengths)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # Logits agree with the probability.
    torch.testing.assert_close(torch.sigmoid(agg.forward_logits(x, lengths)), got)


def test_lstm_padding_invariance_and_order_sensitivity():
    agg, _ = _lstm_pair()
    seqs = [torch.randn(t, 32) for t in (6, 2, 4)]
    x, lengths = seq.pad_sequences(seqs, value=50.0)  # padding that would show if it were read
    with torch.no_grad():
        batch = agg(x, lengths)
        alone = torch.cat([agg(s.unsqueeze(0)) for s in seqs])
        rev = agg(seqs[0].flip(0).unsqueeze(0))
    assert (batch - alone).abs().max().item() <= 1e-6
    assert abs(rev.item() - alone[0].item()) > 1e-4  # the LSTM reads slices in order


def test_lstm_dropout_only_in_training():
    agg = seq.create_aggregator("lstm")
    x = torch.randn(4, 5, 32)
    agg.train()
    a, b = agg.forward_logits(x), agg.forward_logits(x)
    assert not torch.equal(a, b)
    agg.eval()
    assert torch.equal(agg.forward_logits(x), agg.forward_logits(x))


def test_gradcheck_in_double():
    agg = seq.create_aggregator("lstm", input_size=3, hidden_size=4).double().eval()
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    assert torch.autograd.gradcheck(lambda t: agg.forward_logits(t, lengths), (x,))
    # Gradients w.r.t. the LSTM's weights too (through the mirrored parameters).
    w = agg.lstm.weight_hh_l0
    assert torch.autograd.gradcheck(lambda _: agg.forward_logits(x.detach(), lengths), (w,))
    p = torch.rand(2, 5, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: seq.create_aggregator("mean")(t, lengths), (p,))
    enc = seq.create_slice_encoder().double().eval()
    pooled = torch.randn(3, 512, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: enc.head(enc.embed(t)), (pooled,))


# ---- the slice encoder ---------------------------------------------------------------------------
def test_slice_encoder_head_and_features():
    enc = seq.create_slice_encoder().eval()
    assert isinstance(enc, osteonet.models.OsteoModel)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = enc(x)
        f = enc.features(x)
        pooled = enc.backbone_features(x)
    assert logits.shape == (2, 1) and f.shape == (2, 32) and pooled.shape == (2, 512)
    # The head in plain PyTorch: fc1 -> BN1d -> ReLU -> fc2.
    sd = enc.state_dict()
    h = nn.functional.linear(pooled, sd["fc1.weight"], sd["fc1.bias"])
    h = nn.functional.batch_norm(h, sd["bn1.running_mean"], sd["bn1.running_var"], sd["bn1.weight"], sd["bn1.bias"])
    torch.testing.assert_close(f, h.relu())
    torch.testing.assert_close(logits, nn.functional.linear(f, sd["fc2.weight"], sd["fc2.bias"]))
    # The backbone is torchvision's resnet34 (same names): its ImageNet-style weights load.
    import torchvision

    tv = torchvision.models.resnet34()
    enc.load_torchvision_backbone(tv.state_dict())
    tv.fc = nn.Identity()
    tv.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc.backbone_features(x), tv(x), rtol=1e-4, atol=1e-5)
    assert "ovf_resnet34" in osteonet.list_models()


def test_freeze_batchnorm_survives_train():
    enc = seq.create_slice_encoder()
    seq.freeze_batchnorm(enc)
    enc.train()
    assert enc.training and not enc.bn1.training and not enc.backbone.layer1[0].bn1.training
    assert not enc.bn1.weight.requires_grad and enc.fc1.weight.requires_grad
    before = enc.bn1.running_mean.clone()
    enc(torch.randn(4, 3, 32, 32)).sum().backward()
    assert torch.equal(before, enc.bn1.running_mean)
    assert enc.bn1.weight.grad is None and enc.fc1.weight.grad is not None
    # Any nn.Module (torchvision's) too.
    import torchvision

    tv = seq.freeze_batchnorm(torchvision.models.resnet18())
    tv.train()
    running = tv.bn1.running_mean.clone()
    tv(torch.randn(2, 3, 32, 32))
    assert torch.equal(running, tv.bn1.running_mean) and not tv.bn1.weight.requires_grad
    groups = seq.stage2_param_groups(enc, seq.create_aggregator("lstm"))
    assert groups[0]["lr"] == 0.1 and groups[1]["lr"] == 1e-4
    assert {id(p) for p in groups[1]["params"]} == {id(enc.fc1.weight), id(enc.fc1.bias)}
    clone = copy.deepcopy(enc)
    assert clone.batchnorm_frozen and torch.equal(clone.fc1.weight, enc.fc1.weight)


def test_slice_bce_loss_propagates_scan_labels():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0, 3.0])
    labels = torch.tensor([1.0, 0.0])
    got = seq.slice_bce_loss(logits, labels, [3, 2])
    target = torch.tensor([1.0, 1, 1, 0, 0])
    want = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits))).mean()
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError):
        seq.slice_bce_loss(logits, labels, [3, 3])


# ---- tiny end-to-end ------------------------------------------------------------------------------
def _toy_scans(n=8, slices=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    scans, labels = [], []
    for i in range(n):
        y = i % 2
        v = torch.rand(slices, size, size, generator=g) * 0.2
        if y:  # a "fracture": a bright wedge in every slice
            v[:, 10:20, 8:24] += torch.linspace(0, 1, 16)
        scans.append(v)
        labels.append(float(y))
    return scans, torch.tensor(labels)


def test_tiny_two_stage_run_decreases_losses():
    scans, labels = _toy_scans()
    mean = seq.pixel_mean(torch.cat(scans), size=32)
    prep = lambda v: seq.grey_to_rgb(seq.subtract_pixel_mean(seq.resize_slices(v.unsqueeze(1), 32), mean))  # noqa: E731
    x = torch.cat([prep(v) for v in scans])
    counts = [v.shape[0] for v in scans]
    enc = seq.create_slice_encoder()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3, weight_decay=1e-4)
    losses = []
    enc.train()
    for _ in range(6):
        opt.zero_grad()
        loss = seq.slice_bce_loss(enc(seq.random_rotate_shift(x, 5.0, 0.05)), labels, counts)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # Stage 2: BN frozen, backbone features cached, fc1 fine-tuned with the LSTM.
    seq.freeze_batchnorm(enc)
    with torch.no_grad():
        pooled = enc.backbone_features(x).split(counts)
    agg = seq.create_aggregator("lstm")
    opt2 = torch.optim.Adam(seq.stage2_param_groups(enc, agg, lr=1e-2, encoder_fc_lr=1e-4))
    enc.train()
    agg.train()
    losses2 = []
    for _ in range(8):
        opt2.zero_grad()
        feats = [enc.embed(p) for p in pooled]
        loss = nn.functional.binary_cross_entropy_with_logits(agg.forward_logits(feats), labels)
        loss.backward()
        opt2.step()
        losses2.append(loss.item())
    assert losses2[-1] < losses2[0]
    # The scan-level API gives the probability the modules give.
    pipe = seq.ScanPipeline(enc, agg, center_fraction=1.0, image_size=32, pixel_mean=mean)
    out = pipe.predict_slices(scans[1])
    enc.eval()
    agg.eval()
    with torch.no_grad():
        want = agg([enc.features(prep(scans[1]))])
        slice_p = torch.sigmoid(enc(prep(scans[1]))).squeeze(1)
    assert out["probability"].item() == pytest.approx(want.item(), abs=1e-6)
    torch.testing.assert_close(out["slice_probabilities"], slice_p)
    assert out["positive"] == (out["probability"].item() >= 0.5)
    assert enc.training is False  # left as we set it


# ---- reorientation and the volume API --------------------------------------------------------------
def test_reorient_to_sagittal_axcodes_and_affine_agree():
    a = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    # RAS array: slices must run towards the left (flip x), rows towards inferior (flip z), columns
    # towards posterior (flip y).
    want = a[::-1, ::-1, ::-1].transpose(0, 2, 1)
    np.testing.assert_array_equal(seq.reorient_to_sagittal(a, axcodes=("R", "A", "S")), want)
    np.testing.assert_array_equal(seq.reorient_to_sagittal(a, affine=np.diag([2.0, 0.8, 0.8, 1.0])), want)
    # An LPS array (DICOM's patient axes): x already runs left, y posterior.
    np.testing.assert_array_equal(seq.reorient_to_sagittal(a, axcodes=("L", "P", "S")), a[:, :, ::-1].transpose(0, 2, 1))
    # Already sagittal: unchanged.
    np.testing.assert_array_equal(seq.reorient_to_sagittal(a, axcodes=seq.SAGITTAL_AXCODES), a)
    with pytest.raises(ValueError):
        seq.reorient_to_sagittal(a, axcodes=("R", "R", "S"))
    with pytest.raises(ValueError):
        seq.reorient_to_sagittal(a)


def test_predict_scan_from_array_and_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    enc = seq.create_slice_encoder()
    agg = seq.create_aggregator("mean")
    vol = np.random.default_rng(0).random((40, 36, 44)).astype(np.float32)  # RAS: x has 40 sagittal slices
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    out = seq.predict_scan(enc, agg, vol, affine=affine, center_fraction=0.1, image_size=64)
    assert out["slice_indices"].tolist() == [18, 19, 20, 21]
    assert 0.0 <= out["probability"] <= 1.0
    path = os.path.join(tmp_path, "scan.nii.gz")
    nib.save(nib.Nifti1Image(vol, affine), path)
    from_file = seq.predict_scan(enc, agg, path, center_fraction=0.1, image_size=64)
    assert from_file["probability"] == pytest.approx(out["probability"], abs=1e-6)
    # The same scan stored in another orientation gives the same answer.
    lps = vol[::-1, ::-1, :].copy()
    other = seq.predict_scan(enc, agg, lps, axcodes=("L", "P", "S"), center_fraction=0.1, image_size=64)
    assert other["probability"] == pytest.approx(out["probability"], abs=1e-6)


# ---- occlusion -------------------------------------------------------------------------------------
def test_occlusion_finds_the_bright_square(tmp_path):
    img = torch.zeros(1, 48, 48)
    img[:, 10:18, 30:38] = 1.0

    def model(x):  # responds only to brightness inside the square
        return x[:, :, 10:18, 30:38].mean(dim=(1, 2, 3))

    r = seq.occlusion_sensitivity(model, img, patch_size=6, stride=3, batch_size=10)
    heat = r["heatmap"]
    assert r["base_probability"] == pytest.approx(1.0)
    assert heat[10:18, 30:38].min() > 0
    outside = heat.clone()
    outside[10 - 5:18 + 5, 30 - 5:38 + 5] = 0
    assert outside.abs().max() == 0
    # Brute force: the drop for every patch position, one image at a time.
    for i, y in enumerate(r["ys"].tolist()):
        for j, x in enumerate(r["xs"].tolist()):
            occ = img.clone()
            occ[:, y:y + 6, x:x + 6] = 0
            assert r["grid"][i, j].item() == pytest.approx(1.0 - model(occ[None]).item(), abs=1e-6)
    out = seq.save_occlusion_overlay(img, heat, tmp_path / "overlay.png", title="square")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".overlay-")] == []


def test_occlusion_of_the_slice_encoder_matches_python():
    enc = seq.create_slice_encoder().eval()
    img = torch.randn(3, 40, 40)
    r = seq.occlusion_sensitivity(enc, img, patch_size=16, stride=12, fill_value=0.5, batch_size=3)
    with torch.no_grad():
        py = seq.occlusion_sensitivity(lambda x: torch.sigmoid(enc(x)).squeeze(1), img, patch_size=16, stride=12,
                                       fill_value=0.5, batch_size=100)
    torch.testing.assert_close(r["grid"], py["grid"], rtol=1e-4, atol=1e-5)
    assert r["grid"].shape == (3, 3)
