"""oneDNN Graph fusion against the TorchScript peer, under torch 2.x (issue 20).

The peer is what the inference session runs on the CPU: trace, ``torch.jit.freeze`` + ``optimize_for_inference``
(oneDNN prepacked convolutions). The variant: trace, ``torch.jit.freeze`` and TorchScript's oneDNN Graph fuser
(``torch.jit.enable_onednn_fusion(True)``, with the TensorExpr fuser off: under torch 2.x it compiles DenseNet's
graph for minutes, docs/building.md). Both process-wide switches, which is why the session does not flip them.
torchvision's resnet50 and densenet121 at batch 1, float32 and bfloat16 (channels-last), alternated call by call;
max |softmax difference| against eager float32. Debian 12's torch 1.13 links a libdnnl without the graph API, so
there the switch forms no fusion group; run this where torch is 2.x, e.g. in make test-torch2's trixie root:

    chroot ROOT bash -c "cd /src && PYTHONPATH=/opt/osteonet python3 benchmarks/bench_onednn_graph.py"
"""

import argparse
import json
import os
import statistics
import time

import torch
import torchvision

from osteonet.io import write_text


def cell(name, bf16, repeats):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, 224, 224)
    dtype = torch.bfloat16 if bf16 else torch.float32
    # inference_mode: Debian's torch 2.6 (built with Vulkan) cannot dispatch a frozen program's max_pool2d under
    # autograd (docs/building.md)
    with torch.inference_mode():
        ref = model(x).softmax(1)
        m = model.to(dtype).to(memory_format=torch.channels_last) if bf16 else model
        xx = x.to(dtype).contiguous(memory_format=torch.channels_last) if bf16 else x
        torch.jit.enable_onednn_fusion(False)
        peer = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(m, xx)))
        for _ in range(3):
            peer(xx)
        torch.jit.enable_onednn_fusion(True)
        fused = torch.jit.freeze(torch.jit.trace(m, xx))
        for _ in range(3):  # profiling runs, then the fused plan
            fused(xx)
        groups = str(torch.jit.last_executed_optimized_graph()).count("prim::oneDNNFusionGroup")
        times = {"peer": [], "onednn_graph": []}
        for _ in range(repeats):
            for k, f in (("peer", peer), ("onednn_graph", fused)):
                t0 = time.perf_counter()
                f(xx)
                times[k].append((time.perf_counter() - t0) * 1e3)
        err = {k: float((f(xx).float().softmax(1) - ref).abs().max()) for k, f in (("peer", peer),
                                                                                      ("onednn_graph", fused))}
        torch.jit.enable_onednn_fusion(False)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "dtype": "bfloat16" if bf16 else "float32", "fusion_groups": groups, "median_ms": med,
            "peer_over_onednn_graph": med["peer"] / med["onednn_graph"], "max_abs_dprob_vs_eager_fp32": err}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "onednn_graph"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch._C._jit_set_texpr_fuser_enabled(False)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    res = {"torch": torch.__version__, "torchvision": torchvision.__version__, "cpu": cpu, "threads": args.threads,
           "load_before": os.getloadavg()[0], "cells": []}
    for name in ("resnet50", "densenet121"):
        for bf16 in (False, True):
            res["cells"].append(cell(name, bf16, args.repeats))
            print(json.dumps(res["cells"][-1]), flush=True)
    lines = ["# oneDNN Graph fusion vs the TorchScript peer (issue 20)", "",
             f"torch {res['torch']}, torchvision {res['torchvision']}, {cpu}, {args.threads} thread(s), load average "
             f"before {res['load_before']:.2f}; batch 1, 224 px, random weights; medians of {args.repeats} alternated "
             "calls. Peer: trace + freeze + optimize_for_inference; oneDNN Graph: trace + freeze with "
             "torch.jit.enable_onednn_fusion(True) (TensorExpr fuser off).", "",
             "| model | dtype | fusion groups | peer ms | oneDNN Graph ms | peer / oneDNN Graph | max abs Δp peer | "
             "max abs Δp oneDNN Graph |", "|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        lines.append(f"| {c['model']} | {c['dtype']} | {c['fusion_groups']} | {c['median_ms']['peer']:.1f} | "
                     f"{c['median_ms']['onednn_graph']:.1f} | {c['peer_over_onednn_graph']:.2f} | "
                     f"{c['max_abs_dprob_vs_eager_fp32']['peer']:.1e} | "
                     f"{c['max_abs_dprob_vs_eager_fp32']['onednn_graph']:.1e} |")
    lines += ["", "Command: `python3 benchmarks/bench_onednn_graph.py` (in make test-torch2's trixie root)", ""]
    write_text(args.out + ".json", json.dumps(res, indent=1))
    write_text(args.out + ".md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
