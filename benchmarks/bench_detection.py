"""Faster R-CNN speed: osteonet vs torchvision 0.14 on this CPU (medians of alternating runs).

Usage: python benchmarks/bench_detection.py --out benchmarks/results [--repeats 10] [--sizes 800 512]
For each image size (min_size = max_size = size, square images of that size) and both torchvision
detectors (identical weights: torchvision's state dict loaded into osteonet's): inference per image
(eval, batch of 1, no_grad) and one training step (forward + backward + SGD step, batch of 2 images),
timed alternately torchvision / osteonet; ratio = torchvision time / osteonet time (> 1: osteonet
faster). DSNet FPS (seed 000 reports "Fps 0.1846", which reads as seconds per frame) is given both
as frames per second and seconds per frame, from the batch-1 inference time, for both detectors and
for osteonet's DSNet detector (ResNet-50 + DS attention, no torchvision counterpart).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import torch
import torchvision

import osteonet
from osteonet.io import write_text


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _load():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _images(size, n, g):
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def bench(name, size, repeats):
    torch.manual_seed(0)
    kw = dict(min_size=size, max_size=size)
    ref = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, num_classes=3, **kw)
    ours = osteonet.create_model(name, num_classes=3, **kw)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    one = _images(size, 1, g)
    two = _images(size, 2, g)
    targets = [{"boxes": torch.tensor([[20.0, 30.0, size / 2, size / 2 + 10]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[size / 3, 10.0, size - 5.0, size / 2]]), "labels": torch.tensor([2])}]

    def infer(m):
        m.eval()
        with torch.no_grad():
            m(one)

    def step(m, opt):
        m.train()
        loss = sum(m(two, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    opts = {id(ref): torch.optim.SGD(ref.parameters(), lr=1e-4), id(ours): torch.optim.SGD(ours.parameters(), lr=1e-4)}
    res = {}
    for kind, fn in (("inference_per_image_s", infer), ("train_step_s", lambda m: step(m, opts[id(m)]))):
        fn(ref), fn(ours)  # warm-up
        t_ref, t_ours, loads = [], [], []
        for i in range(repeats):
            loads.append(_load())
            order = (ref, ours) if i % 2 == 0 else (ours, ref)  # alternate who runs first
            for m in order:
                (t_ref if m is ref else t_ours).append(_time(lambda: fn(m)))
        r, o = statistics.median(t_ref), statistics.median(t_ours)
        res[kind] = {"torchvision": r, "osteonet": o, "ratio_torchvision_over_osteonet": r / o,
                     "torchvision_all": t_ref, "osteonet_all": t_ours, "loadavg_1min": loads}
    inf = res["inference_per_image_s"]
    res["fps"] = {k: {"frames_per_second": 1.0 / inf[k], "seconds_per_frame": inf[k]} for k in ("torchvision", "osteonet")}
    return res


def bench_dsnet(size, repeats):
    torch.manual_seed(0)
    m = osteonet.create_model("fasterrcnn", backbone="dsnet_resnet50", num_classes=3, min_size=size, max_size=size)
    m.eval()
    one = _images(size, 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        m(one)
        t = [_time(lambda: m(one)) for _ in range(repeats)]
    s = statistics.median(t)
    return {"seconds_per_frame": s, "frames_per_second": 1.0 / s, "all": t}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="+", default=[800, 512])
    a = ap.parse_args()
    machine = {"cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "torchvision": torchvision.__version__, "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            machine["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        machine["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    results = {"machine": machine, "sizes": a.sizes, "repeats": a.repeats, "inference_batch": 1, "train_batch": 2,
               "runs": {}}
    for size in a.sizes:
        for name in ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn"):
            r = bench(name, size, a.repeats)
            results["runs"][f"{name}@{size}"] = r
            print(name, size, json.dumps({k: v.get("ratio_torchvision_over_osteonet") for k, v in r.items()}), flush=True)
        results["runs"][f"dsnet_fasterrcnn@{size}"] = {"dsnet": bench_dsnet(size, a.repeats)}
    write_text(os.path.join(a.out, "detection.json"), json.dumps(results, indent=2))
    loads = [x for r in results["runs"].values() for v in r.values() if isinstance(v, dict)
             for x in v.get("loadavg_1min", [])]
    lines = ["# Faster R-CNN: osteonet vs torchvision (CPU)", "",
             f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs shared with other engineers, "
             f"torch {machine['torch']} ({machine['torch_threads']} intra-op thread(s)), torchvision "
             f"{machine['torchvision']}, commit {machine.get('commit', '?')}. Square images, min_size = max_size = "
             f"size; medians of {a.repeats} alternating runs (the order flips every repeat); 1-min load average "
             f"during the runs {min(loads):.2f}..{max(loads):.2f}. Ratio = torchvision time / osteonet time "
             "(>= 1: osteonet at least as fast).", "",
             "| model | size | measure | torchvision (s) | osteonet (s) | ratio |", "|---|---|---|---|---|---|"]
    for key, r in results["runs"].items():
        name, size = key.split("@")
        for kind in ("inference_per_image_s", "train_step_s"):
            if kind in r:
                v = r[kind]
                label = "inference per image (batch 1)" if kind.startswith("inf") else "training step (batch 2)"
                lines.append(f"| {name} | {size} | {label} | {v['torchvision']:.3f} | {v['osteonet']:.3f} | "
                             f"{v['ratio_torchvision_over_osteonet']:.2f} |")
    lines += ["", "DSNet FPS (seed 000: \"Fps 0.1846\" read as seconds per frame), batch-1 inference:", "",
              "| detector | size | implementation | frames per second | seconds per frame |", "|---|---|---|---|---|"]
    for key, r in results["runs"].items():
        name, size = key.split("@")
        if "dsnet" in r:
            d = r["dsnet"]
            lines.append(f"| DSNet (ResNet-50 + DS) | {size} | osteonet | {d['frames_per_second']:.2f} | "
                         f"{d['seconds_per_frame']:.3f} |")
        else:
            for impl, d in r["fps"].items():
                lines.append(f"| {name} | {size} | {impl} | {d['frames_per_second']:.2f} | {d['seconds_per_frame']:.3f} |")
    write_text(os.path.join(a.out, "detection.md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
