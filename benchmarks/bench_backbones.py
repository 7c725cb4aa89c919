"""Backbone inference latency: osteonet from C++ and from Python against torchvision eager, same
LibTorch, same process, alternating runs; medians and ratios (torchvision time / osteonet time, so
> 1 means osteonet is faster).

    .venv/bin/python benchmarks/bench_backbones.py [--batches 1 8] [--repeats 10] [--models ...]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torchvision

import osteonet
from osteonet.io import write_text
from osteonet import _core


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(),
            "blas": "openblas" if os.path.exists("/usr/lib/x86_64-linux-gnu/openblas-pthread") else "reference"}


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench_model(name, batch, repeats):
    tv_name = osteonet.models.model_info(name)["torchvision"] or ("resnet50" if name == "dsnet_resnet50" else "")
    size = 299 if name == "inception_v3" else 224
    ours = osteonet.create_model(name).eval()
    ref = None
    if tv_name:
        ref = getattr(torchvision.models, tv_name)(**({"init_weights": False} if tv_name == "inception_v3" else {})).eval()
    x = torch.randn(batch, 3, size, size)
    t = {"torchvision": [], "osteonet_py": [], "osteonet_cpp": []}
    with torch.no_grad():
        for fn in ([ref] if ref is not None else []) + [ours]:
            fn(x)  # warm-up
        for _ in range(repeats):  # alternate the three so drifts in machine load hit all of them
            if ref is not None:
                t["torchvision"].append(timed(lambda: ref(x)))
            t["osteonet_py"].append(timed(lambda: ours(x)))
            t["osteonet_cpp"].extend(_core.time_forward(ours._impl, x, 1))
    med = {k: statistics.median(v) if v else None for k, v in t.items()}
    row = {"model": name, "batch": batch, "size": size, "reference": tv_name,
           "torchvision_ms": med["torchvision"], "osteonet_py_ms": med["osteonet_py"], "osteonet_cpp_ms": med["osteonet_cpp"]}
    if med["torchvision"]:
        row["ratio_py"] = med["torchvision"] / med["osteonet_py"]
        row["ratio_cpp"] = med["torchvision"] / med["osteonet_cpp"]
    return row


def to_markdown(rows, info):
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
             f"torchvision {info['torchvision']}, BLAS {info['blas']}.", "",
             "Ratios are torchvision eager time / osteonet time (> 1: osteonet faster); medians of alternating runs.", "",
             "| model | batch | torchvision ms | osteonet (Python) ms | osteonet (C++) ms | ratio Python | ratio C++ |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda v, p=1: "—" if v is None else f"{v:.{p}f}"
        ref = "" if r["reference"] == r["model"] else f" (vs {r['reference']}: DS overhead, not parity)" if r["reference"] else ""
        lines.append(f"| {r['model']}{ref} | {r['batch']} | {f(r['torchvision_ms'])} | {f(r['osteonet_py_ms'])} | "
                     f"{f(r['osteonet_cpp_ms'])} | {f(r.get('ratio_py'), 3)} | {f(r.get('ratio_cpp'), 3)} |")
    return "\n".join(lines) + "\n"


def render(folder):
    """Re-writes backbones.md from backbones.json (after a change of the table's layout)."""
    with open(os.path.join(folder, "backbones.json")) as f:
        d = json.load(f)
    write_text(os.path.join(folder, "backbones.md"), to_markdown(d["rows"], d["machine"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=osteonet.list_models())
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=None, help="folder for backbones.json and backbones.md")
    ap.add_argument("--update", action="store_true",
                    help="replace only the measured (model, batch) rows of an existing --out/backbones.json "
                         "(a targeted rerun); the rows keep their own repeats and machine load")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    rows = []
    for batch in args.batches:
        for name in args.models:
            row = bench_model(name, batch, args.repeats)
            rows.append(row)
            print(f"{name:20s} b={batch} tv={row['torchvision_ms'] or 0:8.1f} py={row['osteonet_py_ms']:8.1f} "
                  f"cpp={row['osteonet_cpp_ms']:8.1f} ratio_py={row.get('ratio_py', float('nan')):.3f} "
                  f"ratio_cpp={row.get('ratio_cpp', float('nan')):.3f}", flush=True)
    for r in rows:
        r["repeats"], r["load_average"] = args.repeats, os.getloadavg()[0]
    table = rows
    if args.out and args.update:
        with open(os.path.join(args.out, "backbones.json")) as f:
            old = json.load(f)
        fresh = {(r["model"], r["batch"]): r for r in rows}
        table = [fresh.pop((r["model"], r["batch"]), r) for r in old["rows"]] + list(fresh.values())
        info = old["machine"]
    if args.out:
        for fname, text in (("backbones.json", json.dumps({"machine": info, "repeats": args.repeats, "rows": table}, indent=1)),
                            ("backbones.md", to_markdown(table, info))):
            write_text(os.path.join(args.out, fname), text)  # whole or not at all
    # The goal is like for like: a model against its torchvision twin (dsnet_resnet50 against plain
    # ResNet-50 shows DS's cost, not a parity gap).
    slow = [r for r in rows if r.get("ratio_py") is not None and r["reference"] == r["model"]
            and min(r["ratio_py"], r["ratio_cpp"]) < 0.95]
    print("goal (every ratio >= 0.95):", "met" if not slow else "NOT met for " + ", ".join(f"{r['model']}@{r['batch']}" for r in slow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
