"""CUDA: graph replay, the detector's graphed backbone + FPN, the padded scan session, shapes, threads,
long replays and memory, one AMP training step per task's model (issue 18).

Every test here needs a CUDA build of osteonet (``osteonet.runtime.built_with_cuda()``) and a GPU; elsewhere
each is skipped with that reason. benchmarks/gpu/run.sh builds osteonet against the GPU machine's torch and
runs this file there. TF32 is switched off for these tests: "equal" means equal in float32.
"""

from __future__ import annotations

import threading

import pytest
import torch

import osteonet
from osteonet.runtime import InferenceSession, ScanSession

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and osteonet.runtime.built_with_cuda()),
                                reason="needs a CUDA build of osteonet (benchmarks/gpu/run.sh) and a GPU")

BACKBONES = [n for n in osteonet.list_models() if n != "inception_v3"] + ["inception_v3"]


@pytest.fixture(autouse=True)
def _exact_float32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _size(name: str) -> int:
    return 299 if name == "inception_v3" else 96


def _model(name: str):
    torch.manual_seed(0)
    kw = {"num_classes": 4}
    if name == "dxa_cnn21":
        kw["in_chans"] = 1
    return osteonet.create_model(name, **kw).eval()


@pytest.mark.parametrize("name", BACKBONES)
def test_graph_replay_equals_eager_every_backbone(name):
    model = _model(name)
    c = model.in_chans
    x = torch.randn(2, c, _size(name), _size(name), device="cuda")
    graphed = InferenceSession(model, x, device="cuda")
    eager = InferenceSession(model, x, device="cuda", cuda_graph=False)
    assert graphed.mode == "cuda_graph" and eager.mode == "eager"
    assert graphed.accuracy < 1e-4  # the folded copy against the model's own eager float32 on the GPU
    for i in range(3):
        y = torch.randn(2, c, _size(name), _size(name), device="cuda")
        a, b = graphed(y), eager(y)
        assert a.device.type == "cuda"
        assert (a - b).abs().max().item() <= 1e-6, f"{name}: replay {i} differs from eager"
    # and the model itself on the GPU (unfolded): probabilities within the session's float32 tolerance
    cuda_model = model.cuda()
    with torch.no_grad():
        ref = cuda_model(y)
    assert (torch.softmax(a, 1) - torch.softmax(ref, 1)).abs().max().item() < 1e-4


def test_new_shape_captures_a_graph_and_beyond_max_shapes_runs_eagerly():
    model = _model("resnet18")
    session = InferenceSession(model, torch.randn(1, 3, 64, 64, device="cuda"), device="cuda", max_shapes=2)
    eager = InferenceSession(model, torch.randn(1, 3, 64, 64, device="cuda"), device="cuda", cuda_graph=False)
    assert session.cached_shapes == [(1, 3, 64, 64)]
    y = torch.randn(3, 3, 64, 64, device="cuda")
    assert (session(y) - eager(y)).abs().max().item() <= 1e-6
    assert sorted(session.cached_shapes) == [(1, 3, 64, 64), (3, 3, 64, 64)]
    z = torch.randn(2, 3, 80, 80, device="cuda")  # a third shape: no graph, the folded copy eagerly
    assert (session(z) - eager(z)).abs().max().item() <= 1e-6
    assert len(session.cached_shapes) == 2


