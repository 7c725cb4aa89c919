"""The `osteonet` command line: synth, train, evaluate, predict, reproduce, bench. Every run writes
into its --out folder (checkpoints *.pt, metrics.json, logs, pictures); long work shows progress."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

__all__ = ["main"]


def _cmd_synth(a) -> int:
    from . import synth

    gen = {"ct": lambda: synth.generate_ct_dataset(a.out, a.n, a.slices, seed=a.seed),
           "ovf": lambda: synth.generate_ovf_dataset(a.out, a.n, seed=a.seed),
           "hip": lambda: synth.generate_hip_dataset(a.out, a.n, seed=a.seed),
           "dxa": lambda: synth.generate_dxa_dataset(a.out, a.n, seed=a.seed)}[a.kind]
    print(json.dumps(gen()))
    return 0


def _cmd_train(a) -> int:
    import torch

    import osteonet
    from . import classify as C
    from . import figures
    from . import train as ot
    from .io import read_manifest, write_json
    from .split import patient_split

    if a.task != "classification":
        raise ValueError(f"train: --task {a.task!r} is not available from the command line yet; use 'classification' "
                         "(detection: examples/reproduce/dsnet, `osteonet reproduce dsnet`)")
    rows = read_manifest(a.data)
    classes = C.class_list(rows)
    if len(classes) < 2:
        raise ValueError(f"{a.data}/manifest.csv: need at least 2 classes, got {classes}")
    groups = [r.get("patient_id") or r.get("image_id") or str(i) for i, r in enumerate(rows)]
    tr_idx, te_idx = patient_split(groups, [r["label"] for r in rows], test_fraction=a.test_fraction, seed=a.seed)
    ot.seed_everything(a.seed)
    kw = {"aux_logits": False} if a.model == "inception_v3" else {}
    model = osteonet.create_model(a.model, num_classes=len(classes), in_chans=1, attention=a.attention, **kw)
    train_ds = C.ManifestImages(a.data, rows, tr_idx, classes, a.image_size, augment=True)
    test_ds = C.ManifestImages(a.data, rows, te_idx, classes, a.image_size)
    # drop_last: a final batch of one sample breaks BatchNorm on pooled features in training
    tl = torch.utils.data.DataLoader(train_ds, batch_size=a.batch_size, shuffle=True, drop_last=len(train_ds) > a.batch_size)
    vl = torch.utils.data.DataLoader(test_ds, batch_size=a.batch_size)
    opt = ot.create_optimizer(a.optimizer, model, lr=a.lr, weight_decay=1e-4)
    eval_fn = lambda m, epoch: {"test_accuracy": C.report(C.predict_loader(m, vl), classes)["accuracy"]}
    trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, a.epochs)), epochs=a.epochs, out_dir=a.out,
                         seed=a.seed, monitor="test_accuracy", mode="max", progress=not a.quiet)
    card = {"task": "classification", "model": a.model, "attention": a.attention, "classes": classes,
            "image_size": a.image_size, "in_chans": 1, "model_options": kw, "data": os.path.abspath(a.data),
            "test_indices": te_idx, "seed": a.seed}
    C.save_model_card(a.out, card)
    history = trainer.fit(tl, ot.classification_step(), eval_fn)
    pred = C.predict_loader(model, vl)
    rep = C.report(pred, classes, seed=a.seed)
    write_json(os.path.join(a.out, "metrics.json"), {"test": rep, "history": history, "split": {
        "train_images": len(tr_idx), "test_images": len(te_idx)}})
    figures.confusion_matrix_png(os.path.join(a.out, "confusion_matrix.png"), rep["confusion_matrix"], classes)
    figures.roc_png(os.path.join(a.out, "roc.png"), C.roc_curves(pred, classes))
    figures.training_curves_png(os.path.join(a.out, "training_curves.png"), history)
    print(f"accuracy {rep['accuracy']:.3f} f1_macro {rep['f1_macro']:.3f} -> {a.out}/metrics.json, last.pt, pictures")
    return 0


def _load_classifier(checkpoint: str):
    import osteonet
    from . import classify as C
    from .train import load_checkpoint

    card = C.load_model_card(checkpoint)
    model = osteonet.create_model(card["model"], num_classes=len(card["classes"]), in_chans=card["in_chans"],
                                  attention=card["attention"], **card.get("model_options", {}))
    load_checkpoint(checkpoint, model)
    return model.eval(), card


def _cmd_evaluate(a) -> int:
    import torch

    from . import classify as C
    from . import figures
    from .io import read_manifest, write_json

    model, card = _load_classifier(a.checkpoint)
    rows = read_manifest(a.data)
    unknown = sorted({r["label"] for r in rows} - set(card["classes"]))
    if unknown:
        raise ValueError(f"{a.data}/manifest.csv: labels {unknown} are not among the model's classes {card['classes']}")
    ds = C.ManifestImages(a.data, rows, range(len(rows)), card["classes"], card["image_size"])
    pred = C.predict_loader(model, torch.utils.data.DataLoader(ds, batch_size=16))
    rep = C.report(pred, card["classes"])
    write_json(os.path.join(a.out, "metrics.json"), rep)
    figures.confusion_matrix_png(os.path.join(a.out, "confusion_matrix.png"), rep["confusion_matrix"], card["classes"])
    figures.roc_png(os.path.join(a.out, "roc.png"), C.roc_curves(pred, card["classes"]))
    print(f"accuracy {rep['accuracy']:.3f} f1_macro {rep['f1_macro']:.3f} on {rep['n']} images -> {a.out}/metrics.json")
    return 0


def _cmd_predict(a) -> int:
    if a.input is None:
        raise ValueError("predict: give the input as --input PATH or as the last argument")
    if a.task == "ovf":
        from .sequence import predict_ovf

        print(json.dumps(predict_ovf(a.checkpoint, a.input, a.out)))
        return 0
    import numpy as np
    import torch
    import torch.nn.functional as F

    from . import figures
    from .io import read_volume, window, write_json

    model, card = _load_classifier(a.checkpoint)
    data, affine, meta = read_volume(a.input)
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 3:  # a volume: its middle slice along the first axis
        arr = arr[arr.shape[0] // 2]
    if arr.ndim != 2:
        raise ValueError(f"{a.input}: expected a 2-D image or a 3-D volume, got shape {tuple(np.shape(data))}")
    if a.input.lower().endswith((".dcm", ".nii", ".nii.gz")) or os.path.isdir(a.input):
        img = window(arr, a.window_center, a.window_width)  # HU to [0, 1]
    else:
        img = arr / (255.0 if arr.max() <= 255 else float(arr.max()))
    x = F.interpolate(torch.from_numpy(img).float()[None, None], size=(card["image_size"],) * 2, mode="bilinear",
                      align_corners=False)
    with torch.no_grad():
        probs = torch.softmax(model((x - 0.5) / 0.25), 1)[0].tolist()
    best = int(np.argmax(probs))
    result = {"input": a.input, "class": card["classes"][best], "probabilities": dict(zip(card["classes"], probs))}
    base = os.path.splitext(os.path.basename(a.input.rstrip("/")))[0]
    write_json(os.path.join(a.out, f"{base}.json"), result)
    figures.image_with_text_png(os.path.join(a.out, f"{base}.png"), img,
                                [f"{card['classes'][best]} ({probs[best]:.2f})"] + [f"{c}: {p:.2f}" for c, p in zip(card["classes"], probs)])
    print(json.dumps(result))
    return 0


PAPERS = ("dsnet", "ovf", "bmd", "hip")


def _reproduce_all(a) -> int:
    """Every paper's quick (or paper) preset in turn, each in OUT/<paper>, and OUT/summary.md with all tables."""
    import time

    if a.variants or a.data:
        raise ValueError("reproduce all: --variants and --data apply to one paper; run `osteonet reproduce <paper>` for them")
    from .io import write_text

    parts, t_all = ["# osteonet: the papers' tables on the built-in data", ""], time.time()
    for paper in PAPERS:
        t0 = time.time()
        print(f"== reproduce {paper} ({a.preset}) -> {os.path.join(a.out, paper)}", flush=True)
        sub = argparse.Namespace(**{**vars(a), "paper": paper, "out": os.path.join(a.out, paper)})
        _cmd_reproduce(sub)
        with open(os.path.join(a.out, paper, "table.md")) as f:
            parts += [f"## {paper} ({time.time() - t0:.0f} s; files in `{paper}/`)", "", f.read().strip(), ""]
    parts.append(f"Preset `{a.preset}`, seed {a.seed}, {time.time() - t_all:.0f} s in all.")
    write_text(os.path.join(a.out, "summary.md"), "\n".join(parts) + "\n")
    print(f"wrote {a.out}/summary.md ({time.time() - t_all:.0f} s)")
    return 0


