"""osteonet.runtime.InferenceSession: folded/frozen outputs vs eager, bfloat16 accuracy, the user's model
unchanged, shape cache, threads, errors. (No timing assertions; speed is in benchmarks/bench_runtime.py.)"""

import threading

import pytest
import torch

import osteonet
from osteonet.runtime import InferenceSession, onednn_graph_available
from conftest import perturb_

# Input size per model (default 64); VGG's 7x7 adaptive pooling needs a multiple of 7 for oneDNN.
SMALL = {"inception_v3": 96, "vgg16": 224, "vgg16_bn": 224, "vgg19": 224, "vgg19_bn": 224}


def _assert_close(got, expected):
    """Probabilities within 1e-4 (the issue's float32 criterion); logits within 1e-3 of their scale
    (perturbed deep networks reach large activations, where summation order shows)."""
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got.softmax(1) - expected.softmax(1)).abs().max() < 1e-4
    assert (got - expected).abs().max() <= 1e-3 * max(1.0, float(expected.abs().max()))


def _model(name, num_classes=6):
    m = osteonet.create_model(name, num_classes=num_classes)
    perturb_(m)
    return m


@pytest.mark.parametrize("name", osteonet.list_models())
def test_float32_session_equals_eager(name):
    model = _model(name)
    size = SMALL.get(name, 64)
    x = torch.randn(1 if size > 100 else 2, 3, size, size)
    session = InferenceSession(model, x, warmup=0)
    assert session.dtype == "float32" and session.mode == "frozen"
    assert session.accuracy < 1e-4
    model.eval()
    with torch.no_grad():
        expected = model(x)
        got = session(x)
    _assert_close(got, expected)


@pytest.mark.parametrize("name", ["resnet50", "dsnet_resnet50", "mobilenet_v2", "densenet121"])
def test_bfloat16_probabilities_within_1e_2(name):
    model = _model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    session = InferenceSession(model, x, dtype="bfloat16", warmup=0)
    assert session.dtype == "bfloat16"
    assert session.accuracy < 1e-2
    with torch.no_grad():
        assert (session(x).softmax(1) - model(x).softmax(1)).abs().max() < 1e-2


def _is_bfloat16_valued(t):
    return torch.equal(t, t.bfloat16().float())


