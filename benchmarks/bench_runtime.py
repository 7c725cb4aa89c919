"""Inference runtime speed on this CPU: torchvision eager vs osteonet eager vs osteonet InferenceSession,
with the TorchScript peer (torch.jit.freeze + optimize_for_inference on the same model), float32 and
bfloat16 (channels-last), batch 1 and 8; median and p99 latency as ratios, all in one run.

Usage: python benchmarks/bench_runtime.py --out benchmarks/results [--repeats 20] [--cells resnet50:1,resnet50:8,...]

Cell ``resnet50_imagenet`` (issue 15) runs the ImageNet ResNet-50 (osteonet.weights) on natural pictures:
the bfloat16 accuracy check on real weights rather than random ones.

``--fuser onednn_graph`` (torch 2.x only, issue 20) adds the sessions with ``fuser="onednn_graph"`` in both
dtypes to the backbone cells, and their ratios to the peer. Debian 12's torch is 1.13; run it in
``make test-torch2``'s trixie root (docs/runtime.md):

    chroot ROOT bash -c "cd /src && PYTHONPATH=/opt/osteonet python3 benchmarks/bench_runtime.py --fuser onednn_graph \
        --cells resnet50:1,resnet50:8,dsnet_resnet50:1,dsnet_resnet50:8,densenet121:1,densenet121:8,resnet50_imagenet:1 \
        --out benchmarks/results/torch2"

Every variant of one (model, batch) cell is timed round-robin (one call each, repeated), so load
changes of this shared machine hit all variants alike. Weights: the osteonet model's random init
with BatchNorm statistics and affine parameters moved away from identity (so folding is not
trivial), loaded into torchvision's model. One thread by default (see --threads). Accuracy: max |softmax(variant) - softmax(torchvision eager
float32)| on the benchmark input; for the detector cells (fasterrcnn_resnet50_fpn, dsnet_detector) the
fraction of the baseline's detections a variant misses.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torchvision

import osteonet
from osteonet.io import write_text
from osteonet.runtime import FUSERS, InferenceSession

TORCH2 = int(torch.__version__.split(".")[0]) >= 2
TORCHVISION = {"resnet50": "resnet50", "dsnet_resnet50": None, "mobilenet_v2": "mobilenet_v2",
               "densenet121": "densenet121"}


def perturb_(model, scale=0.05, seed=1):
    """BatchNorm statistics and affine parameters away from identity (so folding does work); the
    convolution weights keep their init (perturbing them too makes random logits so peaked that
    bfloat16 flips classes, which says nothing about trained networks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or t.dim() != 1 or name.startswith(("fc.", "classifier")):
                continue
            noise = torch.randn(t.shape, generator=g, dtype=t.dtype) * scale
            if name.endswith("running_var"):
                t.copy_(1.0 + noise.abs())
            elif name.endswith("running_mean"):
                t.copy_(noise)
            else:
                t.add_(noise)


@contextlib.contextmanager
def captured_stderr():
    """File descriptor 2 (where LibTorch's C++ warnings go) into a temporary file; yields a reader of it."""
    sys.stderr.flush()
    saved, tmp = os.dup(2), tempfile.TemporaryFile(mode="w+")
    os.dup2(tmp.fileno(), 2)
    text = []
    try:
        yield lambda: "".join(text)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        tmp.seek(0)
        text.append(tmp.read())
        tmp.close()
        sys.stderr.write(text[0])


def freeze(model, x):
    # torch 2.x: inference_mode, as Debian 13's torch 2.6 (built with Vulkan) cannot dispatch max_pool2d under
    # autograd for oneDNN tensors (docs/building.md)
    with torch.inference_mode() if TORCH2 else torch.no_grad():
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))