def _cmd_reproduce(a) -> int:
    if a.paper == "all":
        return _reproduce_all(a)
    if a.paper == "dsnet":
        from .reproduce.dsnet import VARIANTS, reproduce

        variants = [v for v in a.variants.split(",") if v] if a.variants else None
        res = reproduce(a.out, preset=a.preset, seed=a.seed, variants=variants, data=a.data, progress=not a.quiet)
        print(res["markdown"])
        print(f"wrote {a.out}/table.json and {a.out}/table.md")
        return 0
    if a.paper in ("bmd", "hip"):
        import importlib

        res = importlib.import_module(f"osteonet.reproduce.{a.paper}").reproduce(a.out, preset=a.preset, seed=a.seed,
                                                                                 data=a.data, progress=not a.quiet)
        print(res["markdown"])
        print(f"wrote {a.out}/table.json and {a.out}/table.md")
        return 0
    if a.paper == "ovf":
        from .reproduce.ovf import reproduce as reproduce_ovf

        aggs = [v for v in a.variants.split(",") if v] if a.variants else None
        res = reproduce_ovf(a.out, preset=a.preset, seed=a.seed, aggregators=aggs, data=a.data, progress=not a.quiet)
        print(res["markdown"])
        print(f"wrote {a.out}/table.json, table.md, roc.png, *.pt and occlusion/ ({res['seconds']:.0f} s)")
        return 0
    raise ValueError(f"reproduce: unknown paper {a.paper!r}")


