"""Every architecture torchvision has: strict state-dict load, equal eval outputs (224x224 and a
non-square size), equal train-mode gradients."""

import pytest
import torch
import torchvision

import osteonet

TV_MODELS = [n for n in osteonet.list_models() if osteonet.models.model_info(n)["torchvision"]]


def make_pair(name, **tv_kwargs):
    tv_name = osteonet.models.model_info(name)["torchvision"]
    if tv_name == "inception_v3":
        tv_kwargs.setdefault("init_weights", True)
    ref = getattr(torchvision.models, tv_name)(**tv_kwargs)
    ours = osteonet.create_model(name, **({"aux_logits": tv_kwargs["aux_logits"]} if "aux_logits" in tv_kwargs else {}))
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_torchvision_list_is_complete():
    assert set(TV_MODELS) == {"resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
                              "mobilenet_v2", "mobilenet_v3_large", "densenet121", "inception_v3"}


@pytest.mark.parametrize("name", TV_MODELS)
def test_state_dict_keys_and_shapes_equal(name):
    ref, ours = make_pair(name)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


@pytest.mark.parametrize("name", TV_MODELS)
def test_eval_outputs_equal(name):
    ref, ours = make_pair(name)
    ref.eval(), ours.eval()
    sizes = [(299, 299), (320, 299)] if name == "inception_v3" else [(224, 224), (160, 256)]
    with torch.no_grad():
        for h, w in sizes:
            x = torch.randn(2, 3, h, w)
            assert torch.allclose(ours(x), ref(x), rtol=0, atol=1e-4), (name, h, w)


@pytest.mark.parametrize("name", TV_MODELS)
def test_train_gradients_equal(name):
    ref, ours = make_pair(name)
    ref.train(), ours.train()
    size = (299, 299) if name == "inception_v3" else (96, 128)
    x = torch.randn(2, 3, *size)
    outs = []
    for model in (ref, ours):
        torch.manual_seed(7)  # same dropout masks: both draw them in the same order from the same generator
        y = model(x)
        if isinstance(y, tuple):  # inception: logits + auxiliary logits
            loss = y[0].square().mean() + 0.4 * y[1].square().mean()
        else:
            loss = y.square().mean()
        loss.backward()
        outs.append({k: p.grad for k, p in model.named_parameters()})
    g_ref, g_ours = outs
    assert set(g_ref) == set(g_ours)
    for k in g_ref:
        assert g_ours[k] is not None, k
        scale = g_ref[k].abs().max().clamp_min(1e-6)
        assert ((g_ours[k] - g_ref[k]).abs().max() / scale) < 1e-4, k
    # Running statistics were updated identically in training mode.
    for (k, a), b in zip(ref.state_dict().items(), ours.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


def test_inception_training_output_matches_torchvision_type():
    ref, ours = make_pair("inception_v3")
    ours.train()
    y = ours(torch.randn(1, 3, 299, 299)) if False else ours(torch.randn(2, 3, 299, 299))
    assert y._fields == ("logits", "aux_logits")
    no_aux = osteonet.create_model("inception_v3", aux_logits=False).train()
    assert isinstance(no_aux(torch.randn(2, 3, 128, 128)), torch.Tensor)