def machine():
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        text = ""
    if "Model name" not in text:  # a minimal root (make test-torch2's, no /sys): the kernel's own description
        text = open("/proc/cpuinfo").read().replace("model name", "Model name").replace("flags", "Flags")
    info = {k.strip(): v for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}
    flags = info.get("Flags", "").split()
    return {
        "cpu": info.get("Model name", platform.processor()).strip(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16_flags": [f for f in flags if "bf16" in f or f.startswith("amx")],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "loadavg_before": os.getloadavg(),
        "note": "shared 2-core VM (other engineers' jobs may run); variants alternate call by call",
    }


def natural_images(batch, size):
    """scikit-image's labelled natural pictures (chelsea, coffee, astronaut, rocket, ...) in torchvision's
    evaluation transform, flipped for a second pass when the batch asks for more."""
    from PIL import Image
    from skimage import data

    tf = torchvision.transforms.Compose([
        torchvision.transforms.Resize(size * 8 // 7), torchvision.transforms.CenterCrop(size),
        torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    pics = [tf(Image.fromarray(getattr(data, n)())) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    pics += [p.flip(-1) for p in pics]
    return torch.stack([pics[i % len(pics)] for i in range(batch)])


def peer_bf16_input(x):
    """The input as the TorchScript bfloat16 programs take it: bfloat16, channels-last."""
    return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def torchvision_v1(state):
    """torchvision's resnet50 with ResNet v1 strides (stride on conv1 of each stage's first block)."""
    tv = torchvision.models.resnet50(weights=None)
    for layer in (tv.layer2, tv.layer3, tv.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    tv.load_state_dict(state)
    return tv


def bench_cell(name, batch, size, repeats, fuser=None):
    """``resnet50_imagenet``: the ImageNet ResNet-50 (osteonet.weights) on natural images, torchvision's
    resnet50 with v1 strides as its peer; otherwise random weights (perturbed BatchNorm) on noise."""
    torch.manual_seed(0)
    pretrained = name == "resnet50_imagenet"
    if pretrained:
        ours = osteonet.create_model("resnet50", pretrained="imagenet").eval()
        x = natural_images(batch, size)
    else:
        ours = osteonet.create_model(name).eval()
        perturb_(ours)
        x = torch.randn(batch, 3, size, size)
    xb = peer_bf16_input(x)
    variants = {}
    if pretrained:
        tv = torchvision_v1(ours.state_dict()).eval()
        variants["torchvision_eager_fp32"] = (lambda m: (lambda: m(x)))(tv)
        ref_model, peer_src = tv, "torchvision (v1 strides)"
    elif TORCHVISION[name]:
        tv = getattr(torchvision.models, TORCHVISION[name])(weights=None).eval()
        tv.load_state_dict(ours.state_dict())
        ref_model, peer_src = tv, "torchvision"
        variants["torchvision_eager_fp32"] = (lambda m: (lambda: m(x)))(tv)
    else:  # no torchvision model: the peer traces the osteonet model (its C++ ops) from Python
        ref_model, peer_src = ours, "osteonet"
    if pretrained:
        tvb = torchvision_v1(ours.state_dict()).eval().to(memory_format=torch.channels_last).to(torch.bfloat16)
    else:
        tvb = getattr(torchvision.models, TORCHVISION[name])(weights=None) if TORCHVISION[name] else \
            osteonet.create_model(name)
        tvb.load_state_dict(ours.state_dict())
        tvb = tvb.eval().to(memory_format=torch.channels_last).to(torch.bfloat16) if TORCHVISION[name] else \
            tvb.eval().to(torch.bfloat16)
    with torch.no_grad():
        ref = ref_model(x).softmax(1)
    variants["osteonet_eager_fp32"] = lambda: ours(x)
    t0 = time.perf_counter()
    peer32 = freeze(ref_model, x)
    t_peer = time.perf_counter() - t0
    variants["torchscript_peer_fp32"] = lambda: peer32(x)
    peer16 = freeze(tvb, xb)
    variants["torchscript_peer_bf16_cl"] = lambda: peer16(xb)
    t0 = time.perf_counter()
    s32 = InferenceSession(ours, x, dtype="float32")
    t_s32 = time.perf_counter() - t0
    variants["session_fp32"] = lambda: s32(x)
    with captured_stderr() as log:
        s16 = InferenceSession(ours, x, dtype="bfloat16")
    variants["session_bf16"] = lambda: s16(x)
    if fuser:
        f32 = InferenceSession(ours, x, dtype="float32", fuser=fuser)
        variants[f"session_{fuser}_fp32"] = lambda: f32(x)
        with captured_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the bfloat16 fall-back: its dtype is recorded
            f16 = InferenceSession(ours, x, dtype="bfloat16", fuser=fuser)
        variants[f"session_{fuser}_bf16"] = lambda: f16(x)
    # the bfloat16 programs' checks: full bfloat16's, then with float32 ends when it missed (LibTorch's warnings say
    # them; s16.accuracy is the check of what the session runs, after a fall-back to float32 the float32 program's)
    found = re.findall(r"bfloat16 differs from float32 by ([0-9.eE+-]+)|in float32: ([0-9.eE+-]+)", log())
    checks = [float(a or b) for a, b in found]
    bf16_check = s16.accuracy if s16.dtype == "bfloat16" else (checks[-1] if checks else None)

    base = "torchvision_eager_fp32" if "torchvision_eager_fp32" in variants else "osteonet_eager_fp32"
    cell = measure(variants, lambda out: float((out.float().softmax(1) - ref).abs().max()), repeats, base, s32, s16)
    if pretrained:  # the classes: how often each variant's top-1 is the float32 model's
        with torch.inference_mode():
            cell["top1_agreement_vs_eager_fp32"] = {
                k: float((fn().float().argmax(1) == ref.argmax(1)).float().mean()) for k, fn in variants.items()}
            cell["top1_fp32"] = ref.argmax(1).tolist()
    cell["session_bf16_check"] = bf16_check
    cell["session_bf16_full_check"] = checks[0] if checks else bf16_check
    cell["session_bf16_float32_modules"] = list(s16.float32_modules)
    if pretrained and batch == 1:  # beyond the session's example: each picture alone through the batch-1 programs
        pics = natural_images(8, size)
        bf16_runs = {"session_bf16": s16, "torchscript_peer_bf16_cl": lambda p: peer16(peer_bf16_input(p))}
        if fuser:
            bf16_runs[f"session_{fuser}_bf16"] = f16
        with torch.inference_mode():
            ref8 = ref_model(pics).softmax(1)
            cell["max_prob_diff_per_picture"] = {
                k: [float((run(pics[i:i + 1]).float().softmax(1) - ref8[i:i + 1]).abs().max()) for i in range(len(pics))]
                for k, run in bf16_runs.items()}
    if fuser:
        med = cell["median_ms"]
        cell["fuser"] = {"name": fuser, "dtypes": {"fp32": f32.dtype, "bf16": runs(f16)},
                         "accuracy_at_construction": {"fp32": f32.accuracy, "bf16": f16.accuracy},
                         "programs": {"fp32": {str(k): v for k, v in f32.programs.items()},
                                      "bf16": {str(k): v for k, v in f16.programs.items()}},
                         "vs_peer": {"fp32": med["torchscript_peer_fp32"] / med[f"session_{fuser}_fp32"],
                                     "bf16": med["torchscript_peer_bf16_cl"] / med[f"session_{fuser}_bf16"]}}
    cell.update({"model": name, "batch": batch, "size": size, "peer_source": peer_src,
                 "setup_s": {"torchscript_peer_fp32": t_peer, "session_fp32": t_s32}})
    return cell


def measure(variants, error, repeats, base, s32, s16):
    """Times the variants round-robin (one call each, ``repeats`` times, after two warm-up calls that
    also give each variant's ``error(output)``); medians, p99, speed-ups and session/peer ratios."""
    acc, times = {}, {k: [] for k in variants}
    # inference_mode: Debian 13's torch 2.6 (built with Vulkan) cannot dispatch a frozen program's max_pool2d
    # under autograd (docs/building.md)
    with torch.inference_mode():
        for k, fn in variants.items():
            for _ in range(2):
                out = fn()
            acc[k] = error(out)
        for _ in range(repeats):
            for k, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    p99 = {k: float(np.percentile(v, 99)) for k, v in times.items()}
    return {
        "repeats": repeats, "baseline": base, "median_ms": med, "p99_ms": p99,
        "speedup_vs_baseline": {k: med[base] / v for k, v in med.items()},
        "session_vs_peer": {"fp32": med["torchscript_peer_fp32"] / med["session_fp32"],
                            "bf16": med["torchscript_peer_bf16_cl"] / med["session_bf16"]}
        if "torchscript_peer_fp32" in med else None,
        "max_prob_diff_vs_eager_fp32": acc,
        "session_accuracy_at_construction": {"fp32": s32.accuracy, "bf16": s16.accuracy},
        "session_dtypes": {"fp32": s32.dtype, "bf16": runs(s16)},
    }


def runs(session):
    """What a session computes in: its dtype, with its float32 ends when it keeps them."""
    return session.dtype + (f" ({', '.join(session.float32_modules)} float32)" if session.float32_modules else "")


class TorchScan(torch.nn.Module):
    """Seed 002's scan in plain PyTorch (the reference and the TorchScript peer's source): torchvision
    resnet34 -> fc1/BN/ReLU (32-d slice embedding) -> torch.nn.LSTM(32, 256) -> FC -> sigmoid. With
    ``bf16_encoder`` the encoder runs in bfloat16 channels-last and the LSTM in float32 (CPU LSTMs
    have no bfloat16 kernel in this torch)."""

    def __init__(self, bf16_encoder=False):
        super().__init__()
        self.backbone = torchvision.models.resnet34(weights=None)
        self.backbone.fc = torch.nn.Identity()
        self.fc1, self.bn1 = torch.nn.Linear(512, 32), torch.nn.BatchNorm1d(32)
        self.lstm = torch.nn.LSTM(32, 256, batch_first=True)
        self.fc = torch.nn.Linear(256, 1)
        self.bf16_encoder = bf16_encoder

    def forward(self, x):  # T x 3 x 224 x 224 preprocessed slices of one scan
        f = torch.relu(self.bn1(self.fc1(self.backbone(x)))).float()
        _, (h, _) = self.lstm(f.unsqueeze(0))
        return torch.sigmoid(self.fc(h[-1]))


def scan_reference(enc, agg, bf16=False):
    """TorchScan holding the weights of osteonet's slice encoder ``enc`` and LSTM aggregator ``agg``."""
    m = TorchScan(bf16)
    m.backbone.load_state_dict({k[len("backbone."):]: v for k, v in enc.state_dict().items() if k.startswith("backbone.")})
    for k, v in list(enc.state_dict().items()) + list(agg.state_dict().items()):
        if not k.startswith("backbone.") and k in m.state_dict():
            m.state_dict()[k].copy_(v)
    m.eval()
    if bf16:
        for part in (m.backbone, m.fc1, m.bn1):
            part.to(torch.bfloat16)
        m.backbone.to(memory_format=torch.channels_last)
    return m


def bench_scan(slices, size, repeats):
    """One scan of ``slices`` preprocessed slices (preprocessing is the same for all variants and left
    out): ovf_resnet34 embeddings + LSTM aggregator; the session runs the encoder with features=True."""
    from osteonet import sequence as seq

    torch.manual_seed(0)
    enc = seq.create_slice_encoder().eval()
    perturb_(enc)
    agg = seq.create_aggregator("lstm").eval()
    x = torch.randn(slices, 3, size, size)
    xb = peer_bf16_input(x)

    torch_scan = lambda bf16: scan_reference(enc, agg, bf16)  # noqa: E731
    ref_model = torch_scan(False)
    with torch.no_grad():
        ref = ref_model(x)
        ours = agg(enc.features(x)[None])
    assert float((ours - ref).abs().max()) < 1e-4, "osteonet and the PyTorch scan disagree"
    variants = {"pytorch_eager_fp32": lambda: ref_model(x), "osteonet_eager_fp32": lambda: agg(enc.features(x)[None])}
    peer32 = freeze(ref_model, x)
    variants["torchscript_peer_fp32"] = lambda: peer32(x)
    peer16 = freeze(torch_scan(True), xb)
    variants["torchscript_peer_bf16_cl"] = lambda: peer16(xb)
    s32 = InferenceSession(enc, x, dtype="float32", features=True)
    variants["session_fp32"] = lambda: agg(s32(x)[None])
    s16 = InferenceSession(enc, x, dtype="bfloat16", features=True)
    variants["session_bf16"] = lambda: agg(s16(x)[None])
    cell = measure(variants, lambda out: float((out.float() - ref).abs().max()), repeats, "pytorch_eager_fp32", s32, s16)
    cell.update({"model": f"ovf scan ({slices} slices: ovf_resnet34 + LSTM)", "batch": slices, "size": size,
                 "peer_source": "torchvision resnet34 + torch.nn.LSTM"})
    return cell


def scene(size, g):
    """A structured test image: rectangles of random grey levels on a smooth gradient."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2]) * 0.5
    for _ in range(8):
        y1, x1 = (int(v) for v in torch.randint(0, size * 3 // 4, (2,), generator=g))
        h, w = (int(v) for v in torch.randint(size // 16, size // 3, (2,), generator=g))
        img[:, y1:y1 + h, x1:x1 + w] = torch.rand(3, 1, 1, generator=g)
    return img


def peaked_heads(state, seed=0, peak=5.0):
    """A detector state dict (torchvision's names) with random BatchNorm statistics and RPN/box
    classifiers peaked by ``peak``, so that a random-weight detector returns detections whose scores are
    well apart (as tests/python/conftest.py's randomise_detector_)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        t = t.clone()
        if name.endswith("running_mean"):
            t = torch.randn(t.shape, generator=g) * 0.1
        elif name.endswith("running_var"):
            t = torch.rand(t.shape, generator=g) + 0.5
        elif name in ("roi_heads.box_predictor.cls_score.weight", "rpn.head.cls_logits.weight"):
            t = t * peak
        elif name == "roi_heads.box_predictor.cls_score.bias":
            t = torch.randn(t.shape, generator=g) * 2
        out[name] = t
    return out


def frozen_backbone_detector(tv, images, bf16):
    """The TorchScript peer for a torchvision detector, split as the session is: backbone + FPN traced at
    the padded batch shape, frozen and optimised for inference (bfloat16 channels-last inside), the
    RPN, RoI heads and post-processing eager in float32."""
    import copy
    from collections import OrderedDict

    m = copy.deepcopy(tv).eval()
    with torch.no_grad():
        batch = m.transform(images)[0].tensors
        names = list(m.backbone(batch).keys())
    body = m.backbone
    if bf16:
        body = body.to(torch.bfloat16).to(memory_format=torch.channels_last)

    class Maps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            if bf16:
                x = peer_bf16_input(x)
            return tuple(v.float().contiguous() for v in self.body(x).values())

    program = freeze(Maps().eval(), batch)

    class Backbone(torch.nn.Module):
        out_channels = tv.backbone.out_channels

        def forward(self, x):
            return OrderedDict(zip(names, program(x)))

    m.backbone = Backbone()
    return m


def detection_error(ref):
    """Fraction of the baseline's detections (per image) without a detection of the same label at
    IoU > 0.9 and |score difference| < 1e-2 in a variant's output."""
    from osteonet.detection import box_iou

    def error(out):
        missed = total = 0
        for o, r in zip(out, ref):
            n = r["boxes"].shape[0]
            total += n
            if n == 0:
                continue
            if o["boxes"].shape[0] == 0:
                missed += n
                continue
            ok = (box_iou(r["boxes"], o["boxes"]) > 0.9) & (r["labels"][:, None] == o["labels"][None, :]) & \
                ((r["scores"][:, None] - o["scores"][None, :]).abs() < 1e-2)
            missed += int((~ok.any(1)).sum())
        return missed / max(total, 1)

    return error


def bench_detector(name, batch, size, repeats):
    """A Faster R-CNN on ``batch`` structured size x size images (min_size = max_size = size).
    ``fasterrcnn_resnet50_fpn``: against torchvision's (same weights) and its TorchScript peer
    (frozen_backbone_detector); ``dsnet_detector``: DSNet's detector (ResNet-50 + DS attention + FPN,
    3 classes), which has no torchvision counterpart: osteonet eager is the baseline and there is no peer."""
    torch.manual_seed(0)
    kw = dict(min_size=size, max_size=size)
    g = torch.Generator().manual_seed(1)
    images = [scene(size, g) for _ in range(batch)]
    variants = {}
    if name == "fasterrcnn_resnet50_fpn":
        tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                                                   **kw).eval()
        tv.load_state_dict(peaked_heads(tv.state_dict()))
        ours = osteonet.create_model(name, num_classes=3, **kw).eval()
        ours.load_state_dict(tv.state_dict())
        variants["torchvision_eager_fp32"] = lambda: tv(images)
        base, peer_src = "torchvision_eager_fp32", "torchvision (backbone + FPN frozen per padded shape)"
    else:
        ours = osteonet.create_model("fasterrcnn", backbone="dsnet_resnet50", num_classes=3, **kw).eval()
        ours.load_state_dict(peaked_heads(ours.state_dict()))
        base, peer_src = "osteonet_eager_fp32", None
    variants["osteonet_eager_fp32"] = lambda: ours(images)
    with torch.no_grad():
        ref = (tv if peer_src else ours)(images)
    if peer_src:
        peer32 = frozen_backbone_detector(tv, images, bf16=False)
        variants["torchscript_peer_fp32"] = lambda: peer32(images)
        peer16 = frozen_backbone_detector(tv, images, bf16=True)
        variants["torchscript_peer_bf16_cl"] = lambda: peer16(images)
    # The frozen backbone + FPN program (freeze=True; a CPU detector session runs eagerly by default).
    s32 = InferenceSession(ours, images, dtype="float32", freeze=True)
    variants["session_fp32"] = lambda: s32(images)
    s16 = InferenceSession(ours, images, dtype="bfloat16", freeze=True)
    variants["session_bf16"] = lambda: s16(images)
    cell = measure(variants, detection_error(ref), repeats, base, s32, s16)
    label = "DSNet detector (dsnet_resnet50 + FPN)" if name == "dsnet_detector" else name
    cell.update({"model": f"{label} @ {size} px",
                 "batch": batch, "size": size, "peer_source": peer_src,
                 "detections_per_image": [int(r["boxes"].shape[0]) for r in ref]})
    return cell


def markdown(res):
    m = res["machine"]
    lines = ["# Inference runtime (issue 8): CPU latency", "",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
             f"torchvision {m['torchvision']}, oneDNN {m['mkldnn']}, bf16 flags {' '.join(m['bf16_flags'])}; "
             f"load average before {m['loadavg_before'][0]:.2f}. {m['note']}. No GPU: CUDA graphs not measured.", "",
             "Median ms (p99 ms); speed-up = baseline median / variant median (baseline: torchvision eager float32, "
             "osteonet eager for dsnet_resnet50, the PyTorch pipeline for the scan); `session/peer` > 1 means the "
             "session is faster than TorchScript freeze + optimize_for_inference on the same model; max |Δp| vs eager "
             "float32 (softmax probabilities; for the scan, its fracture probability). The scan cell takes "
             "preprocessed 224-px slices; its session runs the encoder with `features=True` and osteonet's LSTM "
             "aggregator eagerly. Detector cells (S x S structured images, S after the model's name, random weights with peaked "
             "classifiers): the last column is instead the fraction of the baseline's detections that a variant "
             "misses (no detection of the same label at IoU > 0.9 with |Δscore| < 1e-2); the session and the peer "
             "prepare backbone + FPN per padded batch shape and run proposals, RoIAlign, box head and NMS eagerly "
             "in float32. The DSNet detector has no torchvision counterpart: osteonet eager is its baseline and "
             "it has no peer (nan).", "",
             "| model | batch | variant | median ms | p99 ms | speed-up | max abs Δprob (detectors: missed) |",
             "|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        for k in c["median_ms"]:
            lines.append(f"| {c['model']} | {c['batch']} | {k} | {c['median_ms'][k]:.1f} | {c['p99_ms'][k]:.1f} | "
                         f"{c['speedup_vs_baseline'][k]:.2f}× | {c['max_prob_diff_vs_eager_fp32'][k]:.1e} |")
    real = [c for c in res["cells"] if "top1_agreement_vs_eager_fp32" in c]
    if real:
        lines += ["", "bfloat16 on real weights (`resnet50_imagenet`: the ImageNet ResNet-50 of osteonet.weights on "
                  "scikit-image's natural pictures, torchvision's resnet50 with v1 strides as baseline and peer): the "
                  "session's accuracy checks at construction (max |Δp| against float32 of its full bfloat16 program, "
                  "and, where that is above 1e-2, of the program with float32 ends: stem convolution and classifier "
                  "in float32; above 1e-2 again it keeps float32) and what it runs, beside the TorchScript bfloat16 "
                  "peer; then each of the 8 pictures (chelsea, coffee, astronaut, rocket and their mirror images) "
                  "alone through the batch-1 programs: the largest max |Δp| and how many pictures are within 1e-2.",
                  "", "| batch | session bf16: check full / served | session bf16 runs | peer bf16 max abs Δp | "
                  "top-1 agreement: session bf16 / peer bf16 | median ms: session bf16 / peer bf16 |",
                  "|---|---|---|---|---|---|"]
        for c in real:
            agree, med = c["top1_agreement_vs_eager_fp32"], c["median_ms"]
            check, full = c.get("session_bf16_check"), c.get("session_bf16_full_check")
            lines.append(f"| {c['batch']} | {'-' if full is None else f'{full:.1e}'} / "
                         f"{'-' if check is None else f'{check:.1e}'} | "
                         f"{c['session_dtypes']['bf16']} | {c['max_prob_diff_vs_eager_fp32']['torchscript_peer_bf16_cl']:.1e}"
                         f" | {agree['session_bf16']:.2f} / {agree['torchscript_peer_bf16_cl']:.2f} | "
                         f"{med['session_bf16']:.1f} / {med['torchscript_peer_bf16_cl']:.1f} |")
        per = [c for c in real if c.get("max_prob_diff_per_picture")]
        if per:
            lines += ["", "| batch | bfloat16 program | largest max abs Δp over 8 pictures | pictures within 1e-2 |",
                      "|---|---|---|---|"]
            for c in per:
                for k, v in c["max_prob_diff_per_picture"].items():
                    lines.append(f"| {c['batch']} | {k} | {max(v):.1e} | {sum(d <= 1e-2 for d in v)} / {len(v)} |")
    lines += ["", "| model | batch | session/peer float32 | session/peer bfloat16 |", "|---|---|---|---|"]
    for c in res["cells"]:
        peer = c["session_vs_peer"] or {"fp32": float("nan"), "bf16": float("nan")}
        lines.append(f"| {c['model']} | {c['batch']} | {peer['fp32']:.2f} | {peer['bf16']:.2f} |")
    fused = [c for c in res["cells"] if "fuser" in c]
    if fused:
        lines += ["", f"Sessions with `fuser=\"{fused[0]['fuser']['name']}\"` (TorchScript's oneDNN Graph fuser on "
                  "each shape's program traced from the folded copy, timed against the shape's frozen program when "
                  "the shape comes; the faster serves it): the ratio to the peer (> 1: faster), the dtype each runs "
                  "after the session's check (bfloat16 above 1e-2 keeps float32), the fused program's check (max "
                  "|Δp| against eager float32 on the cell's input; above the tolerance the session runs without "
                  "the fuser: '-'), and what serves the cell's shape (fusion groups).", "",
                  "| model | batch | fused/peer float32 | fused/peer bfloat16 | bf16 session runs | check fp32 | "
                  "check bf16 | serves fp32 | serves bf16 |", "|---|---|---|---|---|---|---|---|---|"]

        def serves(programs):
            return ", ".join(f"{v['serves']} ({v['fusion_groups']})" for v in programs.values()) or "-"

        for c in fused:
            f = c["fuser"]
            lines.append(f"| {c['model']} | {c['batch']} | {f['vs_peer']['fp32']:.2f} | {f['vs_peer']['bf16']:.2f} | "
                         f"{f['dtypes']['bf16']} | {f['accuracy_at_construction']['fp32']:.1e} | "
                         f"{f['accuracy_at_construction']['bf16']:.1e} | {serves(f['programs']['fp32'])} | "
                         f"{serves(f['programs']['bf16'])} |")
    lines += ["", f"Command: `{res['command']}`", ""]
    for u in res.get("updates", []):
        lines += [f"Rerun of {', '.join(u['cells'])} (load average before {u['machine']['loadavg_before'][0]:.2f}): "
                  f"`{u['command']} --update`", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--size", type=int, default=224)
    # Detector cells: square images, min_size = max_size (DSNet's lumbar CT slices are 512 x 512).
    ap.add_argument("--detector-size", type=int, default=512)
    # One thread: on this shared 2-core VM a second OpenMP thread stalls whenever another job holds a
    # core (mobilenet_v2 batch 1: 22 ms with 1 thread, 1600 ms with 2 under load).
    ap.add_argument("--threads", type=int, default=1)
    # dsnet_resnet50 at batch 8 is left out by default (run time on the shared machine); add it with --cells.
    ap.add_argument("--cells", default="resnet50:1,resnet50:8,mobilenet_v2:1,mobilenet_v2:8,densenet121:1,"
                                       "densenet121:8,dsnet_resnet50:1,ovf_scan:64,fasterrcnn_resnet50_fpn:1,"
                                       "dsnet_detector:1")
    ap.add_argument("--fuser", choices=FUSERS, default=None,
                    help="add sessions with this fuser to the backbone cells (oneDNN Graph: torch 2.x)")
    ap.add_argument("--update", action="store_true",
                    help="replace only the measured cells of an existing --out/runtime.json (a targeted rerun); "
                         "each cell records its own load average")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if TORCH2:
        # The Python-side frozen programs (the peer) as the session's C++ ones run them: without torch 2.x's CPU
        # TensorExpr fuser, which compiles a ResNet's or DenseNet's frozen graph for minutes (docs/building.md)
        torch._C._jit_set_texpr_fuser_enabled(False)
    res = {"machine": machine(), "cells": [],
           "command": "python benchmarks/bench_runtime.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "update")
               and v is not None)}
    for cell_name in args.cells.split(","):
        name, b = cell_name.split(":")[0], int(cell_name.split(":")[1])
        reps = args.repeats if b == 1 and name != "dsnet_resnet50" else max(5, args.repeats // 4)
        load = os.getloadavg()[0]
        if name == "ovf_scan":
            cell = bench_scan(b, args.size, reps)
        elif name in ("fasterrcnn_resnet50_fpn", "dsnet_detector"):
            cell = bench_detector(name, b, args.detector_size, max(5, args.repeats // 4) if b > 1 else args.repeats // 2)
        else:
            cell = bench_cell(name, b, args.size, reps, args.fuser)
        cell["loadavg"] = [load, os.getloadavg()[0]]
        res["cells"].append(cell)
        print(json.dumps({k: cell[k] for k in ("model", "batch", "median_ms", "session_vs_peer",
                                               "max_prob_diff_vs_eager_fp32")}), flush=True)
    if args.update and os.path.exists(os.path.join(args.out, "runtime.json")):
        with open(os.path.join(args.out, "runtime.json")) as f:
            old = json.load(f)
        fresh = {(c["model"], c["batch"]): c for c in res["cells"]}
        cells = [fresh.pop((c["model"], c["batch"]), c) for c in old["cells"]] + list(fresh.values())
        old["cells"] = cells
        old.setdefault("updates", [])
        old["updates"].append({"command": res["command"], "cells": [f"{m}:{b}" for m, b in
                                                                   ((c["model"], c["batch"]) for c in res["cells"])],
                               "machine": res["machine"]})
        res = old
    for ext, text in (("json", json.dumps(res, indent=1)), ("md", markdown(res))):
        write_text(os.path.join(args.out, f"runtime.{ext}"), text)


if __name__ == "__main__":
    main()