def test_two_threads_share_one_session():
    model = _model("resnet50")
    inputs = [torch.randn(2, 3, 64, 64, device="cuda") for _ in range(4)]
    session = InferenceSession(model, inputs[0], device="cuda")
    expected = [session(x) for x in inputs]
    torch.cuda.synchronize()
    errors = []

    def work(k):
        try:
            torch.cuda.set_device(0)
            for i in range(50):
                j = (i + k) % len(inputs)
                out = session(inputs[j])
                torch.cuda.current_stream().synchronize()
                if not torch.equal(out, expected[j]):
                    errors.append(f"thread {k} call {i}: differs")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {k}: {e}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_ten_thousand_replays_bitwise_equal_and_no_memory_growth():
    model = _model("resnet18")
    x = torch.randn(1, 3, 64, 64, device="cuda")
    session = InferenceSession(model, x, device="cuda")
    first = session(x)
    for _ in range(100):
        session(x)
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    same = True
    for _ in range(10_000):
        same &= torch.equal(session(x), first)  # stays on the GPU: no host sync per replay
    torch.cuda.synchronize()
    assert bool(same)
    assert torch.cuda.memory_allocated() <= allocated
    assert torch.cuda.memory_reserved() <= reserved


def test_detector_graphed_backbone_and_fpn_same_boxes():
    from conftest import match_detections, scene

    torch.manual_seed(0)
    import torchvision
    from conftest import randomise_detector_

    ref = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                                               min_size=256, max_size=256)
    randomise_detector_(ref, 0, peak=5.0)
    model = osteonet.create_model("fasterrcnn_resnet50_fpn", num_classes=3, min_size=256, max_size=256)
    model.load_state_dict(ref.state_dict())
    model.eval()
    g = torch.Generator().manual_seed(1)
    images = [scene(256, 256, g).cuda(), scene(224, 256, g).cuda()]
    graphed = InferenceSession(model, images, device="cuda")
    eager = InferenceSession(model, images, device="cuda", cuda_graph=False)
    assert graphed.mode == "cuda_graph" and eager.mode == "eager"
    a, b = graphed(images), eager(images)
    for o, r in zip(a, b):
        assert torch.equal(o["labels"], r["labels"])
        assert (o["boxes"] - r["boxes"]).abs().max().item() <= 1e-3 if len(r["boxes"]) else True
    # and the eager model on the GPU (unfolded)
    with torch.no_grad():
        model_out = model.cuda()(images)
    for o, r in zip(a, model_out):
        match_detections({k: v.cpu() for k, v in o.items()}, {k: v.cpu() for k, v in r.items()})
    assert sum(len(o["boxes"]) for o in a) > 0, "the randomised detector should detect something"


@pytest.mark.parametrize("aggregator", ["lstm", "max"])
def test_padded_scan_session_graphs_equal_eager(aggregator):
    from osteonet import sequence as seq

    torch.manual_seed(0)
    enc = seq.create_slice_encoder().eval()
    agg = seq.create_aggregator(aggregator).eval()
    slices = torch.randn(20, 3, 96, 96, device="cuda")
    graphed = ScanSession(enc, agg, slices, lengths=(8, 16, 32), device="cuda")
    eager = ScanSession(enc, agg, slices, lengths=(8, 16, 32), device="cuda", cuda_graph=False)
    assert graphed.session.mode == "cuda_graph"
    for t in (20, 5, 40):  # padded to 32; to 8; two chunks (32 + 8)
        s = torch.randn(t, 3, 96, 96, device="cuda")
        a, b = graphed.slice_outputs(s), eager.slice_outputs(s)
        assert a.shape[0] == t and (a - b).abs().max().item() <= 1e-6
        ga, gb = graphed(s), eager(s)
        assert (ga - gb).abs().max().item() <= 1e-6
    assert sorted(graphed.session.cached_shapes) == [(8, 3, 96, 96), (32, 3, 96, 96)]


TRAIN_MODELS = {
    # the model each task trains (osteonet.tasks): one step with AMP on the GPU
    "classification": lambda: osteonet.create_model("resnet18", num_classes=3),
    "classification_dxa": lambda: osteonet.create_model("dxa_cnn21", num_classes=3, in_chans=1),
    "bmd_regressor": lambda: osteonet.create_model("densenet121", num_classes=1),
    "hip_classifier": lambda: osteonet.create_model("densenet121", num_classes=3),
    "ovf_encoder": lambda: osteonet.sequence.create_slice_encoder(),
}


