"""Seed 002 end to end: one 64-slice scan through osteonet's C++ pipeline vs the same pipeline in Python
(torchvision's resnet34 with the 512 -> 32 -> 1 head, torch.nn.LSTM), on this CPU.

Usage: python benchmarks/bench_sequence.py --out benchmarks/results [--runs 10] [--slices 64] [--size 512]

Both pipelines run in eval mode without gradients on identical weights (osteonet's state dict loaded
into the Python modules; outputs compared before timing) and do the same work: 64 raw 512 x 512 grey
slices -> antialiased bilinear resize to 224 -> pixel-mean subtraction -> 3 channels -> ResNet-34 ->
fc1/BN/ReLU (32-d features) and fc2 (slice probabilities) -> LSTM(32, 256) -> FC -> sigmoid.
Preprocessing is INCLUDED; centre-slice selection is not (the 64 slices are the selected ones).
Timings are medians of --runs alternating runs after one warm-up each; ratio = Python time / osteonet
time (>= 1: osteonet at least as fast).
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torchvision
from torch import nn

import osteonet
from osteonet.io import write_text
from osteonet import sequence as seq


class TorchPipeline(nn.Module):
    """The reference: torchvision resnet34 + the same head + torch.nn.LSTM aggregator."""

    def __init__(self, pixel_mean):
        super().__init__()
        self.backbone = torchvision.models.resnet34()
        self.backbone.fc = nn.Identity()
        self.fc1, self.bn1, self.fc2 = nn.Linear(512, 32), nn.BatchNorm1d(32), nn.Linear(32, 1)
        self.lstm = nn.LSTM(32, 256, batch_first=True)
        self.fc = nn.Linear(256, 1)
        self.register_buffer("pixel_mean", pixel_mean)

    def forward(self, slices):  # T x H x W raw slices
        x = nn.functional.interpolate(slices.unsqueeze(1), size=(224, 224), mode="bilinear", align_corners=False,
                                      antialias=True)
        x = (x - self.pixel_mean).expand(-1, 3, -1, -1).contiguous()
        f = torch.relu(self.bn1(self.fc1(self.backbone(x))))
        slice_p = torch.sigmoid(self.fc2(f)).squeeze(1)
        _, (h, _) = self.lstm(f.unsqueeze(0))
        return torch.sigmoid(self.fc(h[-1])).squeeze(), slice_p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    a = ap.parse_args()

    torch.manual_seed(0)
    scan = torch.rand(a.slices, a.size, a.size)
    mean = seq.pixel_mean(scan, 224)
    enc, agg = seq.create_slice_encoder().eval(), seq.create_aggregator("lstm").eval()
    pipe = seq.ScanPipeline(enc, agg, center_fraction=1.0, pixel_mean=mean)
    ref = TorchPipeline(mean).eval()
    sd = {k[len("backbone."):]: v for k, v in enc.state_dict().items() if k.startswith("backbone.")}
    ref.backbone.load_state_dict(sd)
    for k, v in enc.state_dict().items():
        if not k.startswith("backbone."):
            ref.state_dict()[k].copy_(v)
    for k, v in agg.state_dict().items():
        ref.state_dict()[k].copy_(v)

    def run_ours():
        return pipe.predict_slices(scan)

    def run_ref():
        with torch.no_grad():
            return ref(scan)

    o, (rp, rs) = run_ours(), run_ref()  # warm-up + agreement check
    diff = max(abs(o["probability"].item() - rp.item()), (o["slice_probabilities"] - rs).abs().max().item())
    if diff > 1e-4:
        raise SystemExit(f"bench_sequence: the pipelines disagree by {diff}")
    t_ours, t_ref = [], []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        run_ref()
        t_ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_ours()
        t_ours.append(time.perf_counter() - t0)
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)

    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "torchvision": torchvision.__version__, "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            machine["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    res = {"machine": machine, "slices": a.slices, "input_size": a.size, "network_size": 224, "runs": a.runs,
           "preprocessing_included": True, "max_abs_difference": diff,
           "osteonet_s": mo, "torch_python_s": mr, "ratio_python_over_osteonet": mr / mo,
           "osteonet_runs_s": t_ours, "torch_python_runs_s": t_ref}
    os.makedirs(a.out, exist_ok=True)
    write_text(os.path.join(a.out, "sequence.json"), json.dumps(res, indent=2) + "\n")
    md = (
        "# Seed 002 pipeline: one scan end to end, osteonet vs PyTorch (CPU)\n\n"
        f"Machine: {machine['cpu']}, {machine['cores']} cores (shared), torch {machine['torch']} with "
        f"{machine['threads']} threads, torchvision {machine['torchvision']}.\n\n"
        f"One scan of {a.slices} slices of {a.size}x{a.size}, eval, no gradients; preprocessing included "
        "(antialiased resize to 224, pixel-mean subtraction, 3 channels), then ResNet-34 + 512->32->1 head + "
        f"LSTM(32, 256) + FC + sigmoid. Medians of {a.runs} alternating runs after a warm-up; identical weights "
        f"(outputs agree to {diff:.1e}).\n\n"
        "| pipeline | median (s) |\n|---|---|\n"
        f"| osteonet C++ (`ScanPipeline.predict_slices`) | {mo:.3f} |\n"
        f"| torchvision resnet34 + torch.nn.LSTM (Python) | {mr:.3f} |\n\n"
        f"Ratio Python / osteonet: **{mr / mo:.3f}** (goal >= 1.0).\n\n"
        f"Command: `python benchmarks/bench_sequence.py --runs {a.runs}`\n"
    )
    write_text(os.path.join(a.out, "sequence.md"), md)
    print(md)


if __name__ == "__main__":
    main()