@pytest.mark.parametrize("features", [False, True])
def test_float32_ends_keep_stem_and_classifier_in_float32(features):
    """With float32_ends the stem convolution sees the input unrounded and the classifier's logits are float32;
    a full bfloat16 session rounds both (its outputs are bfloat16 values, the same for a pre-rounded input)."""
    model = _model("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    xr = x.bfloat16().float()
    ends = InferenceSession(model, x, dtype="bfloat16", float32_ends=True, features=features, warmup=0)
    full = InferenceSession(model, x, dtype="bfloat16", features=features, warmup=0)
    assert ends.dtype == full.dtype == "bfloat16" and full.float32_modules == ()
    assert ends.float32_modules == (("conv1",) if features else ("conv1", "fc"))
    with torch.no_grad():
        assert _is_bfloat16_valued(full(x)) and torch.equal(full(x), full(xr))
        assert _is_bfloat16_valued(ends(x)) == features and not torch.equal(ends(x), ends(xr))
        if not features:
            assert ends.accuracy < 1e-2 and (ends(x).softmax(1) - model(x).softmax(1)).abs().max() < 1e-2


def test_bfloat16_keeps_float32_ends_when_full_bfloat16_misses():
    """A bias of 256 on every logit leaves the probabilities as they are, but bfloat16 logits near 256 are 2
    apart: full bfloat16 misses 1e-2, the session keeps its stem and classifier in float32 (warning) and passes."""
    model = _model("resnet18", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.fc.weight.mul_(2.0 / model(x).std())  # logits a few units apart
        model.fc.bias.fill_(256.0)
    with pytest.warns(RuntimeWarning, match=r"differed from float32 by more than 1e-2 .* keeps conv1, fc in float32"):
        session = InferenceSession(model, x, dtype="bfloat16", warmup=0)
    assert session.dtype == "bfloat16" and session.float32_modules == ("conv1", "fc") and session.accuracy < 1e-2
    with torch.no_grad():
        assert (session(x).softmax(1) - model(x).softmax(1)).abs().max() < 1e-2


def test_float32_ends_errors():
    model = _model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(TypeError, match="float32_ends must be a bool") as e:
        InferenceSession(model, x, dtype="bfloat16", float32_ends=1)
    _one_line(e)
    with pytest.raises(ValueError, match="float32_ends") as e:
        InferenceSession(model, x, float32_ends=True)
    _one_line(e)
    with pytest.raises(ValueError, match="float32_ends=True applies to backbones") as e:
        InferenceSession(_detector(128), [torch.rand(3, 128, 128)], dtype="bfloat16", float32_ends=True)
    _one_line(e)


def test_folded_pairs_counted():
    # resnet50: stem + 3 convs x 16 blocks + 4 downsamples.
    assert InferenceSession(_model("resnet50"), torch.randn(1, 3, 64, 64), warmup=0).folded == 53


def test_model_unchanged_and_independent_of_later_updates():
    model = _model("resnet18").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    session = InferenceSession(model, x, warmup=0)
    assert model.training
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    with torch.no_grad():
        expected = model.eval()(x)
        for p in model.parameters():  # the session holds its own copy
            p.add_(1.0)
        _assert_close(session(x), expected)


def test_shape_cache_and_batch_sizes():
    model = _model("resnet18").eval()
    session = InferenceSession(model, torch.randn(1, 3, 64, 64), warmup=0, max_shapes=2)
    with torch.no_grad():
        for shape in [(1, 3, 64, 64), (8, 3, 64, 64), (3, 3, 80, 72), (1, 3, 64, 64)]:
            x = torch.randn(*shape)
            _assert_close(session(x), model(x))
    # Two shapes with a frozen program; the third ran the folded copy eagerly.
    assert sorted(session.cached_shapes) == [(1, 3, 64, 64), (8, 3, 64, 64)]


def test_shape_without_frozen_program_runs_eagerly():
    # oneDNN's adaptive average pooling (VGG's 7x7) rejects 2x2 maps: that shape runs the folded copy.
    model = _model("vgg11" if "vgg11" in osteonet.list_models() else "vgg16_bn").eval()
    x = torch.randn(1, 3, 64, 64)
    session = InferenceSession(model, x, warmup=0)
    assert session.cached_shapes == []
    with torch.no_grad():
        _assert_close(session(x), model(x))


def test_eager_mode_without_freeze():
    model = _model("mobilenet_v3_large").eval()
    x = torch.randn(2, 3, 64, 64)
    session = InferenceSession(model, x, freeze=False, warmup=0)
    assert session.mode == "eager"
    with torch.no_grad():
        _assert_close(session(x), model(x))


def test_threads_share_one_session():
    model = _model("resnet18").eval()
    inputs = [torch.randn(2, 3, 64, 64) for _ in range(6)]
    session = InferenceSession(model, inputs[0], warmup=0)
    results, errors = [None] * 6, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = session(inputs[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with torch.no_grad():
        for x, y in zip(inputs, results):
            _assert_close(y, model(x))


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)


def test_errors():
    model = _model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(TypeError) as e:
        InferenceSession(torch.nn.Linear(2, 2), x)
    _one_line(e)
    with pytest.raises(ValueError) as e:
        InferenceSession(model, x, dtype="float16")
    _one_line(e)
    with pytest.raises(TypeError) as e:
        InferenceSession(model, x.long())
    _one_line(e)
    with pytest.raises(ValueError) as e:
        InferenceSession(model, torch.randn(1, 1, 64, 64))
    _one_line(e)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda") as e:
            InferenceSession(model, x, device="cuda")
        _one_line(e)
    session = InferenceSession(model, x, warmup=0)
    with pytest.raises(ValueError) as e:
        session(torch.randn(1, 2, 64, 64))
    _one_line(e)
    with pytest.raises(ValueError) as e:
        session(torch.randn(3, 64, 64))
    _one_line(e)
    with pytest.raises(TypeError) as e:
        session(x.double())
    _one_line(e)
    with pytest.raises(TypeError) as e:
        session([1.0])
    _one_line(e)


def test_fuser_errors():
    model = _model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    cases = [(dict(fuser=1), TypeError, "fuser must be None or a str"),
             (dict(fuser="llga"), ValueError, "one of onednn_graph, got 'llga'"),
             (dict(fuser="onednn_graph", freeze=False), ValueError, "freeze=False asks for none"),
             (dict(fuser="onednn_graph", max_shapes=0), ValueError, "max_shapes=0 asks for none"),
             (dict(fuser="onednn_graph", device="cuda"), ValueError, "runs on the CPU")]
    for kwargs, kind, text in cases:
        with pytest.raises(kind, match=text) as e:
            InferenceSession(model, x, **kwargs)
        _one_line(e)
    detector = osteonet.create_model("fasterrcnn", num_classes=2, min_size=64, max_size=64)
    with pytest.raises(ValueError, match="applies to backbones") as e:
        InferenceSession(detector, [torch.rand(3, 64, 64)], fuser="onednn_graph")
    _one_line(e)


@pytest.mark.skipif(onednn_graph_available(), reason="torch 2.x runs oneDNN Graph (tested below)")
def test_fuser_refused_where_onednn_has_no_graph_api():
    with pytest.raises(ValueError, match=f"needs torch 2.x, got torch {torch.__version__}") as e:
        InferenceSession(_model("resnet18"), torch.randn(1, 3, 64, 64), fuser="onednn_graph")
    _one_line(e)


ONEDNN_GRAPH = pytest.mark.skipif(not onednn_graph_available(), reason="oneDNN Graph needs torch 2.x (Debian 12's "
                                  "torch 1.13 links a oneDNN without its graph API); run by make test-torch2")


def _switches():
    return torch._C._jit_llga_enabled(), torch._C._jit_texpr_fuser_enabled()


@ONEDNN_GRAPH
@pytest.mark.parametrize("name", ["resnet18", "dsnet_resnet50", "densenet121"])
def test_onednn_graph_session_equals_eager(name):
    model = _model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    before = _switches()
    session = InferenceSession(model, x, fuser="onednn_graph", warmup=0)
    assert _switches() == before  # the process-wide switches are put back
    assert session.mode == "onednn_graph" and session.fuser == "onednn_graph" and session.dtype == "float32"
    assert session.cached_shapes == [(2, 3, 64, 64)] and session.accuracy < 1e-4
    program = session.programs[(2, 3, 64, 64)]
    assert program["fusion_groups"] > 0 and program["serves"] in ("onednn_graph", "frozen")
    with torch.no_grad():
        expected = model(x)
        _assert_close(session(x), expected)
        _assert_close(session._fused.fused(x), expected)  # the fixed plan, after the switches were put back
        y = torch.randn(1, 3, 96, 96)  # a new shape: its own program
        _assert_close(session(y), model(y))
    assert session.cached_shapes == [(2, 3, 64, 64), (1, 3, 96, 96)]


@ONEDNN_GRAPH
def test_onednn_graph_session_shapes_inputs_threads_features():
    model = _model("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    session = InferenceSession(model, x, fuser="onednn_graph", warmup=0, max_shapes=1)
    with torch.no_grad():
        y = torch.randn(1, 3, 80, 80)
        _assert_close(session(y), model(y))  # beyond max_shapes: the folded copy, eagerly
        assert session.cached_shapes == [(2, 3, 64, 64)]
        for bad, kind in ((torch.randn(2, 2, 64, 64), ValueError), (x.double(), TypeError)):
            with pytest.raises(kind) as e:
                session(bad)
            _one_line(e)
        inputs = [x + i for i in range(4)]
        results = [None] * 4
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, session(inputs[i]))) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for inp, got in zip(inputs, results):
            _assert_close(got, model(inp))
    encoder = _model("ovf_resnet34", num_classes=1).eval()
    features = InferenceSession(encoder, x, features=True, fuser="onednn_graph", warmup=0)
    reference = InferenceSession(encoder, x, features=True, warmup=0)
    assert features.accuracy < 1e-4
    with torch.no_grad():
        got, expected = features(x), reference(x)
    assert got.shape == expected.shape and (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))


@ONEDNN_GRAPH
@pytest.mark.skipif(not osteonet.runtime.cpu_has_bf16(), reason="the CPU has no AMX/AVX512-BF16")
def test_onednn_graph_session_bfloat16():
    model = _model("resnet50").eval()
    x = torch.randn(1, 3, 64, 64)
    session = InferenceSession(model, x, dtype="bfloat16", fuser="onednn_graph", warmup=0)
    assert session.dtype == "bfloat16" and session.accuracy < 1e-2
    with torch.no_grad():
        assert (session(x).softmax(1) - model(x).softmax(1)).abs().max() < 1e-2


@ONEDNN_GRAPH
def test_onednn_graph_program_above_tolerance_runs_without_the_fuser(monkeypatch):
    """The fused program has its own check (its rounding differs from the frozen program's, which passed):
    above the tolerance the session warns and runs its frozen programs (here the fused outputs are made wrong)."""
    from osteonet.runtime import _OneDnnGraphPrograms

    fused = _OneDnnGraphPrograms.fused
    monkeypatch.setattr(_OneDnnGraphPrograms, "fused", lambda self, x: -fused(self, x))
    model = _model("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.warns(RuntimeWarning, match="the oneDNN Graph float32 program differed from eager float32 by .* the "
                                            "session runs without the fuser"):
        session = InferenceSession(model, x, fuser="onednn_graph", warmup=0)
    assert session.fuser is None and session.mode == "frozen" and session.programs == {} and session.accuracy < 1e-4
    with torch.no_grad():
        _assert_close(session(x), model(x))


@ONEDNN_GRAPH
def test_onednn_graph_shape_served_by_the_faster_program(monkeypatch):
    """Each shape is timed as its fused and its frozen program; the faster serves it, both give the model's
    outputs (the timing is made to prefer one, then the other)."""
    from osteonet.runtime import _OneDnnGraphPrograms

    model = _model("resnet18").eval()
    build = _OneDnnGraphPrograms._build
    for slower in ("frozen", "onednn_graph"):

        def rigged(self, x, slower=slower):
            traced, groups, _ = build(self, x)
            return traced, groups, "frozen" if slower == "onednn_graph" else "onednn_graph"

        monkeypatch.setattr(_OneDnnGraphPrograms, "_build", rigged)
        x = torch.randn(2, 3, 64, 64)
        session = InferenceSession(model, x, fuser="onednn_graph", warmup=0)
        served = "frozen" if slower == "onednn_graph" else "onednn_graph"
        assert session.programs[(2, 3, 64, 64)]["serves"] == served
        with torch.no_grad():
            _assert_close(session(x), model(x))


@pytest.mark.skipif(not (torch.cuda.is_available() and osteonet.runtime.built_with_cuda()),
                    reason="needs a CUDA build of osteonet and a GPU")
def test_cuda_graph_replay_equals_eager():  # pragma: no cover - no GPU on the development machine
    model = _model("resnet18")
    x = torch.randn(2, 3, 64, 64, device="cuda")
    graphed = InferenceSession(model, x, device="cuda")
    eager = InferenceSession(model, x, device="cuda", cuda_graph=False)
    assert graphed.mode == "cuda_graph"
    for _ in range(3):
        y = torch.randn(2, 3, 64, 64, device="cuda")
        assert (graphed(y) - eager(y)).abs().max() <= 1e-6


def test_features_session_returns_the_slice_embedding():
    """features=True: the model without its classifier (ovf_resnet34: the 32-d embedding seed 002's
    aggregators take; a backbone: its pooled features), equal to the eager computation."""
    from osteonet import sequence as seq

    enc = seq.create_slice_encoder()
    perturb_(enc)
    enc.eval()
    x = torch.randn(3, 3, 64, 64)
    session = InferenceSession(enc, x, features=True, warmup=0)
    assert session.features and session.accuracy < 1e-4
    with torch.no_grad():
        expected = enc.features(x)
        got = session(x)
        assert got.shape == (3, 32)
        assert (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
        # the aggregator on the session's embeddings gives the eager scan probability
        agg = seq.create_aggregator("lstm").eval()
        assert torch.allclose(agg(got[None]), agg(expected[None]), atol=1e-5)
    model = _model("resnet18")
    model.eval()
    session = InferenceSession(model, torch.randn(1, 3, 64, 64), features=True, warmup=0)
    headless = osteonet.create_model("resnet18", num_classes=0)
    headless.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    headless.eval()
    y = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = headless(y)
        got = session(y)
    assert got.shape == (2, 512) and (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    with pytest.raises(TypeError, match="features must be a bool"):
        InferenceSession(model, y, features="yes")


# ---- Faster R-CNN: backbone + FPN prepared per padded batch shape, the rest eager ----

def _detector(size=192):
    """osteonet's fasterrcnn_resnet50_fpn with torchvision's weights, randomised so that it detects
    (heads peaked by 5: with 20, float32 rounding alone moves the sharpest objectness probabilities
    by ~1e-4, the session's float32 tolerance)."""
    import torchvision
    from conftest import randomise_detector_

    torch.manual_seed(0)
    kw = dict(min_size=size, max_size=size)
    ref = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, **kw)
    randomise_detector_(ref, 0, peak=5.0)
    model = osteonet.create_model("fasterrcnn_resnet50_fpn", num_classes=3, **kw)
    model.load_state_dict(ref.state_dict())
    return model.eval()


def test_detector_session_equals_eager():
    from conftest import match_detections, scene

    model = _detector()
    g = torch.Generator().manual_seed(1)
    images = [scene(192, 192, g), scene(160, 192, g)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    session = InferenceSession(model, images, warmup=0, freeze=True)  # the frozen backbone + FPN program
    assert session.mode == "frozen" and session.dtype == "float32"
    assert session.accuracy < 1e-4
    assert session.folded == 53  # the ResNet-50 body; the FPN has no BatchNorm
    assert session.cached_shapes == [(2, 3, 192, 192)]  # the padded batch
    with torch.no_grad():
        expected = model(images)
    got = session(images)
    assert len(got) == 2
    for o, r in zip(got, expected):
        assert set(o) == {"boxes", "labels", "scores"}
        match_detections(o, r)
    # another batch shape gets its own program; the model itself is unchanged
    one = [scene(128, 128, g)]
    with torch.no_grad():
        match_detections(session(one)[0], model(one)[0])
    assert sorted(session.cached_shapes) == [(1, 3, 192, 192), (2, 3, 192, 192)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_detector_session_on_the_cpu_runs_eagerly_unless_frozen_is_asked_for():
    """By default a CPU detector session runs backbone + FPN as its folded copy, eagerly (docs/runtime.md)."""
    from conftest import match_detections, scene

    model = _detector()
    images = [scene(192, 192, torch.Generator().manual_seed(1))]
    session = InferenceSession(model, images, warmup=0)
    assert session.mode == "eager" and session.cached_shapes == [] and session.folded == 53
    with torch.no_grad():
        match_detections(session(images)[0], model(images)[0])
    with pytest.raises(TypeError, match="freeze"):
        InferenceSession(model, images, freeze="yes")


def test_detector_session_bfloat16():
    """bfloat16 backbone + FPN, float32 heads. A ResNet-18-FPN detector (random weights): its bfloat16
    probabilities pass the 1e-2 check; the random-weight ResNet-50 ones do not (see docs/runtime.md)."""
    from conftest import scene

    torch.manual_seed(0)
    model = osteonet.create_model("fasterrcnn", backbone="resnet18", num_classes=3, min_size=192, max_size=192)
    model.eval()
    images = [scene(192, 192, torch.Generator().manual_seed(2))]
    session = InferenceSession(model, images, dtype="bfloat16", warmup=0)
    assert session.dtype == "bfloat16" and session.accuracy < 1e-2
    with torch.no_grad():
        expected = model(images)[0]
    got = session(images)[0]
    assert got["boxes"].dtype == torch.float32 and got["boxes"].shape[0] > 0
    assert bool(((got["boxes"] >= 0) & (got["boxes"] <= 192)).all())
    # the most confident eager detection is found again (the heads run in float32 on bfloat16 maps)
    from osteonet.detection import box_iou

    best = expected["scores"].argmax()
    iou = box_iou(expected["boxes"][best:best + 1], got["boxes"])[0]
    assert bool(((iou > 0.9) & (got["labels"] == expected["labels"][best])).any())


def test_detector_session_bfloat16_falls_back_when_inaccurate():
    """The random-weight ResNet-50-FPN detector's bfloat16 probabilities miss 1e-2: float32, with a warning."""
    from conftest import scene

    model = _detector()
    images = [scene(192, 192, torch.Generator().manual_seed(2))]
    with pytest.warns(RuntimeWarning, match="bfloat16"):
        session = InferenceSession(model, images, dtype="bfloat16", warmup=0)
    assert session.dtype == "float32" and session.accuracy < 1e-4


def test_detector_session_errors():
    model = _detector(128)
    img = torch.rand(3, 128, 128)
    for bad, exc in (([], ValueError), (img[0], TypeError), ([img.double()], TypeError), ([img[0]], ValueError),
                     ([1.0], TypeError)):
        with pytest.raises(exc) as e:
            InferenceSession(model, bad)
        _one_line(e)
    with pytest.raises(ValueError) as e:
        InferenceSession(model, [img], features=True)
    _one_line(e)
    with pytest.raises(ValueError) as e:
        InferenceSession(model, [img], dtype="float16")
    _one_line(e)
    session = InferenceSession(model, [img], warmup=0)
    for bad, exc in (([], ValueError), ([img.half()], TypeError), ([img[None]], ValueError), ("x", TypeError)):
        with pytest.raises(exc) as e:
            session(bad)
        _one_line(e)


# ---- fracture scans: slices padded to fixed lengths, padded outputs masked off ----

@pytest.mark.parametrize("agg_name", ["lstm", "max"])
def test_scan_session_padding_equals_eager(agg_name):
    from osteonet import sequence as seq
    from osteonet.runtime import ScanSession

    torch.manual_seed(0)
    enc = seq.create_slice_encoder()
    perturb_(enc)
    enc.eval()
    agg = seq.create_aggregator(agg_name)
    perturb_(agg)
    agg.train()  # the session uses an eval copy and leaves the caller's aggregator as it is
    scan = ScanSession(enc, agg, torch.randn(5, 3, 64, 64), lengths=[4, 8], warmup=0)
    assert agg.training
    assert scan.session.cached_shapes == [(8, 3, 64, 64)]  # the example's 5 slices padded to 8; 4 is built on first use
    agg.eval()
    for t in (3, 8, 11):  # padded to 4; exactly 8; chunks of 8 + 3 padded to 4
        x = torch.randn(t, 3, 64, 64)
        with torch.no_grad():
            slice_out = enc.features(x) if agg_name == "lstm" else torch.sigmoid(enc(x)[:, 0])
            expected = agg(slice_out[None])
        got_slices = scan.slice_outputs(x)
        assert got_slices.shape == slice_out.shape
        assert (got_slices - slice_out).abs().max() <= 1e-4 * max(1.0, float(slice_out.abs().max()))
        assert (scan(x) - expected).abs().max() < 1e-4
    assert sorted(scan.session.cached_shapes) == [(4, 3, 64, 64), (8, 3, 64, 64)]


def test_scan_session_float32_ends():
    """ScanSession passes float32_ends to its encoder's session: with the LSTM (features) only the stem is kept."""
    from osteonet import sequence as seq
    from osteonet.runtime import ScanSession

    torch.manual_seed(0)
    enc, agg = seq.create_slice_encoder().eval(), seq.create_aggregator("lstm").eval()
    x = torch.randn(5, 3, 64, 64)
    scan = ScanSession(enc, agg, x, lengths=[8], dtype="bfloat16", float32_ends=True, warmup=0)
    assert scan.session.dtype == "bfloat16" and scan.session.float32_modules == ("backbone.conv1",)
    assert "float32_modules=('backbone.conv1',)" in repr(scan.session)
    with torch.no_grad():
        assert (scan(x) - agg(enc.features(x)[None])).abs().max() < 1e-2


def test_scan_session_errors():
    from osteonet import sequence as seq
    from osteonet.runtime import ScanSession

    enc, agg = seq.create_slice_encoder().eval(), seq.create_aggregator("lstm")
    x = torch.randn(4, 3, 64, 64)
    for kwargs, exc in ((dict(lengths=[8, 4]), ValueError), (dict(lengths=[]), ValueError),
                        (dict(lengths=[0, 4]), ValueError), (dict(lengths="8"), ValueError)):
        with pytest.raises(exc) as e:
            ScanSession(enc, agg, x, **kwargs)
        _one_line(e)
    with pytest.raises(TypeError) as e:
        ScanSession(agg, agg, x)
    _one_line(e)
    with pytest.raises(TypeError) as e:
        ScanSession(enc, enc, x)
    _one_line(e)
    scan = ScanSession(enc, agg, x, lengths=[4], warmup=0)
    with pytest.raises(ValueError) as e:
        scan(torch.randn(0, 3, 64, 64))
    _one_line(e)
    with pytest.raises(TypeError) as e:
        scan([x])
    _one_line(e)
