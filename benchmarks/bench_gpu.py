"""GPU latency (issue 18): torchvision eager vs osteonet eager vs osteonet sessions, without and with CUDA
graphs, float32 and bfloat16; batch 1 and 8 for resnet50, dsnet_resnet50 and densenet121, the DSNet
detector at 512 and 800 px (whole detector, and its graphed part, backbone + FPN, alone) and a 64-slice
fracture scan. Median and p99 in ms and ratios, all from one run on one card.

Usage (on the GPU machine, after benchmarks/gpu/run.sh built osteonet there):
    python benchmarks/bench_gpu.py --out DIR [--repeats 100] [--quick]

Timing: each call is bracketed by torch.cuda.synchronize() (latency of one call as a caller sees it,
host overhead included); the variants of a cell run round-robin, so clock changes hit them alike.
float32 means float32: TF32 is off for every variant (cudnn.allow_tf32 = matmul.allow_tf32 = False).
bfloat16: torchvision's model cast to bfloat16 channels-last; osteonet's session with dtype="bfloat16"
(its accuracy check against float32 at construction; ``dtype`` in the results says what ran). Weights:
random init with BatchNorm statistics moved away from identity (bench_runtime.perturb_), the same
weights in torchvision's model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_runtime import detection_error, peaked_heads, perturb_, scan_reference, scene  # noqa: E402

import osteonet  # noqa: E402
from osteonet.io import write_text  # noqa: E402
from osteonet.runtime import InferenceSession, ScanSession  # noqa: E402

DEV = "cuda"  # --device cpu: a dry run of the script on a machine without a GPU (no figures)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(variants, repeats, error=None):
    """Round-robin timing of the variants (three warm-up calls each); median, p99 (ms) and errors."""
    times = {k: [] for k in variants}
    errors = {}
    with torch.no_grad():
        for k, fn in variants.items():
            for _ in range(3):
                out = fn()
            sync()
            if error is not None:
                errors[k] = error(out)
        for _ in range(repeats):
            for k, fn in variants.items():
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return ({k: float(np.median(v)) for k, v in times.items()},
            {k: float(np.percentile(v, 99)) for k, v in times.items()}, errors)


def cell_result(kind, name, batch, size, med, p99, errors, base, sessions, repeats):
    return {"kind": kind, "model": name, "batch": batch, "size": size, "repeats": repeats, "baseline": base,
            "median_ms": med, "p99_ms": p99, "speedup_vs_baseline": {k: med[base] / v for k, v in med.items()},
            "error_vs_reference": errors,
            "sessions": {k: {"dtype": s.dtype, "mode": s.mode, "accuracy": s.accuracy} for k, s in sessions.items()}}


SKIP: set = set()  # variants left out (--skip): ones that crashed in an earlier attempt of the cell


def make(name, build):
    """A variant's object from build(), announced first on stderr, so a crash names its variant."""
    if name in SKIP:
        return None
    print(f"bench_gpu: building {name}", file=sys.stderr, flush=True)
    return build()


def sessions_of(model, example, prefix="session", make_session=InferenceSession, **kw):
    specs = {f"{prefix}_fp32": dict(cuda_graph=False), f"{prefix}_fp32_graph": {},
             f"{prefix}_bf16": dict(dtype="bfloat16", cuda_graph=False), f"{prefix}_bf16_graph": dict(dtype="bfloat16")}
    out = {k: make(k, lambda: make_session(model, example, device=DEV, **v, **kw)) for k, v in specs.items()}
    return {k: v for k, v in out.items() if v is not None}


