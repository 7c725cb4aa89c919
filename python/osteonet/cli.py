"""The `osteonet` command line. Each command group registers its own sub-command (``COMMANDS``; adding one
is one line there): synth; train, evaluate, predict and check-data (osteonet.tasks); reproduce
(osteonet.reproduce); bench; screen (osteonet.screen); weights (osteonet.weights); verify (checkpoint checksums);
export (ONNX / TorchScript, osteonet.export). Every run writes into its --out folder; long work shows progress; an
error is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .reproduce.cli import register as register_reproduce
from .tasks.cli import register_check_data, register_evaluate, register_predict, register_train
from .weights.cli import register as register_weights

__all__ = ["main", "build_parser", "COMMANDS"]


def _cmd_synth(a) -> int:
    from . import synth

    if a.example is not None:
        print(json.dumps(synth.write_example(a.example, a.out, seed=a.seed)))
        return 0
    gen = {"ct": lambda: synth.generate_ct_dataset(a.out, a.n, a.slices, seed=a.seed),
           "ovf": lambda: synth.generate_ovf_dataset(a.out, a.n, seed=a.seed),
           "hip": lambda: synth.generate_hip_dataset(a.out, a.n, seed=a.seed),
           "dxa": lambda: synth.generate_dxa_dataset(a.out, a.n, seed=a.seed)}[a.kind]
    print(json.dumps(gen()))
    return 0


def register_synth(sub) -> None:
    from .tasks import TASK_NAMES

    s = sub.add_parser("synth", help="generate built-in data (DICOM/NIfTI/PNG, COCO JSON, manifest.csv)")
    s.add_argument("--kind", choices=["ct", "ovf", "hip", "dxa"], default="ct")
    s.add_argument("--example", choices=TASK_NAMES, default=None,
                   help="a small example folder in this task's documented layout (instead of --kind)")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=30, help="patients (ct), scans (ovf) or images (hip, dxa)")
    s.add_argument("--slices", type=int, default=8, help="slices per patient (ct)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_synth)


def _cmd_bench(a) -> int:
    from . import demo

    return demo.main(["--repeats", str(a.repeats), "--out", a.out])


def register_bench(sub) -> None:
    b = sub.add_parser("bench", help="model zoo speed and parity against torchvision")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--out", default="out/bench")
    b.set_defaults(fn=_cmd_bench)


def register_screen(sub) -> None:
    from .screen import cli as screen_cli

    screen_cli.add_parser(sub)


def _cmd_verify(a) -> int:
    from .train import verify_file

    status = 0
    for path in a.files:
        r = verify_file(path)  # a corrupted file raises ValueError: one line, exit status 2
        if r["verified"]:
            print(f"{r['path']}: OK, {r['tensors']} tensors match their SHA-256 ({r['what']})")
        else:
            print(f"{r['path']}: UNVERIFIED, {r['tensors']} tensors, {r['what']}: nothing to check them against")
            status = 1
    return status


def register_verify(sub) -> None:
    v = sub.add_parser("verify", help="check weight files against their SHA-256 checksums (exit 0 verified, "
                                      "1 unverifiable, 2 corrupted)")
    v.add_argument("files", nargs="+", metavar="FILE", help="osteonet checkpoints or state dicts (.pt)")
    v.set_defaults(fn=_cmd_verify)


def _model_option(item: str) -> "tuple[str, object]":
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(raw)  # numbers, true/false, null, lists
    except json.JSONDecodeError:
        return key, raw  # a name


def _input_size(raw: str) -> "int | tuple[int, int]":
    try:
        parts = [int(v) for v in raw.lower().split("x")]
    except ValueError:
        raise ValueError(f"--input-size takes N or HxW, got {raw!r}") from None
    return parts[0] if len(parts) == 1 else tuple(parts)  # type: ignore[return-value]


def _cmd_export(a) -> int:
    from .export import export

    options = dict(_model_option(item) for item in a.set or []) or None
    classes = [c.strip() for c in a.classes.split(",")] if a.classes else None
    meta = export(a.model, a.out, a.format, options=options, weights=a.weights, part=a.part,
                  input_size=_input_size(a.input_size) if a.input_size else None, classes=classes,
                  slices=a.slices, opset=a.opset)
    print(json.dumps(meta))
    return 0


def register_export(sub) -> None:
    e = sub.add_parser("export", help="write a model as ONNX or TorchScript that runs without osteonet "
                                      "(docs/deploy.md)")
    e.add_argument("model", metavar="MODEL_OR_CHECKPOINT",
                   help="a registered model name, or a trained run (its folder, model.json or a checkpoint in it)")
    e.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    e.add_argument("--out", required=True, help="the file to write (atomically)")
    e.add_argument("--part", default=None, help="detectors: maps (backbone + FPN + RPN head); runs of several "
                                                "models: segmenter, regressor, classifier_<region>, an aggregator")
    e.add_argument("--input-size", default=None, metavar="N|HxW", help="input height and width (default: the "
                                                                       "run's, 224, 299 for inception_v3)")
    e.add_argument("--slices", type=int, default=8, help="scan models: slices per scan (fixed in ONNX)")
    e.add_argument("--opset", type=int, default=11, help="ONNX opset (11: what OpenCV 4.6 reads)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="a model option for a model name "
                                                                      "(repeatable, e.g. num_classes=3)")
    e.add_argument("--weights", default=None, help="an osteonet checkpoint to load into a model given by name")
    e.add_argument("--classes", default=None, help="class names stored in the metadata, comma-separated")
    e.set_defaults(fn=_cmd_export)


#: every sub-command, each registering its own parser
COMMANDS = (register_synth, register_train, register_evaluate, register_predict, register_check_data,
            register_reproduce, register_bench, register_screen, register_weights,
            register_verify, register_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="osteonet", description="Deep learning for osteoporosis imaging (osteonet).")
    sub = p.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        msg = " ".join(str(e).split("\n")[0].split()) or type(e).__name__
        print(f"osteonet {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
