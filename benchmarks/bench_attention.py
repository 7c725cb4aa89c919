"""What DSNet's DS modules (and SK at the same places) cost on the CPU, in one run (issue 20).

Cells, alternated so that drifts in machine load hit all of them: ResNet-50, and ResNet-50 with DS
(dsnet_resnet50) or SK at DSNet's two places, each with the attention modules as written (eval mode
with autograd on and every parameter frozen, so nothing is recorded) and in their CPU inference
layout (no_grad: channels-last, in place; attention/dual_selective.hpp); then the same models as
inference sessions (osteonet.runtime.InferenceSession, float32). Also the ratio that the multiply-adds
alone allow: ResNet-50's multiply-adds / the model's, i.e. the speed ratio if the attention modules ran
at ResNet-50's multiply-adds per second.

    .venv/bin/python benchmarks/bench_attention.py [--batches 1 8] [--repeats 15] [--threads 1]
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

import osteonet
from osteonet.io import write_text

sys.path.insert(0, os.path.dirname(__file__))
from bench_backbones import machine  # noqa: E402

MODELS = {"resnet50": ("resnet50", {}), "dsnet_resnet50": ("dsnet_resnet50", {}),
          "resnet50+sk (DSNet places)": ("resnet50", {"attention": "sk", "attention_placement": "dsnet"})}


def multiply_adds(model, x):
    """Multiply-adds of every convolution and linear layer in one forward."""
    total = [0]

    def conv(m, inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inp, out):
        total[0] += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0]


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def run(batch, repeats):
    x = torch.randn(batch, 3, 224, 224)
    models = {}
    for key, (name, opts) in MODELS.items():
        torch.manual_seed(0)
        m = osteonet.create_model(name, **opts).eval().requires_grad_(False)
        for mod in m.modules():  # a fresh DS is the identity (zeroed fusion norm): make it compute something
            if isinstance(mod, torch.nn.BatchNorm2d) and not bool(mod.weight.any()):
                mod.weight.fill_(1.0)
        models[key] = m
    macs = {k: multiply_adds(m, x) for k, m in models.items()}

    def as_written(m):
        with torch.enable_grad():  # nothing requires grad: no graph is recorded, but the inference layout is off
            return m(x)

    def inference(m):
        with torch.no_grad():
            return m(x)

    cells = {}
    for key, m in models.items():
        if key == "resnet50":
            cells["resnet50"] = lambda m=m: inference(m)
        else:
            cells[f"{key}, as written"] = lambda m=m: as_written(m)
            cells[f"{key}, inference layout"] = lambda m=m: inference(m)
    sessions = {k: osteonet.runtime.InferenceSession(m, x) for k, m in models.items()}
    for key, s in sessions.items():
        cells[f"{key}, session"] = lambda s=s: s(x)
    out = {k: f() for k, f in cells.items()}  # warm-up, and the outputs for the check below
    diff = {}
    for key in models:
        if key != "resnet50":
            ref = out[f"{key}, as written"]
            diff[key] = float((out[f"{key}, inference layout"] - ref).abs().max() / ref.abs().max())
    times = {k: [] for k in cells}
    for _ in range(repeats):
        for k, f in cells.items():
            times[k].append(timed(f))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for k, v in med.items():
        model = k.split(",")[0]
        base = med["resnet50, session"] if k.endswith("session") else med["resnet50"]
        rows.append({"batch": batch, "cell": k, "median_ms": v, "p90_ms": sorted(times[k])[int(0.9 * (repeats - 1))],
                     "vs_resnet50": base / v, "macs_bound": macs["resnet50"] / macs[model],
                     "max_rel_diff_vs_as_written": diff.get(model) if k.endswith("inference layout") else None})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for b in args.batches:
        print(f"batch {b} ...", flush=True)
        rows += run(b, args.repeats)
    info = machine()
    os.makedirs(args.out, exist_ok=True)
    write_text(os.path.join(args.out, "attention_inference.json"), json.dumps({"machine": info, "rows": rows}, indent=1) + "\n")
    md = ["# DS and SK at DSNet's places: cost against ResNet-50 on the CPU (issue 20)", "",
          f"One run, {args.repeats} alternated repeats per cell, {args.threads} thread(s), 224 px, random weights; "
          f"{info['cpu']}, torch {info['torch']}. `vs ResNet-50` = ResNet-50's median / the cell's median (eager cells "
          "against eager ResNet-50, session cells against ResNet-50's session); `multiply-add bound` = ResNet-50's "
          "multiply-adds / the model's (the ratio if the attention ran at ResNet-50's multiply-adds per second). "
          "The last column: the largest difference of the outputs (logits) between the inference layout and the "
          "path as written, over the largest logit. Command: `.venv/bin/python benchmarks/bench_attention.py`.", "",
          "| batch | cell | median ms | p90 ms | vs ResNet-50 | multiply-add bound | max diff vs as written / max output |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = "" if r["max_rel_diff_vs_as_written"] is None else f"{r['max_rel_diff_vs_as_written']:.1e}"
        md.append(f"| {r['batch']} | {r['cell']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['vs_resnet50']:.3f} | "
                  f"{r['macs_bound']:.3f} | {d} |")
    write_text(os.path.join(args.out, "attention_inference.md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
