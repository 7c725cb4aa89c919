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

# name: (backbone, attention, attention_placement)
VARIANTS = {
    "resnet50": ("resnet50", None, None),
    "resnet50+se": ("resnet50", "se", "dsnet"),
    "resnet50+sk": ("resnet50", "sk", "dsnet"),
    "resnet50+ds": ("dsnet_resnet50", None, None),  # DSNet: DS after stage 1 and stage 4 (Figure 3)
    "vgg16": ("vgg16", None, None),
    "vgg16+ds": ("vgg16", "ds", None),
    "mobilenet": ("mobilenet_v3_large", None, None),
    "mobilenet+ds": ("mobilenet_v3_large", "ds", None),
}
# Paper numbers: Map %, Recall %, Acc %, Fps (f/s).
TABLE1 = [("ResNet50", "resnet50", (78.2, 88.1, 74.1, 0.1849)), ("ResNet50+SE", "resnet50+se", (80.4, 88.5, 73.7, 0.1834)),
          ("ResNet50+SK", "resnet50+sk", (81.4, 89.2, 73.8, 0.1829)), ("ResNet50+DS (ours)", "resnet50+ds", (83.4, 90.0, 75.9, 0.1846))]
TABLE2 = [("ResNet50", "resnet50", (78.2, 88.1, 74.1, 0.1849)), ("ResNet50 + DS", "resnet50+ds", (83.4, 90.0, 75.9, 0.1846)),
          ("VGG16", "vgg16", (80.0, 88.5, 71.1, 0.1873)), ("VGG16 + DS", "vgg16+ds", (80.2, 89.9, 71.8, 0.1870)),
          ("MobileNet", "mobilenet", (80.9, 86.4, 73.0, 0.1856)), ("MobileNet + DS", "mobilenet+ds", (83.0, 88.1, 72.7, 0.1846))]


def load_data(args):
    images = args.images or args.data
    train_tf = T.Compose([T.RandomHorizontalFlip(0.5), T.ColorJitter(0.1, 0.1)])
    if os.path.exists(os.path.join(args.data, "train.json")):
        tr = CocoDetection(images, os.path.join(args.data, "train.json"), train_tf, skip_empty=True)
        te = CocoDetection(images, os.path.join(args.data, "test.json"))
        return tr, te
    ann = os.path.join(args.data, "annotations.json")
    tr, te = CocoDetection(images, ann, train_tf, skip_empty=True), CocoDetection(images, ann)
    g = torch.Generator().manual_seed(args.seed)
    ids = sorted(te.ids)
    perm = torch.randperm(len(ids), generator=g).tolist()
    n_test = max(1, len(ids) // 5)
    test_ids = {ids[i] for i in perm[:n_test]}
    tr.ids = [i for i in tr.ids if i not in test_ids]
    te.ids = [i for i in te.ids if i in test_ids]
    return tr, te


def evaluate(model, ds, score_thresh):
    model.eval()
    preds, targets, seconds = [], [], 0.0
    with torch.no_grad():
        for i in range(len(ds)):
            img, t = ds[i]
            t0 = time.perf_counter()
            out = model([img])[0]
            seconds += time.perf_counter() - t0
            preds.append({k: out[k] for k in ("boxes", "scores", "labels")})
            targets.append({"boxes": t["boxes"], "labels": t["labels"]})
    kept = [{k: v[p["scores"] >= score_thresh] for k, v in p.items()} for p in preds]
    c = om.detection_counts(kept, targets, iou_threshold=0.5)
    ncls = max(1, len({int(l) for t in targets for l in t["labels"]}))
    return {
        "map": 100 * om.detection_map(preds, targets, method="voc")["map"],
        "recall": 100 * om.detection_recall(kept, targets, 0.5),
        "acc": 100 * om.detection_accuracy(kept, targets, 0.5),
        # eq. (3) is undefined without predictions (TP + FP = 0)
        "map_paper_eq3": 100 * om.dsnet_paper_map(c["tp"], c["fp"], ncls) if c["tp"] + c["fp"] else float("nan"),
        "fps": len(ds) / seconds if seconds > 0 else float("nan"),
        **{k: int(v) for k, v in c.items()},
    }


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


def fmt(v):
    return "-" if v is None or v != v else f"{v:.1f}" if abs(v) >= 1 else f"{v:.4f}"


def table(title, rows, results):
    lines = [f"### {title}", "", "| Backbone | Map % (paper) | Recall % (paper) | Acc % (paper) | Fps (paper) | Map eq.3 % |",
             "|---|---|---|---|---|---|"]
    out = []
    for label, key, paper in rows:
        r = results.get(key)
        ours = [None] * 5 if r is None else [r["map"], r["recall"], r["acc"], r["fps"], r["map_paper_eq3"]]
        lines.append(f"| {label} | {fmt(ours[0])} ({paper[0]}) | {fmt(ours[1])} ({paper[1]}) | {fmt(ours[2])} ({paper[2]}) "
                     f"| {fmt(ours[3])} ({paper[3]}) | {fmt(ours[4])} |")
        clean = None if r is None else {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        out.append({"backbone": label, "variant": key, "ours": clean, "paper": dict(zip(("map", "recall", "acc", "fps"), paper))})
    return "\n".join(lines), out


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
    md1, t1 = table("Table 1: ResNet50 with attention modules (ours vs paper)", TABLE1, results)
    md2, t2 = table("Table 2: backbones with and without DS (ours vs paper)", TABLE2, results)
    note = (f"\nData: {args.data} ({len(tr)} train / {len(te)} test images), {args.epochs} epochs, "
            f"min_size {args.min_size}. Paper: 3,844 / 961 lumbar CT images, 100 epochs, COCO-pretrained.\n")
    md = md1 + "\n\n" + md2 + "\n" + note
    print(md)
    ot.atomic_write(os.path.join(args.out, "table.md"), md.encode())
    ot.atomic_write(os.path.join(args.out, "table.json"),
                    json.dumps({"table1": t1, "table2": t2, "args": vars(args)}, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