def bench_backbone(name, batch, size, repeats):
    torch.manual_seed(0)
    ours = osteonet.create_model(name).eval()
    perturb_(ours)
    x = torch.randn(batch, 3, size, size, device=DEV)
    sessions = sessions_of(ours, x)
    variants = {}
    tv_name = {"resnet50": "resnet50", "densenet121": "densenet121"}.get(name)
    if tv_name:
        tv = getattr(torchvision.models, tv_name)(weights=None).eval()
        tv.load_state_dict(ours.state_dict())
        tv = tv.to(DEV)
        tvb = getattr(torchvision.models, tv_name)(weights=None).eval()
        tvb.load_state_dict(ours.state_dict())
        tvb = tvb.to(DEV, torch.bfloat16).to(memory_format=torch.channels_last)
        xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        variants["torchvision_eager_fp32"] = lambda: tv(x)
        variants["torchvision_eager_bf16_cl"] = lambda: tvb(xb)
    ours = ours.to(DEV)
    with torch.no_grad():
        ref = ours(x).softmax(1)
    variants["osteonet_eager_fp32"] = lambda: ours(x)
    for k, s in sessions.items():
        variants[k] = (lambda s: (lambda: s(x)))(s)
    med, p99, err = timed(variants, repeats, lambda out: float((out.float().softmax(1) - ref).abs().max()))
    return cell_result("backbone", name, batch, size, med, p99, err, "osteonet_eager_fp32", sessions, repeats)


def bench_detector(size, repeats):
    """The DSNet detector (dsnet_resnet50 + FPN, 3 classes) on one size x size image; torchvision's
    fasterrcnn_resnet50_fpn eager on the same image beside it (a ResNet-50 FPN detector without DS)."""
    torch.manual_seed(0)
    kw = dict(min_size=size, max_size=size)
    g = torch.Generator().manual_seed(1)
    images = [scene(size, g).to(DEV)]
    ours = osteonet.create_model("fasterrcnn", backbone="dsnet_resnet50", num_classes=3, **kw).eval()
    ours.load_state_dict(peaked_heads(ours.state_dict()))
    sessions = sessions_of(ours, images)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                                               **kw).eval()
    tv.load_state_dict(peaked_heads(tv.state_dict()))
    tv = tv.to(DEV)
    ours = ours.to(DEV)
    with torch.no_grad():
        ref = ours(images)
    variants = {"torchvision_frcnn_r50_fpn_eager_fp32": lambda: tv(images), "osteonet_eager_fp32": lambda: ours(images)}
    for k, s in sessions.items():
        variants[k] = (lambda s: (lambda: s(images)))(s)
    med, p99, err = timed(variants, repeats, detection_error(ref))
    whole = cell_result("detector", "DSNet detector (dsnet_resnet50 + FPN)", 1, size, med, p99, err,
                        "osteonet_eager_fp32", sessions, repeats)
    whole["detections"] = int(ref[0]["boxes"].shape[0])
    # the graphed part alone: backbone + FPN on the padded batch, through each session's program
    batch = torch.randn(1, 3, size, size, device=DEV)
    maps = {k: (lambda s: (lambda: s.backbone_maps(batch)))(s) for k, s in sessions.items()}
    med, p99, _ = timed(maps, repeats)
    part = cell_result("detector_part", "DSNet backbone + FPN (the session's program)", 1, size, med, p99, {},
                       min(med, key=lambda k: k != "session_fp32"), sessions, repeats)
    return [whole, part]


def bench_scan(slices, size, repeats):
    """One scan of ``slices`` preprocessed slices: ovf_resnet34 embeddings + LSTM (seed 002)."""
    from osteonet import sequence as seq

    torch.manual_seed(0)
    enc = seq.create_slice_encoder().eval()
    perturb_(enc)
    agg = seq.create_aggregator("lstm").eval()
    x = torch.randn(slices, 3, size, size, device=DEV)
    ref_model = scan_reference(enc, agg).to(DEV)
    sessions = sessions_of(enc, x, prefix="scan_session",
                           make_session=lambda e, ex, **kw: ScanSession(e, agg, ex, lengths=(slices,), **kw))
    enc_d, agg_d = enc.to(DEV), agg.to(DEV)
    with torch.no_grad():
        ref = ref_model(x)
    variants = {"pytorch_eager_fp32": lambda: ref_model(x), "osteonet_eager_fp32": lambda: agg_d(enc_d.features(x)[None])}
    for k, s in sessions.items():
        variants[k] = (lambda s: (lambda: s(x)))(s)
    med, p99, err = timed(variants, repeats, lambda out: float((out.float().view(-1) - ref.view(-1)).abs().max()))
    return cell_result("scan", f"fracture scan ({slices} slices: ovf_resnet34 + LSTM)", slices, size, med, p99, err,
                       "osteonet_eager_fp32", {k: s.session for k, s in sessions.items()}, repeats)


