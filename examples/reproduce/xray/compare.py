#!/usr/bin/env python3
"""Seed 001's model comparison and the attention comparison on the real X-rays in ../shared/data.

    python examples/reproduce/xray/compare.py --out runs/xray [--epochs 10 --image-size 128]

Experiments (results table: runs/xray/results.md and .json):
- seed001: dxa_cnn21 vs ResNet-50, VGG-16, VGG-19, Inception-v3, binary (osteoporosis vs not), on
  spine-xray, split 4:1 by patient (never by image).
- attention: ResNet-18 with none / SE / SK / DS (3 classes: normal, osteopenia, osteoporosis) on
  spine-xray (split by patient) and knee-xray (no patient ids: split by image, so images of one
  person may fall on both sides, which flatters the numbers).
All models are trained from scratch (no pretrained weights offline), grey input, light augmentation
(flip, ±10° rotation, small shifts), AdamW lr 1e-3, cosine schedule, seed 0. Metrics with 95 % CIs
(Wilson for proportions) from osteonet.metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import osteonet
from osteonet import classify as C
from osteonet import train as ot
from osteonet.io import read_manifest, write_json, write_text
from osteonet.split import patient_split

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "shared", "data"))


def run(folder, rows, groups, classes, label_of, model_name, attention, args, out):
    labels = [label_of(r) for r in rows]
    rows = [dict(r, label=l) for r, l in zip(rows, labels)]
    tr, te = patient_split(groups, labels, test_fraction=0.2, seed=args.seed)
    ot.seed_everything(args.seed)
    kw = {"aux_logits": False} if model_name == "inception_v3" else {}
    model = osteonet.create_model(model_name, num_classes=len(classes), in_chans=1, attention=attention, **kw)
    size = max(args.image_size, 75 if model_name == "inception_v3" else 0)  # Inception-v3 needs at least 75 px
    tl = torch.utils.data.DataLoader(C.ManifestImages(folder, rows, tr, classes, size, augment=True),
                                     batch_size=args.batch_size, shuffle=True, drop_last=True)
    vl = torch.utils.data.DataLoader(C.ManifestImages(folder, rows, te, classes, size), batch_size=32)
    opt = ot.create_optimizer("adamw", model, lr=1e-3, weight_decay=1e-4)
    t0 = time.time()
    ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=args.epochs), epochs=args.epochs, out_dir=out,
               seed=args.seed, progress=False).fit(tl, ot.classification_step())
    rep = C.report(C.predict_loader(model, vl), classes, seed=args.seed)
    rep.update(train_images=len(tr), test_images=len(te), seconds=time.time() - t0)
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
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    spine, knee = os.path.join(args.data, "spine-xray"), os.path.join(args.data, "knee-xray")
    if not os.path.isdir(spine):
        print(f"{spine}: not found (the shared data sets are not on this machine)", file=sys.stderr)
        return 2
    results = []
    exps = args.experiments.split(",")
    if "seed001" in exps:
        rows = read_manifest(spine, required=("path", "label", "patient_id"))
        for m in ["dxa_cnn21", "resnet50", "vgg16", "vgg19", "inception_v3"]:
            rep = run(spine, rows, [r["patient_id"] for r in rows], ["other", "osteoporosis"],
                      lambda r: "osteoporosis" if r["label"] == "osteoporosis" else "other", m, None, args,
                      os.path.join(args.out, "seed001", m))
            results.append({"experiment": "seed001 (spine, binary)", "method": m, **rep})
            print(f"seed001 {m}: acc {rep['accuracy']:.3f} f1_macro {rep['f1_macro']:.3f}", flush=True)
    if "attention" in exps:
        for name, folder in (("spine", spine), ("knee", knee)):
            rows = read_manifest(folder, required=("path", "label"))
            groups = [r.get("patient_id") or r.get("image_id") for r in rows]
            for att in ["none", "se", "sk", "ds"]:
                rep = run(folder, rows, groups, ["normal", "osteopenia", "osteoporosis"], lambda r: r["label"], "resnet18",
                          att, args, os.path.join(args.out, "attention", name, att))
                results.append({"experiment": f"attention ({name}, 3 classes)", "method": f"resnet18+{att}", **rep})
                print(f"attention {name} {att}: acc {rep['accuracy']:.3f} f1_macro {rep['f1_macro']:.3f}", flush=True)
    lines = ["| experiment | method | train / test images | accuracy (95 % CI) | F1 macro | AUC |", "|---|---|---|---|---|---|"]
    for r in results:
        auc = r.get("auc", r.get("auc_macro_ovr"))
        lo, hi = r["accuracy_ci"]
        lines.append(f"| {r['experiment']} | {r['method']} | {r['train_images']} / {r['test_images']} | "
                     f"{r['accuracy']:.3f} ({lo:.3f}-{hi:.3f}) | {r['f1_macro']:.3f} | {'-' if auc is None else f'{auc:.3f}'} |")
    md = "\n".join(lines) + f"\n\nSettings: {args.epochs} epochs, {args.image_size} px, seed {args.seed}, from scratch.\n"
    print(md)
    write_text(os.path.join(args.out, "results.md"), md)
    write_json(os.path.join(args.out, "results.json"), {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