def _cmd_bench(a) -> int:
    from . import demo

    return demo.main(["--repeats", str(a.repeats), "--out", a.out])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="osteonet", description="Deep learning for osteoporosis imaging (osteonet).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="generate built-in data (DICOM/NIfTI/PNG, COCO JSON, manifest.csv)")
    s.add_argument("--kind", choices=["ct", "ovf", "hip", "dxa"], default="ct")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=30, help="patients (ct), scans (ovf) or images (hip, dxa)")
    s.add_argument("--slices", type=int, default=8, help="slices per patient (ct)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_synth)
    t = sub.add_parser("train", help="train on a folder with a manifest.csv")
    t.add_argument("--task", default="classification")
    t.add_argument("--data", required=True)
    t.add_argument("--model", default="resnet18")
    t.add_argument("--attention", default=None)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--image-size", type=int, default=224)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", default="adamw")
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=_cmd_train)
    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a manifest folder")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.set_defaults(fn=_cmd_evaluate)
    r = sub.add_parser("predict", help="predict a DICOM file or series folder, a NIfTI or an image")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--task", choices=["classification", "ovf"], default="classification")
    r.add_argument("input_path", nargs="?", default=None, metavar="INPUT")
    r.add_argument("--input", default=None)
    r.add_argument("--out", required=True)
    r.add_argument("--window-center", type=float, default=400.0)
    r.add_argument("--window-width", type=float, default=1800.0)
    r.set_defaults(fn=_cmd_predict)
    q = sub.add_parser("reproduce", help="reproduce a paper's tables on built-in data")
    q.add_argument("paper", choices=["all", *PAPERS], help="one paper, or all of them (OUT/<paper> and OUT/summary.md)")
    q.add_argument("--preset", choices=["quick", "paper"], default="quick")
    q.add_argument("--out", required=True)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--variants", default=None, help="comma-separated subset (ovf: aggregators)")
    q.add_argument("--data", default=None, help="an existing data folder (default: generate into OUT/data)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(fn=_cmd_reproduce)
    b = sub.add_parser("bench", help="model zoo speed and parity against torchvision")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--out", default="out/bench")
    b.set_defaults(fn=_cmd_bench)
    from .screen import cli as screen_cli
    screen_cli.add_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "input_path", None) is not None:
        if args.input is not None:
            build_parser().error("predict: give the input once (--input or INPUT), not both")
        args.input = args.input_path
    try:
        return int(args.fn(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"osteonet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