def machine():
    if DEV == "cpu":
        return {"gpu": "none (dry run on the CPU)", "sm_count": 0, "memory_gib": 0, "torch": torch.__version__,
                "cuda": None, "cudnn": None, "torchvision": torchvision.__version__, "python": platform.python_version(),
                "cpu": platform.processor(), "tf32": False, "date": time.strftime("%Y-%m-%d")}
    p = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(0), "sm_count": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2 ** 30, 1), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "torchvision": torchvision.__version__,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "tf32": False, "date": time.strftime("%Y-%m-%d")}


def markdown(res):
    m = res["machine"]
    lines = ["# GPU latency (issue 18)", "",
             f"{m['gpu']} ({m['sm_count']} SMs, {m['memory_gib']} GiB), torch {m['torch']} (CUDA {m['cuda']}, cuDNN "
             f"{m['cudnn']}), torchvision {m['torchvision']}, {m['date']}. One run; TF32 off (float32 is float32). "
             "Median and p99 latency in ms per call (synchronised), and the median's speed-up over the cell's baseline "
             "(×). `dtype`/`mode` of each session say what ran (a bfloat16 session that failed its accuracy check "
             "runs float32). Command: `benchmarks/gpu/run.sh` (python benchmarks/bench_gpu.py).", ""]
    for c in res["cells"]:
        lines += [f"## {c['model']}, batch {c['batch']}, {c['size']} px (baseline: {c['baseline']})", "",
                  "| variant | median ms | p99 ms | × baseline | error vs reference | session dtype / mode |",
                  "|---|---:|---:|---:|---:|---|"]
        for k, v in c["median_ms"].items():
            s = c["sessions"].get(k)
            e = c["error_vs_reference"].get(k)
            lines.append(f"| {k} | {v:.3f} | {c['p99_ms'][k]:.3f} | {c['speedup_vs_baseline'][k]:.2f} | "
                         f"{'' if e is None else f'{e:.1e}'} | {'' if s is None else s['dtype'] + ' / ' + s['mode']} |")
        lines.append("")
    lines += ["## Goals", ""] + [f"- {g}" for g in res["goals"]] + [""]
    if res.get("crashes"):
        lines += ["## Crashes", ""] + [f"- {c['cell']}: exit status {c['rc']} while building {c['while_building']}"
                                       for c in res["crashes"]] + [""]
    return "\n".join(lines)


