#!/usr/bin/env python3
"""DSNet (seed 000) Tables 1 and 2: Faster R-CNN with ResNet50 (+SE, +SK, +DS = DSNet), VGG16 +-DS and
MobileNet(V3-Large) +-DS, trained and evaluated on a COCO-style data set, printed beside the paper.

  python examples/reproduce/dsnet/reproduce_dsnet.py --data DIR --epochs 100 --out runs/dsnet

DIR holds ``train.json`` and ``test.json`` (COCO layout; images relative to DIR, or to --images), or one
``annotations.json`` split 4:1 by image (the paper's ratio; seeded). The paper's recipe: SGD, lr 0.01,
batch size 9, 100 epochs, COCO-pretrained weights (not available offline here: from scratch unless
--weights-dir gives torchvision-named state dicts per variant). Metrics (osteonet.metrics): Map = VOC AP
at IoU 0.5, Recall = TP/(TP+FN) at IoU 0.5, Acc = TP/(TP+FP) (the paper's wording; its eq. 5 is not
computable for detection, see docs/metrics.md), also the paper's eq. (3) verbatim, and frames per second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

import osteonet
from osteonet import metrics as om
from osteonet import train as ot
from osteonet.data import CocoDetection, collate
from osteonet.data import transforms as T

from osteonet.reproduce.dsnet import TABLE1, TABLE2, VARIANTS, evaluate, split_by_patient, tables  # one implementation


def load_data(args):
    images = args.images or args.data
    train_tf = T.Compose([T.RandomHorizontalFlip(0.5), T.ColorJitter(0.1, 0.1)])
    if os.path.exists(os.path.join(args.data, "train.json")):
        tr = CocoDetection(images, os.path.join(args.data, "train.json"), train_tf, skip_empty=True)
        te = CocoDetection(images, os.path.join(args.data, "test.json"))
        return tr, te
    ann = os.path.join(args.data, "annotations.json")
    with open(ann) as f:
        has_patients = all("patient_id" in im for im in json.load(f)["images"])
    if has_patients:  # the built-in data (osteonet synth --kind ct): 4:1 by patient, as the paper
        split_by_patient(ann, args.seed)
        return (CocoDetection(images, os.path.join(args.data, "train.json"), train_tf, skip_empty=True),
                CocoDetection(images, os.path.join(args.data, "test.json")))
    tr, te = CocoDetection(images, ann, train_tf, skip_empty=True), CocoDetection(images, ann)
    g = torch.Generator().manual_seed(args.seed)
    ids = sorted(te.ids)
    perm = torch.randperm(len(ids), generator=g).tolist()
    n_test = max(1, len(ids) // 5)
    test_ids = {ids[i] for i in perm[:n_test]}
    tr.ids = [i for i in tr.ids if i not in test_ids]
    te.ids = [i for i in te.ids if i in test_ids]
    return tr, te


def run_variant(name, tr, te, args):
    backbone, attention, placement = VARIANTS[name]
    opts = dict(min_size=args.min_size, max_size=args.max_size)
    if placement:
        opts["attention_placement"] = placement
    ot.seed_everything(args.seed)
    model = osteonet.create_model("fasterrcnn", backbone=backbone, attention=attention, num_classes=tr.num_classes, **opts)
    if args.weights_dir:
        model.load_state_dict(torch.load(os.path.join(args.weights_dir, f"{name}.pt")), strict=False)
    loader = torch.utils.data.DataLoader(tr, batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    opt = ot.create_optimizer("sgd", model, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    out = os.path.join(args.out, name.replace("+", "_"))
    trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, args.epochs)), epochs=args.epochs,
                         clip_grad_norm=10.0, out_dir=out, seed=args.seed, progress=not args.quiet)
    last = os.path.join(out, "last.pt")
    if args.resume and os.path.exists(last):
        trainer.resume(last)
    trainer.fit(loader, ot.detection_step)
    return evaluate(model, te, args.score_thresh)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--images", default=None, help="image folder (default: --data)")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=9)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--weights-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue each variant from its last.pt")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r} (valid: {', '.join(VARIANTS)})")
    os.makedirs(args.out, exist_ok=True)
    tr, te = load_data(args)
    results = {}
    for v in names:
        results[v] = run_variant(v, tr, te, args)
        print(f"{v}: {json.dumps({k: round(x, 4) for k, x in results[v].items()})}", file=sys.stderr, flush=True)
    md, rows = tables(results)
    note = (f"\nData: {args.data} ({len(tr)} train / {len(te)} test images), {args.epochs} epochs, "
            f"min_size {args.min_size}. Paper: 3,844 / 961 lumbar CT images, 100 epochs, COCO-pretrained.\n")
    md = md + note
    print(md)
    ot.atomic_write(os.path.join(args.out, "table.md"), md.encode())
    ot.atomic_write(os.path.join(args.out, "table.json"),
                    json.dumps({"rows": rows, "args": vars(args)}, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
