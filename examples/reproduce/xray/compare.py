#!/usr/bin/env python3
"""Seed 001's model comparison and the attention comparison on the real X-rays in ../shared/data.

    python examples/reproduce/xray/compare.py --out runs/xray [--epochs 10 --image-size 128]

Experiments (results table: runs/xray/results.md and .json):
- seed001: dxa_cnn21 vs ResNet-50, VGG-16, VGG-19, Inception-v3, binary (osteoporosis vs not), on
  spine-xray, split 4:1 by patient (never by image).
- attention: ResNet-18 with none / SE / SK / DS (3 classes: normal, osteopenia, osteoporosis) on
  spine-xray (split by patient) and knee-xray (no patient ids: split by image, so images of one
  person may fall on both sides, which flatters the numbers).
Every run is `osteonet train --task classification` (osteonet.tasks): from scratch, except
resnet50_imagenet (the ImageNet ResNet-50 of osteonet.weights, conv1 summed over RGB), grey input, light augmentation (flip, ±10° rotation, small shifts), AdamW lr 1e-3, cosine
schedule, seed 0, the last epoch evaluated on the held-out split. Metrics with 95 % CIs (Wilson for
proportions) and the majority-class baseline from the task's evaluation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import torch

from osteonet import tasks
from osteonet.io import read_manifest, write_json, write_text

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "shared", "data"))


def relabelled(folder: str, out: str, label_of) -> str:
    """A classification folder whose manifest names ``folder``'s images (absolute paths) with new labels."""
    rows = read_manifest(folder, required=("path", "label"))
    os.makedirs(out, exist_ok=True)
    cols = list(rows[0])
    buf = [dict(r, path=os.path.abspath(os.path.join(folder, r["path"])), label=label_of(r)) for r in rows]
    with open(os.path.join(out, "manifest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(buf)
    return out


#: seed001's methods: name -> (model, init_weights); "resnet50_imagenet" fine-tunes the ImageNet ResNet-50
#: (osteonet.weights, v1 strides, conv1 summed over RGB for the grey input)
SEED001 = {"dxa_cnn21": ("dxa_cnn21", None), "resnet50": ("resnet50", None),
           "resnet50_imagenet": ("resnet50", "imagenet"), "vgg16": ("vgg16", None), "vgg19": ("vgg19", None),
           "inception_v3": ("inception_v3", None)}


def run(folder, model_name, attention, args, out, init_weights=None):
    """One `osteonet train --task classification` run; its held-out metrics."""
    size = max(args.image_size, 75 if model_name == "inception_v3" else 0)  # Inception-v3 needs at least 75 px
    t0 = time.time()
    card = tasks.train("classification", folder, out, {"model": model_name, "attention": attention, "image_size": size,
                                                       "epochs": args.epochs, "batch_size": args.batch_size,
                                                       "init_weights": init_weights},
                       seed=args.seed, resume=True, progress=False)
    with open(os.path.join(out, "metrics.json")) as f:
        rep = json.load(f)
    rep.update(train_images=card["training_data"]["train"]["samples"], test_images=rep["n"], seconds=time.time() - t0)
    return rep


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=SHARED)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--experiments", default="seed001,attention")
    p.add_argument("--models", default=",".join(SEED001), help=f"seed001's methods ({', '.join(SEED001)})")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    spine, knee = os.path.join(args.data, "spine-xray"), os.path.join(args.data, "knee-xray")
    if not os.path.isdir(spine):
        print(f"{spine}: not found (the shared data sets are not on this machine)", file=sys.stderr)
        return 2
    results = []
    exps = args.experiments.split(",")
    if "seed001" in exps:
        binary = relabelled(spine, os.path.join(args.out, "data", "spine-binary"),
                            lambda r: "osteoporosis" if r["label"] == "osteoporosis" else "other")
        unknown = sorted(set(args.models.split(",")) - set(SEED001))
        if unknown:
            print(f"--models: unknown {unknown}; valid: {', '.join(SEED001)}", file=sys.stderr)
            return 2
        for m in args.models.split(","):
            model, weights = SEED001[m]
            rep = run(binary, model, None, args, os.path.join(args.out, "seed001", m), init_weights=weights)
            results.append({"experiment": "seed001 (spine, binary)", "method": m, **rep})
            print(f"seed001 {m}: acc {rep['accuracy']:.3f} f1_macro {rep['f1_macro']:.3f}", flush=True)
    if "attention" in exps:
        for name, folder in (("spine", spine), ("knee", knee)):
            for att in ["none", "se", "sk", "ds"]:
                rep = run(folder, "resnet18", att, args, os.path.join(args.out, "attention", name, att))
                results.append({"experiment": f"attention ({name}, 3 classes)", "method": f"resnet18+{att}", **rep})
                print(f"attention {name} {att}: acc {rep['accuracy']:.3f} f1_macro {rep['f1_macro']:.3f}", flush=True)
    lines = ["| experiment | method | train / test images | accuracy (95 % CI) | F1 macro | AUC | majority class |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        auc = r.get("auc", r.get("auc_macro_ovr"))
        lo, hi = r["accuracy_ci"]
        base = r.get("baseline") or {}
        lines.append(f"| {r['experiment']} | {r['method']} | {r['train_images']} / {r['test_images']} | "
                     f"{r['accuracy']:.3f} ({lo:.3f}-{hi:.3f}) | {r['f1_macro']:.3f} | {'-' if auc is None else f'{auc:.3f}'} | "
                     f"{base.get('accuracy', float('nan')):.3f} |")
    md = "\n".join(lines) + (f"\n\nSettings: {args.epochs} epochs, {args.image_size} px, seed {args.seed}; from scratch "
                             "except resnet50_imagenet (ImageNet ResNet-50 resnet50/imagenet, grey conv1 adapted).\n")
    print(md)
    write_text(os.path.join(args.out, "results.md"), md)
    write_json(os.path.join(args.out, "results.json"), {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
