"""osteonet models are real torch.nn.Modules: parameters are shared with C++, optimisers train them,
state dicts round-trip, train/eval and dtype changes reach the C++ module."""

import copy
import io
import pickle

import pytest
import torch

import osteonet


@pytest.fixture
def model():
    return osteonet.create_model("resnet18", num_classes=4)


def test_is_module_with_nested_torchvision_names(model):
    assert isinstance(model, torch.nn.Module)
    params = dict(model.named_parameters())
    assert "layer1.0.conv1.weight" in params and all(isinstance(p, torch.nn.Parameter) for p in params.values())
    assert "layer2.0.downsample.1.running_mean" in model.state_dict()
    assert isinstance(model.layer1[0].bn1, torch.nn.Module)
    assert "BatchNorm2d" in repr(model.layer1[0].bn1)


def test_gradients_land_on_python_parameters_and_optimizers_train(model):
    x, target = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        assert model.fc.weight.grad is not None
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.5, losses
    adam = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.fc.weight.detach().clone()
    model(x).sum().backward()
    adam.step()
    assert not torch.equal(before, model.fc.weight)


def test_in_place_parameter_edit_changes_cpp_output(model):
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
        y1 = model(x)
        model.fc.bias.sub_(1.0)
        y0 = model(x)
    assert torch.allclose(y1 - y0, torch.ones_like(y0), atol=1e-5)


def test_state_dict_round_trip_through_torch_save(model):
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = osteonet.create_model("resnet18", num_classes=4).eval()
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    with torch.no_grad():
        assert torch.equal(model(x), other(x))
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict({k: v for k, v in model.state_dict().items() if "fc" not in k})


def test_train_eval_reaches_cpp_batchnorm(model):
    x = torch.randn(4, 3, 64, 64)
    rm = model.state_dict()["bn1.running_mean"].clone()
    model.eval()
    with torch.no_grad():
        model(x)
    assert torch.equal(rm, model.state_dict()["bn1.running_mean"])
    model.train()
    with torch.no_grad():
        model(x)
    assert not torch.equal(rm, model.state_dict()["bn1.running_mean"])
    model.layer1.eval()
    assert not model.layer1[0].bn1.training and model.training


def test_double_and_to_keep_parameters_and_buffers_shared(model):
    model.double().eval()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.state_dict()["bn1.running_var"].dtype == torch.float64
    y = model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert y.dtype == torch.float64
    model.to(torch.float32)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.bn1.running_mean.fill_(1e3)  # a buffer edit must still reach C++ (ReLU then zeroes the stem)
        y_big = model(x)
        model.bn1.running_mean.zero_()
        y_zero = model(x)
    assert not torch.allclose(y_big, y_zero)


def test_deepcopy_is_independent_and_pickle_round_trips(model):
    model.eval()
    clone = copy.deepcopy(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
        clone.fc.bias.add_(1)
        assert not torch.equal(model(x), clone(x))
        again = pickle.loads(pickle.dumps(model))
        assert torch.equal(model(x), again(x)) and not again.training


def test_feature_info_and_forward_intermediates():
    m = osteonet.create_model("resnet50").eval()
    assert [f["name"] for f in m.feature_info] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert [f["stride"] for f in m.feature_info] == [2, 4, 8, 16, 32]
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        final, feats = m.forward_intermediates(x)
        assert [f.shape[1] for f in feats] == [64, 256, 512, 1024, 2048]
        assert feats[-1].shape[-1] == 4 and torch.equal(final, feats[-1])
        assert [f.shape[1] for f in m.forward_intermediates(x, indices=2, intermediates_only=True)] == [1024, 2048]
        assert torch.equal(m.forward_features(x), final)
        assert torch.equal(m.forward_head(final), m(x))
        assert m.forward_head(final, pre_logits=True).shape == (1, 2048)


def test_requires_grad_false_freezes(model):
    for p in model.parameters():
        p.requires_grad_(False)
    model.fc.weight.requires_grad_(True)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert model.fc.weight.grad is not None and model.conv1.weight.grad is None


def test_gil_released_threads_run_models():
    import threading
    m = osteonet.create_model("resnet18", num_classes=2).eval()
    out = []

    def run():
        with torch.no_grad():
            out.append(m(torch.randn(1, 3, 64, 64)).shape)

    threads = [threading.Thread(target=run) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert out == [torch.Size([1, 2])] * 3
