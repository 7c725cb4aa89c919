"""Benchmarks of osteonet.metrics (medians), with ratios against scikit-learn where it has the metric.

Writes benchmarks/results/metrics.json and metrics.md with the machine described.
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import sklearn
import torch
from sklearn import metrics as sk

import osteonet.metrics as M


def median_time(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    # COCO evaluation: 5,000 images × 100 detections, 3 classes, 5 ground-truth boxes per image.
    preds, targets = [], []
    for _ in range(5000):
        xy = rng.uniform(0, 400, (5, 2))
        gb = np.concatenate([xy, xy + rng.uniform(20, 150, (5, 2))], 1)
        src = rng.integers(0, 5, 100)
        db = gb[src] + rng.normal(0, 10, (100, 4))
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        preds.append({"boxes": db, "scores": rng.random(100), "labels": rng.integers(0, 3, 100)})
        targets.append({"boxes": gb, "labels": rng.integers(0, 3, 5)})
    t = median_time(lambda: M.detection_map(preds, targets), max(1, args.repeats // 2))
    rows.append({"name": "COCO mAP, 5,000 images x 100 detections", "seconds": t, "target_s": 2.0,
                 "sklearn_s": None, "ratio_vs_sklearn": None, "note": "scikit-learn has no COCO evaluation"})

    # AUC on 10^6 scores.
    y = rng.integers(0, 2, 10 ** 6)
    s = rng.random(10 ** 6) + 0.2 * y
    t = median_time(lambda: M.roc_auc(y, s), args.repeats)
    ts = median_time(lambda: sk.roc_auc_score(y, s), args.repeats)
    rows.append({"name": "ROC AUC, 10^6 scores", "seconds": t, "target_s": 0.3, "sklearn_s": ts,
                 "ratio_vs_sklearn": ts / t, "note": "sklearn.metrics.roc_auc_score"})

    # Bootstrap: 1,000 resamples of AUC at n = 10^4.
    y4, s4 = y[:10 ** 4], s[:10 ** 4]
    t = median_time(lambda: M.bootstrap_ci("auc", y4, s4, n_resamples=1000, seed=0), args.repeats)
    idx = M.bootstrap_indices(10 ** 4, 100, 0)
    t100 = median_time(lambda: [sk.roc_auc_score(y4[i], s4[i]) for i in idx], 1)
    rows.append({"name": "Percentile bootstrap of AUC, 1,000 resamples, n = 10^4", "seconds": t, "target_s": 1.0,
                 "sklearn_s": t100 * 10, "ratio_vs_sklearn": t100 * 10 / t,
                 "note": "sklearn: roc_auc_score in a Python loop over the same resamples (100 timed, x10)"})

    # Dice on a 300×512×512 binary volume.
    vol_t = torch.from_numpy(rng.random((1, 300, 512, 512), dtype=np.float32) > 0.7)
    vol_p = vol_t ^ torch.from_numpy(rng.random((1, 300, 512, 512), dtype=np.float32) > 0.95)
    t = median_time(lambda: M.dice(vol_p, vol_t), args.repeats)
    sub_t, sub_p = vol_t[0, :10].numpy().ravel(), vol_p[0, :10].numpy().ravel()
    tsk = median_time(lambda: sk.f1_score(sub_t, sub_p), 1) * 30
    rows.append({"name": "Dice, 300x512x512 binary volume", "seconds": t, "target_s": 0.2, "sklearn_s": tsk,
                 "ratio_vs_sklearn": tsk / t,
                 "note": "sklearn.metrics.f1_score on flattened masks, timed on 10 slices and scaled x30"})
    del vol_t, vol_p

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "sklearn": sklearn.__version__, "numpy": np.__version__, "python": platform.python_version(),
               "platform": platform.platform()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"machine": machine, "results": rows}, f, indent=2)
    lines = ["# osteonet.metrics benchmarks", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores (shared), torch {machine['torch']} "
             f"({machine['torch_threads']} threads), scikit-learn {machine['sklearn']}, NumPy {machine['numpy']}, "
             f"Python {machine['python']}.", "",
             "Medians of repeated runs (`python benchmarks/bench_metrics.py`). Ratio = scikit-learn time / osteonet time.", "",
             "| benchmark | osteonet (s) | target (s) | scikit-learn (s) | ratio | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        sks = "-" if r["sklearn_s"] is None else f"{r['sklearn_s']:.3f}"
        rat = "-" if r["ratio_vs_sklearn"] is None else f"{r['ratio_vs_sklearn']:.1f}x"
        lines.append(f"| {r['name']} | {r['seconds']:.3f} | {r['target_s']} | {sks} | {rat} | {r['note']} |")
    with open(os.path.join(args.out, "metrics.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
