"""Faster R-CNN speed: osteonet vs torchvision 0.14 on this CPU (medians of alternating runs).

Usage: python benchmarks/bench_detection.py --out benchmarks/results [--repeats 5] [--size 512]
Reports inference per image (eval, 2 images) and one training step (forward + backward + SGD, 2
images), both models with identical weights (torchvision's state dict loaded), as time ratios
torchvision / osteonet (> 1: osteonet faster).
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torchvision

import osteonet


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(name, size, repeats):
    torch.manual_seed(0)
    kw = dict(min_size=size, max_size=size)
    ref = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, num_classes=3, **kw)
    ours = osteonet.create_model(name, num_classes=3, **kw)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, size / 2, size / 2 + 10]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[size / 3, 10.0, size - 5.0, size / 2]]), "labels": torch.tensor([2])}]

    def infer(m):
        m.eval()
        with torch.no_grad():
            m(images)

    def step(m, opt):
        m.train()
        loss = sum(m(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    opts = {id(ref): torch.optim.SGD(ref.parameters(), lr=1e-4), id(ours): torch.optim.SGD(ours.parameters(), lr=1e-4)}
    res = {}
    for kind, fn in (("inference_per_image_s", lambda m: infer(m)), ("train_step_s", lambda m: step(m, opts[id(m)]))):
        fn(ref), fn(ours)  # warm-up
        t_ref, t_ours = [], []
        for _ in range(repeats):
            t_ref.append(_time(lambda: fn(ref)))
            t_ours.append(_time(lambda: fn(ours)))
        div = 2 if kind.startswith("inference") else 1
        r, o = statistics.median(t_ref) / div, statistics.median(t_ours) / div
        res[kind] = {"torchvision": r, "osteonet": o, "ratio_torchvision_over_osteonet": r / o}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    a = ap.parse_args()
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            machine["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results = {"machine": machine, "image_size": a.size, "images_per_batch": 2, "repeats": a.repeats, "models": {}}
    for name in ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn"):
        results["models"][name] = bench(name, a.size, a.repeats)
        print(name, json.dumps(results["models"][name]), flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "detection.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = ["# Faster R-CNN: osteonet vs torchvision (CPU)", "",
             f"Machine: {machine['cpu']}, {machine['threads']} threads (shared), torch {machine['torch']}, "
             f"torchvision {machine['torchvision']}. Images {a.size}x{a.size}, batch of 2, medians of {a.repeats} "
             "alternating runs; ratio = torchvision time / osteonet time (>= 1: osteonet at least as fast).", "",
             "| model | measure | torchvision (s) | osteonet (s) | ratio |", "|---|---|---|---|---|"]
    for name, r in results["models"].items():
        for kind, v in r.items():
            lines.append(f"| {name} | {kind} | {v['torchvision']:.3f} | {v['osteonet']:.3f} | "
                         f"{v['ratio_torchvision_over_osteonet']:.2f} |")
    with open(os.path.join(a.out, "detection.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
