"""One training step, profiled: the DSNet detector and seed 002's fracture pipeline against torchvision (issue 20).

Cells, each variant alternated step by step in one run so that drifts in machine load hit all of them:

- ``detector``: one SGD step (forward with losses, backward, momentum update) of Faster R-CNN on two S x S
  images with two boxes each: torchvision's ``fasterrcnn_resnet50_fpn`` (random weights, trainable BatchNorm,
  as torchvision builds it without pretrained weights), osteonet's ``fasterrcnn_resnet50_fpn`` (the same
  network, its weights copied from torchvision's) and the DSNet detector (``dsnet_resnet50`` + FPN).
- ``fracture``: seed 002's stage 1, one step of the slice encoder (ResNet-34 + FC 512->32->1, BCE) on B slices
  of 224 px, against torchvision's ResNet-34 with the same head; and stage 2, one step of the LSTM aggregator
  on B scans' 32-d slice features.
- ``roi_align``: the box head's MultiScaleRoIAlign alone (forward, and forward + backward) on FPN maps
  (P2-P5, 256 channels) of two S x S images with 512 sampled RoIs per image, osteonet's against torchvision's (whose NCHW kernel has
  the arithmetic of osteonet's NCHW kernel; osteonet picks its channels-last kernel here).

Then one profiled step per osteonet variant: the forward by stage (the detector's record_function scopes),
the backward and the optimiser step, and the operators that take the most time.

    .venv/bin/python benchmarks/bench_training.py [--size 512] [--repeats 5] [--threads 1]
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torchvision

import osteonet
from osteonet.io import write_text

sys.path.insert(0, os.path.dirname(__file__))
from bench_backbones import machine, timed  # noqa: E402

FORWARD_STAGES = ["osteonet::detector.transform", "osteonet::detector.body", "osteonet::detector.fpn",
                  "osteonet::detector.rpn", "osteonet::roi_heads.box_roi_pool", "osteonet::roi_heads.box_head"]


def detector_batch(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(2)]
    s = size / 512
    targets = [{"boxes": torch.tensor([[100., 120., 200., 260.], [250., 200., 330., 300.]]) * s,
                "labels": torch.tensor([1, 2])} for _ in images]
    return images, targets


def sgd(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)


def detector_step(model, opt, images, targets):
    def step():
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def detector_variants(size):
    kw = dict(num_classes=3, min_size=size, max_size=size)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kw).train()
    ours = osteonet.create_model("fasterrcnn_resnet50_fpn", **kw)
    ours.load_state_dict(tv.state_dict())
    dsnet = osteonet.create_model("fasterrcnn", backbone="dsnet_resnet50", **kw)
    images, targets = detector_batch(size)
    return {name: detector_step(m.train(), sgd(m), images, targets)
            for name, m in (("torchvision fasterrcnn_resnet50_fpn", tv), ("osteonet fasterrcnn_resnet50_fpn", ours),
                            ("osteonet DSNet detector", dsnet))}


def fracture_variants(batch):
    g = torch.Generator().manual_seed(1)
    slices = torch.rand(batch, 3, 224, 224, generator=g)
    labels = (torch.rand(batch, generator=g) > 0.5).float()
    tv = torchvision.models.resnet34()
    tv.fc = torch.nn.Sequential(torch.nn.Linear(512, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 1))
    enc = osteonet.sequence.create_slice_encoder()
    agg = osteonet.create_model("lstm")
    feats = torch.randn(batch, 24, 32, generator=g)
    bce = torch.nn.BCEWithLogitsLoss()

    def encoder_step(model, logits):
        opt = sgd(model.train())

        def step():
            loss = bce(logits(model, slices).reshape(-1), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    agg_opt = sgd(agg.train())

    def lstm_step():
        p = agg(feats).reshape(-1).clamp(1e-6, 1 - 1e-6)
        loss = torch.nn.functional.binary_cross_entropy(p, labels)
        agg_opt.zero_grad(set_to_none=True)
        loss.backward()
        agg_opt.step()

    return {"torchvision resnet34 + slice head": encoder_step(tv, lambda m, x: m(x)),
            "osteonet slice encoder (ovf_resnet34)": encoder_step(enc, lambda m, x: m.forward_logits(x)
                                                                   if hasattr(m, "forward_logits") else m(x)),
            "osteonet LSTM aggregator (24 slices)": lstm_step}


def roi_align_variants(size):
    """The box head's pooling on FPN maps P2-P5 of two S x S images (512 sampled RoIs each): osteonet's
    MultiScaleRoIAlign against torchvision's (NCHW kernel; osteonet's NCHW kernel has its arithmetic)."""
    from osteonet import _core

    g = torch.Generator().manual_seed(2)
    names = ["0", "1", "2", "3"]  # the FPN's maps P2-P5 (strides 4-32, 256 channels) of 2 images
    maps = {k: torch.randn(2, 256, size // 2 ** (i + 2), size // 2 ** (i + 2), generator=g) for i, k in enumerate(names)}
    images = range(2)
    boxes = []
    for _ in images:
        xy = torch.rand(512, 2, generator=g) * size * 0.8
        wh = torch.rand(512, 2, generator=g) * size * 0.3 + 8
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1))
    sizes = [(size, size)] * len(images)
    tv = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    ref = tv({k: maps[k] for k in names}, boxes, sizes)
    got = _core.multiscale_roi_align([maps[k] for k in names], boxes, [list(s) for s in sizes], 7, 2)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), float((got - ref).abs().max())

    def run(ours, backward):
        feats = [maps[k].detach().clone().requires_grad_(backward) for k in names]

        def step():
            with torch.set_grad_enabled(backward):
                out = (_core.multiscale_roi_align(feats, boxes, [list(s) for s in sizes], 7, 2) if ours
                       else tv(dict(zip(names, feats)), boxes, sizes))
                if backward:
                    out.sum().backward()
        return step

    return {"forward, torchvision": run(False, False), "forward, osteonet": run(True, False),
            "forward + backward, torchvision": run(False, True), "forward + backward, osteonet": run(True, True)}


def alternate(variants, repeats):
    for fn in variants.values():  # warm-up (lazy initialisation, oneDNN primitive caches)
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn))
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "n": len(v)}
            for k, v in times.items()}


def profile(fn, stages):
    """One profiled call: the time of each forward stage, the backward and optimiser parts, and the top operators
    by self time."""
    with torch.autograd.profiler.profile() as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    stage = {s: next((e.cpu_time_total / 1e3 for e in events if e.key == s), None) for s in stages}
    backward = sum(e.self_cpu_time_total for e in events if "backward" in e.key.lower() or
                   e.key.startswith("autograd::engine") or e.key.startswith("torch::autograd::")) / 1e3
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    return {"total_ms": total, "stages_ms": {s.split("::")[-1]: v for s, v in stage.items() if v is not None},
            "backward_ops_ms": backward,
            "top_ops": [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in top]}


def markdown(res):
    m = res["machine"]
    lines = ["# One training step, profiled (issue 20)", "",
             f"Machine: {m['cpu']}, {m['cores']} CPUs, torch {m['torch']} ({res['threads']} thread(s)), torchvision "
             f"{m['torchvision']}, BLAS {m['blas']}; load average before {res['load_before']:.2f}. Variants alternate "
             "step by step; medians of one run.", ""]
    for cell, rows in res["cells"].items():
        base = next(iter(rows.values()))["median_ms"]
        lines += [f"## {cell}", "", "| variant | median ms | min ms | max ms | vs first row |", "|---|---|---|---|---|"]
        for k, v in rows.items():
            lines.append(f"| {k} | {v['median_ms']:.1f} | {v['min_ms']:.1f} | {v['max_ms']:.1f} | "
                         f"{base / v['median_ms']:.2f}x |")
        lines.append("")
    for name, p in res["profiles"].items():
        lines += [f"### Profile: {name} (one step under the profiler, {p['total_ms']:.0f} ms of operator time)", ""]
        if p["stages_ms"]:
            lines += ["Forward stages (ms, inclusive): " + ", ".join(f"{k} {v:.0f}" for k, v in p["stages_ms"].items())
                      + f"; backward operators {p['backward_ops_ms']:.0f} ms.", ""]
        lines += ["| operator | self ms | calls |", "|---|---|---|"]
        lines += [f"| {o['op']} | {o['self_ms']:.0f} | {o['calls']} |" for o in p["top_ops"]]
        lines.append("")
    lines += ["Command: `" + res["command"] + "`", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="detector image size (px)")
    ap.add_argument("--slices", type=int, default=16, help="fracture stage 1: slices per step")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cells", default="roi_align,detector,fracture")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "training"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = {"machine": machine(), "threads": args.threads, "load_before": os.getloadavg()[0], "cells": {},
           "profiles": {}, "command": "python benchmarks/bench_training.py " + " ".join(sys.argv[1:])}
    for cell in args.cells.split(","):
        print(f"[bench_training] {cell} ...", flush=True)
        if cell == "detector":
            variants = detector_variants(args.size)
            res["cells"][f"detector: one SGD step, 2 images of {args.size} px"] = alternate(variants, args.repeats)
            for k in list(variants)[1:]:
                res["profiles"][k] = profile(variants[k], FORWARD_STAGES)
        elif cell == "fracture":
            variants = fracture_variants(args.slices)
            res["cells"][f"fracture: one SGD step, {args.slices} slices (stage 1) / scans (stage 2)"] = \
                alternate(variants, args.repeats)
            k = "osteonet slice encoder (ovf_resnet34)"
            res["profiles"][k] = profile(variants[k], [])
        elif cell == "roi_align":
            variants = roi_align_variants(args.size)
            res["cells"][f"MultiScaleRoIAlign: 2 x 512 RoIs on the FPN maps of {args.size} px images"] = \
                alternate(variants, args.repeats * 2)
        else:
            raise SystemExit(f"unknown cell {cell!r}: expected roi_align, detector or fracture")
    write_text(args.out + ".json", json.dumps(res, indent=1))
    write_text(args.out + ".md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