@pytest.mark.parametrize("task", sorted(TRAIN_MODELS))
def test_amp_training_step_on_cuda_backbones(task):
    from osteonet import train as ot

    torch.manual_seed(0)
    model = TRAIN_MODELS[task]().cuda()
    c = model.in_chans
    n_out = model.num_classes
    x = torch.randn(4, c, 96, 96)
    y = torch.randn(4, 1) if n_out == 1 else torch.randint(0, n_out, (4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def step(m, batch):
        out = m(batch[0])
        if n_out == 1:
            return torch.nn.functional.mse_loss(out.float(), batch[1])
        return torch.nn.functional.cross_entropy(out.float(), batch[1])

    trainer = ot.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), epochs=1, amp=True, progress=False)
    assert trainer.device.type == "cuda"
    trainer.fit([(x, y)] * 2, step_fn=step)
    assert trainer.scaler.is_enabled()
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v.cpu(), before[k].cpu())]
    assert changed and all(torch.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.parametrize("name", ["unet", "unet_plusplus"])
def test_amp_training_step_on_cuda_segmenters(name):
    from osteonet import segmentation, train as ot

    torch.manual_seed(0)
    model = segmentation.create_segmenter(name, in_chans=1, num_classes=2, base_channels=8).cuda()
    x, y = torch.randn(2, 1, 64, 64), torch.randint(0, 2, (2, 64, 64))
    trainer = ot.Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), epochs=1, amp=True, progress=False)
    trainer.fit([(x, y)] * 2, step_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b[0]).float(), b[1]))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("attention", ["none", "ds"])
def test_amp_training_step_on_cuda_detector(attention):
    from conftest import scene
    from osteonet import train as ot

    torch.manual_seed(0)
    kw = {} if attention == "none" else {"attention": attention}
    model = osteonet.create_model("fasterrcnn", backbone="resnet50", num_classes=2, min_size=256, max_size=256, **kw).cuda()
    g = torch.Generator().manual_seed(0)
    images = [scene(256, 256, g), scene(256, 256, g)]
    targets = [{"boxes": torch.tensor([[40.0, 50.0, 120.0, 140.0]]), "labels": torch.tensor([1])} for _ in images]
    trainer = ot.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9), epochs=1, amp=True,
                         progress=False, freeze_bn=True)
    history = trainer.fit([(images, targets)] * 2)
    assert history and all(torch.isfinite(p).all() for p in model.parameters())


def test_amp_training_step_on_cuda_ovf_stage2_lstm():
    """Seed 002's stage 2: the LSTM over the frozen encoder's slice embeddings, the encoder's fc1 fine-tuned."""
    from osteonet import sequence as seq
    from osteonet import train as ot

    torch.manual_seed(0)
    enc = seq.create_slice_encoder().cuda()
    enc.freeze_batchnorm()
    agg = seq.create_aggregator("lstm").cuda()
    with torch.no_grad():
        pooled = [enc.backbone_features(torch.randn(t, 3, 96, 96, device="cuda")) for t in (12, 7)]
    labels = torch.tensor([0.0, 1.0])
    model = seq._Stage2Model(enc, agg)
    opt = torch.optim.SGD([{"params": list(agg.parameters())}, {"params": list(enc.fc1.parameters()), "lr": 1e-4}], lr=0.1)

    def step(m, batch):
        feats = [m.encoder.embed(p) for p in pooled]
        return torch.nn.functional.binary_cross_entropy_with_logits(m.aggregator.forward_logits(feats).float().view(-1),
                                                                    batch.view(-1))

    before = [p.detach().clone() for p in agg.parameters()]
    trainer = ot.Trainer(model, opt, epochs=1, amp=True, progress=False, device="cuda")
    trainer.fit([labels] * 2, step_fn=step)
    assert any(not torch.equal(a, b) for a, b in zip(before, agg.parameters()))