def goals(cells):
    """The issue's goals, each as met / not met / not measured."""

    def find(kind, model_prefix, batch):
        return next((c for c in cells if c["kind"] == kind and c["model"].startswith(model_prefix)
                     and c["batch"] == batch), None)

    def best(c, prefix):
        ks = [k for k in c["median_ms"] if k.startswith(prefix) and k.endswith("graph")]
        return min(ks, key=lambda k: c["median_ms"][k]) if ks else None

    out = []
    c = find("backbone", "dsnet_resnet50", 1)
    k = best(c, "session") if c else None
    if k:
        ms, x = c["median_ms"][k], c["speedup_vs_baseline"][k]
        out.append(f"dsnet_resnet50 batch 1: best session {k} {ms:.3f} ms (goal ≤ 1 ms: {'met' if ms <= 1 else 'not met'}), "
                   f"{x:.2f}× osteonet eager (goal ≥ 2×: {'met' if x >= 2 else 'not met'})")
    else:
        out.append("dsnet_resnet50 batch 1: not measured (see Crashes)")
    c = find("scan", "fracture scan", 64)
    k = best(c, "scan_session") if c else None
    out.append(f"64-slice scan: {k} {c['median_ms'][k]:.3f} ms (goal ≤ 5 ms: {'met' if c['median_ms'][k] <= 5 else 'not met'})"
               if k else "64-slice scan: not measured (see Crashes)")
    for c in cells:
        med = c["median_ms"]
        if c["kind"] == "detector_part" and "session_fp32" in med:
            for k in ("session_fp32_graph", "session_bf16_graph"):
                if k in med:
                    r = med["session_fp32"] / med[k]
                    out.append(f"detector's graphed part at {c['size']} px: {k} {r:.2f}× the same program eager in "
                               f"float32 (goal ≥ 2× for the graph: {'met' if r >= 2 else 'not met'})")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="one cell of each kind (a check of the script)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script only")
    ap.add_argument("--cell", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip", action="append", default=[], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    global DEV
    DEV = a.device
    if DEV == "cuda" and not (torch.cuda.is_available() and osteonet.runtime.built_with_cuda()):
        raise SystemExit("bench_gpu: needs a GPU and osteonet built with CUDA (benchmarks/gpu/run.sh)")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    plan = [("backbone", n, b) for n in ("resnet50", "dsnet_resnet50", "densenet121") for b in (1, 8)]
    plan += [("detector", None, s) for s in (512, 800)] + [("scan", None, 64)]
    if a.quick:
        plan = [("backbone", "resnet50", 1), ("detector", None, 512), ("scan", None, 16)]
    if a.cell is not None:  # one cell, in this process (the parent runs each cell so)
        SKIP.update(a.skip)
        kind, name, arg = plan[a.cell]
        if kind == "backbone":
            cells = [bench_backbone(name, arg, 224, a.repeats)]
        elif kind == "detector":
            cells = bench_detector(arg, max(20, a.repeats // 3))
        else:
            cells = [bench_scan(arg, 224, a.repeats)]
        print(json.dumps(cells))
        return
    # Each cell in its own process: a variant that crashes the process (it did on the first GPU run) is
    # named by the last "building" line, reported, and left out of a second attempt of its cell.
    import subprocess

    cells, crashes = [], []
    for i, (kind, name, arg) in enumerate(plan):
        skip = []
        for attempt in range(3):
            t0 = time.perf_counter()
            cmd = [sys.executable, os.path.abspath(__file__), "--out", a.out, "--repeats", str(a.repeats),
                   "--device", DEV, "--cell", str(i)] + (["--quick"] if a.quick else []) + \
                  [x for k in skip for x in ("--skip", k)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            sys.stderr.write(r.stderr[-3000:] if r.returncode else "")
            print(f"bench_gpu: {kind} {name or ''} {arg}: rc {r.returncode}, {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
            if r.returncode == 0:
                cells += json.loads(r.stdout.strip().splitlines()[-1])
                break
            built = [ln.split("building ", 1)[1] for ln in r.stderr.splitlines() if "bench_gpu: building " in ln]
            crashes.append({"cell": f"{kind} {name or ''} {arg}", "rc": r.returncode,
                            "while_building": built[-1] if built else None,
                            "stderr_tail": r.stderr.strip().splitlines()[-12:]})
            if not built or built[-1] in skip:
                break
            skip.append(built[-1])
        write_results(a.out, cells, crashes)  # after every cell: a run stopped at its time limit keeps them
    print(markdown(write_results(a.out, cells, crashes)))


def write_results(out, cells, crashes):
    res = {"machine": machine(), "cells": cells, "goals": goals(cells), "crashes": crashes}
    os.makedirs(out, exist_ok=True)
    write_text(os.path.join(out, "gpu.json"), json.dumps(res, indent=1))
    write_text(os.path.join(out, "gpu.md"), markdown(res))
    return res


if __name__ == "__main__":
    main()
