"""Parametrised over the registry: every model and attention variant builds, runs forward and
backward (every parameter gets a gradient), returns described feature maps, and has no NaN."""

import pytest
import torch

import osteonet

ATTENTIONS = ["none", "se", "eca", "sk", "ds"]
# ResNets take attention in every block; the rest at DSNet's stage placement. The heaviest
# combinations (ResNet-101 with block attention) are covered by ResNet-50's.
CASES = [(m, a) for m in osteonet.list_models() for a in ATTENTIONS
         if not (m == "resnet101" and a != "none") and not (m == "dsnet_resnet50" and a not in ("none", "ds"))]


def size_of(name):
    return 112 if name == "inception_v3" else 64


@pytest.mark.parametrize("name,attention", CASES)
def test_forward_backward_features(name, attention):
    opts = {"aux_logits": False} if name == "inception_v3" else {}
    model = osteonet.create_model(name, num_classes=3, in_chans=1, attention=attention, **opts)
    model.train()
    s = size_of(name)
    x = torch.randn(2, 1, s, s - 8)
    y = model(x)
    assert y.shape == (2, 3) and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
    info = model.feature_info
    assert len(feats) == len(info) >= 4
    for f, i in zip(feats, info):
        assert f.shape[1] == i["channels"], i
        assert torch.isfinite(f).all()
    # Strides are as described (up to the rounding of odd sizes; Inception's unpadded convolutions
    # shrink its maps further, so its strides are nominal).
    for f, i in zip(feats, info if name != "inception_v3" else []):
        assert abs(s / f.shape[2] - i["stride"]) <= i["stride"] * 0.25 + 1, (i, f.shape)


@pytest.mark.parametrize("name", osteonet.list_models())
def test_headless_model_returns_pooled_features(name):
    opts = {"aux_logits": False} if name == "inception_v3" else {}
    model = osteonet.create_model(name, num_classes=0, **opts).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, size_of(name), size_of(name)))
    assert y.dim() == 2 and y.shape[0] == 1
    assert not any(k.startswith(("fc.", "classifier")) for k in model.state_dict())


def test_list_models_and_info():
    names = osteonet.list_models()
    assert len(names) == 15 and len(set(names)) == 15
    assert "dsnet_resnet50" in names and "dxa_cnn21" in names and "ovf_resnet34" in names
    assert osteonet.models.model_info("dxa_cnn21")["torchvision"] == ""
    assert osteonet._core.attention_names() == ["none", "se", "eca", "sk", "ds"]


def test_attention_options_reach_the_modules():
    m = osteonet.create_model("resnet50", attention="se", attn_reduction=4)
    assert m.state_dict()["layer1.0.attn.fc1.weight"].shape[0] == 64  # 256 / 4
    d = osteonet.create_model("dsnet_resnet50", attn_reduction=16, attn_gate="softmax")
    assert d.state_dict()["attn_last.fcs.0.0.weight"].shape == (128, 2048)
    e = osteonet.create_model("resnet18", attention="eca", attn_kernel_size=9)
    assert e.state_dict()["layer1.0.attn.conv.weight"].shape[-1] == 9
