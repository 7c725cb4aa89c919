"""`make demo`: builds every registered model, checks it against torchvision (strict state-dict load,
max output difference), and prints a table of parameters, GFLOPs and speed against torchvision.

    python -m osteonet.demo [--repeats 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List

import torch

from . import models
from .io import write_text


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Floating-point operations of convolutions and matrix products (2 per multiply-add), counted by
    the PyTorch profiler, which sees the ATen operators the C++ model calls."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        model(x)
    ops = ("aten::conv2d", "aten::addmm", "aten::mm", "aten::bmm", "aten::matmul")
    return sum(e.flops for e in prof.events() if e.name in ops and e.flops) / 1e9


def median_ms(fn, x, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def check_model(name: str, repeats: int) -> Dict[str, object]:
    import torchvision

    info = models.model_info(name)
    size = 299 if name == "inception_v3" else 224
    ours = models.create_model(name).eval()
    x = torch.randn(1, 3, size, size)
    row: Dict[str, object] = {"model": name, "params_m": sum(p.numel() for p in ours.parameters()) / 1e6,
                              "gflops": gflops(ours, x), "reference": info["torchvision"] or None}
    if info["torchvision"]:
        kw = {"init_weights": True} if info["torchvision"] == "inception_v3" else {}
        ref = getattr(torchvision.models, info["torchvision"])(**kw).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)  # raises if any name or shape differs
        with torch.no_grad():
            row["max_abs_diff"] = float((ours(x) - ref(x)).abs().max())
            ours(x), ref(x)  # warm-up
            t_ref, t_ours = [], []
            for _ in range(repeats):  # alternate
                t_ref.append(median_ms(ref, x, 1))
                t_ours.append(median_ms(ours, x, 1))
        row["speed_ratio"] = statistics.median(t_ref) / statistics.median(t_ours)
    return row


def format_table(rows: List[Dict[str, object]]) -> str:
    head = "| model | params (M) | GFLOPs | max abs diff vs torchvision | speed ratio (torchvision / osteonet) |"
    lines = [head, "|---|---:|---:|---|---:|"]
    for r in rows:
        diff = f"{r['max_abs_diff']:.1e} (strict load)" if "max_abs_diff" in r else "no torchvision model (golden + reference tests)"
        ratio = f"{r['speed_ratio']:.2f}" if "speed_ratio" in r else "—"
        lines.append(f"| {r['model']} | {r['params_m']:.2f} | {r['gflops']:.2f} | {diff} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="osteonet model zoo check against torchvision")
    ap.add_argument("--repeats", type=int, default=5, help="alternating timed runs per model (batch 1)")
    ap.add_argument("--out", default="out/demo", help="folder for models.json and models.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)
    names = models.list_models()
    rows = []
    for i, name in enumerate(names, 1):
        print(f"[{i:2d}/{len(names)}] {name} ...", flush=True)
        rows.append(check_model(name, args.repeats))
    table = format_table(rows)
    print("\nosteonet model zoo (224x224, Inception 299x299, batch 1, eval)\n")
    print(table)
    bad = [r["model"] for r in rows if r.get("max_abs_diff", 0.0) > 1e-4]
    os.makedirs(args.out, exist_ok=True)
    for fname, text in (("models.json", json.dumps(rows, indent=1)), ("models.md", table + "\n")):
        write_text(os.path.join(args.out, fname), text)
    print(f"\nwrote {args.out}/models.md and models.json")
    if bad:
        print("MISMATCH against torchvision:", ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
