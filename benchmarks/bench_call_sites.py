"""The cost of overridable call sites (docs/python.md): backbone inference with nothing taken over
(the C++ path plus the per-forward check), and with one hook registered (Python runs one call; C++
walks its containers child by child to find it), against torchvision eager in the same process.

One install per run; to compare two builds (e.g. before and after a change), run this file with
each build's interpreter in alternation and combine the JSON files:

    .venv/bin/python benchmarks/bench_call_sites.py --out /tmp/new_1.json
    /path/to/old/.venv/bin/python benchmarks/bench_call_sites.py --out /tmp/old_1.json   # (repeat, alternating)
    .venv/bin/python benchmarks/bench_call_sites.py --combine /tmp/new_*.json --against /tmp/old_*.json \
        --out benchmarks/results/call_sites
"""

import argparse
import glob
import json
import os
import statistics
import time

import torch
import torchvision

import osteonet
from osteonet import _core

MODELS = ("resnet50", "dsnet_resnet50", "mobilenet_v3_large", "densenet121")


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def measure(name, batch, repeats):
    ours = osteonet.create_model(name).eval()
    ref_name = {"dsnet_resnet50": "resnet50"}.get(name, name)
    ref = getattr(torchvision.models, ref_name)().eval()
    x = torch.randn(batch, 3, 224, 224)
    impl = getattr(ours, "_impl", getattr(ours, "_cpp", None))
    hook_target = None
    for q, m in ours.named_modules():  # the last block: the one farthest from the root's first call
        if type(m).__name__ in ("Bottleneck", "InvertedResidualV3", "DenseLayer"):
            hook_target = m
    t = {"torchvision": [], "python": [], "cpp": [], "one_hook": []}
    with torch.no_grad():
        ref(x), ours(x)
        for _ in range(repeats):
            t["torchvision"].append(timed(lambda: ref(x)))
            t["python"].append(timed(lambda: ours(x)))
            t["cpp"].extend(_core.time_forward(impl, x, 1))
            if hook_target is not None and hasattr(ours, "python_parts"):
                h = hook_target.register_forward_hook(lambda m, i, o: None)
                t["one_hook"].append(timed(lambda: ours(x)))
                h.remove()
    return {k: statistics.median(v) if v else None for k, v in t.items()}


def combine(new_files, old_files, out):
    def load(files):
        rows = {}
        for f in sorted(files):
            for r in json.load(open(f))["rows"]:
                rows.setdefault((r["model"], r["batch"]), []).append(r)
        return rows

    new, old = load(new_files), load(old_files)
    table = []
    for key in sorted(new):
        n = new[key]
        o = old.get(key, [])
        med = lambda rows, k: statistics.median([r[k] for r in rows if r.get(k)]) if rows else None  # noqa: E731
        row = {"model": key[0], "batch": key[1], "runs_new": len(n), "runs_old": len(o),
               "new_python_ms": med(n, "python"), "old_python_ms": med(o, "python"),
               "new_cpp_ms": med(n, "cpp"), "old_cpp_ms": med(o, "cpp"),
               "new_one_hook_ms": med(n, "one_hook"),
               "new_ratio_tv_py": med([dict(r, x=r["torchvision"] / r["python"]) for r in n], "x"),
               "old_ratio_tv_py": med([dict(r, x=r["torchvision"] / r["python"]) for r in o], "x") if o else None}
        table.append(row)
    from osteonet.io import write_text

    write_text(out + ".json", json.dumps({"rows": table}, indent=1))
    lines = ["# Call sites: cost with nothing taken over, and with one hook", "",
             "Medians over the runs (each run: alternating torchvision / osteonet from Python / C++ only).",
             "`ratio tv/py`: torchvision eager time / osteonet from Python (> 1: osteonet faster), per build.", "",
             "| model | batch | old py ms | new py ms | new/old | old C++ ms | new C++ ms | one hook ms | ratio tv/py old | ratio tv/py new |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in table:
        rel = r["new_python_ms"] / r["old_python_ms"] if r["old_python_ms"] else None
        lines.append(f"| {r['model']} | {r['batch']} | {f(r['old_python_ms'])} | {f(r['new_python_ms'])} | {f(rel, 3)} | "
                     f"{f(r['old_cpp_ms'])} | {f(r['new_cpp_ms'])} | {f(r['new_one_hook_ms'])} | "
                     f"{f(r['old_ratio_tv_py'], 3)} | {f(r['new_ratio_tv_py'], 3)} |")
    write_text(out + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--combine", nargs="+")
    p.add_argument("--against", nargs="+", default=[])
    a = p.parse_args()
    if a.combine:
        combine([f for g in a.combine for f in glob.glob(g)], [f for g in a.against for f in glob.glob(g)], a.out)
        return
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.models:
        r = measure(name, a.batch, a.repeats)
        r.update(model=name, batch=a.batch)
        rows.append(r)
        print(name, {k: round(v, 2) if v else v for k, v in r.items() if k not in ("model", "batch")}, flush=True)
    with open(a.out, "w") as f:
        json.dump({"rows": rows, "load": os.getloadavg()}, f)


if __name__ == "__main__":
    main()
