"""Exports osteonet models to files that run without osteonet: ONNX (OpenCV's DNN, ONNX Runtime, TensorRT) and
TorchScript (``torch.jit.load`` in Python, ``torch::jit::load`` in C++ LibTorch). docs/deploy.md.

What is exported (``export(..., format=)``):

* a backbone (``resnet18`` ... ``dxa_cnn21``, ``ovf_resnet34``) with its classification head: image N x C x H x W
  -> logits N x K;
* a U-Net / U-Net++: image N x C x H x W -> logits N x K x H x W;
* a slice aggregator (``max``, ``mean``, ``vote``, ``lstm``) with its slice encoder (``ovf_resnet34``): slices
  N x T x C x H x W (every slice valid) -> scan probability N;
* a detector: ONNX and TorchScript of the tensor part (backbone + FPN + RPN head: a padded, normalised batch in,
  feature maps, objectness and box deltas per level out); TorchScript of the whole detector (images in, boxes,
  labels and scores out) with ``part="detector"`` (osteonet.detection_script).

Every file has a dynamic batch axis (tested at two batch sizes; the spatial size is the export's ``input_size``,
recorded in the metadata, and is what the files are checked at) and carries its metadata as JSON
(:data:`METADATA_NAME`: ONNX ``metadata_props``, TorchScript ``_extra_files``): classes, preprocessing, the
osteonet version, the model's name and options, inputs and outputs. Files are written atomically; an input
that cannot be exported raises one line before anything is written.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import _core
from ._errors import first_line, nearest, release_frames

__all__ = ["export", "read_metadata", "same_detections", "FORMATS", "METADATA_NAME", "EXPORT_VERSION", "DEFAULT_OPSET"]

FORMATS = ("onnx", "torchscript")
#: the metadata's key in ONNX ``metadata_props`` and its extra file's name in a TorchScript archive
METADATA_NAME = "osteonet.json"
EXPORT_VERSION = 1
#: ONNX opset: 11 is the newest OpenCV 4.6's importer reads for every model here (docs/deploy.md)
DEFAULT_OPSET = 11
#: the tolerance an export's own check holds the file to (largest |difference| / largest |eager output|)
CHECK_TOLERANCE = 1e-4


# ---- what is exported -------------------------------------------------------------------------------------
class _ScanModel(nn.Module):
    """Slice encoder + aggregator on a batch of scans of T slices each (N x T x C x H x W -> N probabilities):
    what osteonet's ScanPipeline computes after slice selection and resizing (rule aggregators take the slices'
    probabilities, the LSTM their 32-d features)."""

    def __init__(self, encoder: nn.Module, aggregator: nn.Module, pixel_mean: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.encoder, self.aggregator = encoder, aggregator
        #: the slice count written into the graph as a number (ONNX, for OpenCV, which cannot compute shapes);
        #: None: taken from the input (TorchScript, any count)
        self.fixed_slices: Optional[int] = None
        # The training slices' mean image (1 x 1 x H x W; the pipeline subtracts it before grey -> RGB).
        if pixel_mean is not None:
            pixel_mean = pixel_mean.detach().float()
            pixel_mean = pixel_mean.reshape(()) if pixel_mean.numel() == 1 else pixel_mean.reshape(
                1, 1, 1, *pixel_mean.shape[-2:])
        self.register_buffer("pixel_mean", pixel_mean)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        t = self.fixed_slices if self.fixed_slices is not None else slices.shape[1]
        if self.pixel_mean is not None:
            slices = slices - self.pixel_mean
        flat = slices.reshape(-1, *[int(v) for v in slices.shape[2:]])  # numbers: OpenCV computes no shapes
        if self.aggregator.takes_probabilities:
            steps = torch.sigmoid(self.encoder(flat)).reshape(-1, t, 1)
        else:
            steps = self.encoder.features(flat).reshape(-1, t, self.encoder.embed_dim)
        return self.aggregator(steps)


class _DetectorMaps(nn.Module):
    """A detector's tensor part: padded, normalised batch -> FPN (or body) maps, RPN objectness logits
    (N x A x h x w per level) and box deltas (N x 4A x h x w per level), through the C++ backbone (a runtime
    session's eager copy: BatchNorm folded into the convolutions) and the RPN head's own layers."""

    def __init__(self, detector: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        from .runtime import InferenceSession

        self.session = InferenceSession(detector, list(example), freeze=False, cuda_graph=False, warmup=0)
        self.head = detector.rpn.head

    def forward(self, batch: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        maps = list(self.session.backbone_maps(batch))
        objectness, deltas = [], []
        for m in maps:
            t = self.head.conv(m)
            objectness.append(self.head.cls_logits(t))
            deltas.append(self.head.bbox_pred(t))
        return tuple(maps + objectness + deltas)


class _Plan:
    """One export: the tensor module, an example input (batch 1), names, dynamic axes and the metadata."""

    def __init__(self, module: nn.Module, example: torch.Tensor, inputs: List[str], outputs: List[str],
                 meta: Dict[str, Any], time_axes: Sequence[str] = (), program: Any = None) -> None:
        self.module, self.example, self.inputs, self.outputs, self.meta = module, example, inputs, outputs, meta
        #: a scripted program written as it is (the whole detector), else the module is traced
        self.program = program
        self.dynamic_axes = {n: {0: "N"} for n in inputs + outputs}
        for n in time_axes:
            self.dynamic_axes[n][1] = "T"


def _where(source: Any) -> str:
    return f"export({source if isinstance(source, str) else type(source).__name__})"


def _size_pair(input_size: Any, default: int, where: str) -> Tuple[int, int]:
    if input_size is None:
        return default, default
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)):
        raise ValueError(f"{where}: input_size must be a positive int or (height, width), got input_size={input_size!r}")
    return int(input_size[0]), int(input_size[1])


def _model_record(model: nn.Module) -> Dict[str, Any]:
    return {"name": model.model_name, "family": model.family, "options": dict(model.config)}


def _default_size(name: str) -> int:
    return 299 if name == "inception_v3" else 224


def _plan_for_model(model: nn.Module, where: str, size: Optional[Tuple[int, int]], part: Optional[str],
                    classes: Any, preprocessing: Dict[str, Any], encoder: Optional[nn.Module] = None,
                    pixel_mean: Optional[torch.Tensor] = None, slices: int = 8) -> _Plan:
    """The plan for an osteonet model object (a backbone, U-Net, aggregator or detector)."""
    from .models import CppModule

    if not isinstance(model, CppModule):
        raise TypeError(f"{where}: expected an osteonet model (osteonet.create_model), a registered name or a "
                        f"checkpoint, got a {type(model).__name__}")
    family = model.family
    if encoder is not None and family != "aggregator":
        raise ValueError(f"{where}: encoder= applies to aggregators, not to the {family} {model.model_name}")
    if family == "attention":
        raise ValueError(f"{where}: {model.model_name} is an attention module, a part of a model: export a backbone "
                         f"built with attention={model.model_name!r}")
    if family == "aggregator":
        from .sequence import create_slice_encoder

        if part is not None:
            raise ValueError(f"{where}: part={part!r} applies to detectors and to runs of several models, not to "
                             f"{model.model_name}")
        return _plan_for_scan(encoder if encoder is not None else create_slice_encoder(), model, where, size, classes,
                              preprocessing, pixel_mean, slices)
    if family == "detector":
        return _plan_for_detector(model, where, size, part, classes, preprocessing)
    if part is not None:
        raise ValueError(f"{where}: part={part!r} applies to detectors and to checkpoints of several models, not to "
                         f"{model.model_name}")
    mods = model.python_modified()
    h, w = size or (_default_size(model.model_name),) * 2
    example = torch.rand(1, model.in_chans, h, w)
    record = _model_record(model)
    model.eval()
    if mods:  # a replaced head or layer is traced with the rest (what eager computes): its output decides the shape
        record["python_modified"] = mods
        with torch.no_grad():
            shape = list(model(example.clone()).shape[1:])
    else:
        shape = [model.num_classes, h, w] if family == "segmenter" else [model.num_classes]
    out = {"name": "logits", "shape": ["N"] + [int(v) for v in shape]}
    meta = {"model": record, "inputs": [{"name": "image", "shape": ["N", model.in_chans, h, w], "dtype": "float32"}],
            "outputs": [out], "classes": classes, "preprocessing": {"input_size": [h, w], **preprocessing}}
    return _Plan(model.eval(), example, ["image"], ["logits"], meta)


def _plan_for_scan(encoder: nn.Module, aggregator: nn.Module, where: str, size: Optional[Tuple[int, int]],
                   classes: Any, preprocessing: Dict[str, Any], pixel_mean: Optional[torch.Tensor],
                   slices: int) -> _Plan:
    from .sequence import Aggregator, SliceEncoder

    if not isinstance(encoder, SliceEncoder) or not isinstance(aggregator, Aggregator):
        raise TypeError(f"{where}: a scan model needs an ovf_resnet34 slice encoder and an aggregator, got "
                        f"{type(encoder).__name__} and {type(aggregator).__name__}")
    if not aggregator.takes_probabilities and aggregator.input_dim != encoder.embed_dim:
        raise ValueError(f"{where}: the {aggregator.model_name} aggregator takes {aggregator.input_dim}-d features, "
                         f"the encoder gives embed_dim={encoder.embed_dim}")
    h, w = size or (224, 224)
    t = slices
    example = torch.rand(1, t, encoder.in_chans, h, w)
    record = {"name": aggregator.model_name, "family": "aggregator", "options": dict(aggregator.config),
              "encoder": _model_record(encoder)}
    meta = {"model": record,
            "inputs": [{"name": "slices", "shape": ["N", "T", encoder.in_chans, h, w], "dtype": "float32"}],
            "outputs": [{"name": "probability", "shape": ["N"]}],
            "classes": classes, "preprocessing": {"input_size": [h, w], **preprocessing}}
    if pixel_mean is not None and pixel_mean.numel() != 1 and tuple(pixel_mean.shape[-2:]) != (h, w):
        raise ValueError(f"{where}: the training pixel mean is {tuple(pixel_mean.shape[-2:])}, got input_size={(h, w)}")
    scan = _ScanModel(encoder.eval(), aggregator.eval(), pixel_mean).eval()
    return _Plan(scan, example, ["slices"], ["probability"], meta,
                 time_axes=["slices"])


def _detector_options(model: nn.Module) -> Dict[str, Any]:
    from .models import model_info

    opts = dict(model_info(model.model_name)["options"])
    opts.update(model.config)
    opts.setdefault("backbone", "mobilenet_v3_large" if "mobilenet" in model.model_name else "resnet50")
    opts.setdefault("fpn", True)
    return opts


def _postprocessing(model: nn.Module, levels: int, strides: List[int]) -> Dict[str, Any]:
    """What turns the tensor part's outputs into detections, as the C++ detector (torchvision's Faster R-CNN)
    computes it: the numbers docs/deploy.md's recipe needs."""
    o = _detector_options(model)
    mobilenet = str(o["backbone"]).startswith("mobilenet")
    if mobilenet or not o["fpn"]:
        sizes = [[32.0, 64.0, 128.0, 256.0, 512.0]] * levels
    else:
        sizes = [[32.0 * 2 ** i] for i in range(levels)]
    return {
        "anchors": {"sizes": sizes, "aspect_ratios": [[0.5, 1.0, 2.0]] * levels, "strides": strides,
                    "order": "per location: aspect ratio major, size minor; locations row-major (torchvision)"},
        "rpn": {"box_coder_weights": [1.0, 1.0, 1.0, 1.0], "pre_nms_top_n": o["rpn_pre_nms_top_n_test"],
                "post_nms_top_n": o["rpn_post_nms_top_n_test"], "nms_thresh": o["rpn_nms_thresh"],
                "score_thresh": 0.05 if mobilenet and "rpn_score_thresh" not in model.config else o["rpn_score_thresh"],
                "min_box_size": 1e-3},
        "roi_heads": {"pooled_levels": min(4, levels - 1 if o["fpn"] else levels), "output_size": 7,
                      "sampling_ratio": 2, "canonical_scale": 224, "canonical_level": 4,
                      "box_coder_weights": [10.0, 10.0, 5.0, 5.0], "score_thresh": o["box_score_thresh"],
                      "nms_thresh": o["box_nms_thresh"], "detections_per_img": o["box_detections_per_img"],
                      "min_box_size": 1e-2},
        "transform": {"min_size": o["min_size"], "max_size": o["max_size"], "size_divisible": 32,
                      "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
    }


def _plan_for_detector(model: nn.Module, where: str, size: Optional[Tuple[int, int]], part: Optional[str],
                       classes: Any, preprocessing: Dict[str, Any]) -> _Plan:
    part = part or "maps"
    if part not in ("maps", "detector"):
        raise ValueError(f"{where}: a detector's parts are 'maps' (backbone + FPN + RPN head, ONNX and TorchScript) "
                         f"and 'detector' (the whole detector, TorchScript), got part={part!r}")
    mods = model.python_modified()
    if mods:
        raise ValueError(f"{where}: the detector has Python-side changes ({', '.join(mods)}); the export runs the C++ "
                         "model alone (a new box predictor: build the detector with num_classes)")
    o = _detector_options(model)
    if size is None:
        side = -(-int(o["min_size"] if isinstance(o["min_size"], int) else max(o["min_size"])) // 32) * 32
        size = (side, side)
    if size[0] % 32 or size[1] % 32:
        raise ValueError(f"{where}: a detector's padded batch has sides divisible by 32, got input_size={size}")
    h, w = size
    model.eval()
    c = int(o["in_chans"])
    example = torch.rand(1, c, h, w)
    module = _DetectorMaps(model, example).eval()
    with torch.no_grad():
        outs = module(example)
    levels = len(outs) // 3
    strides = [h // int(m.shape[-2]) for m in outs[:levels]]
    names = ([f"map_{i}" for i in range(levels)] + [f"objectness_{i}" for i in range(levels)]
             + [f"deltas_{i}" for i in range(levels)])
    meta = {"model": _model_record(model), "part": "maps",
            "inputs": [{"name": "batch", "shape": ["N", c, h, w], "dtype": "float32"}],
            "outputs": [{"name": n, "shape": ["N"] + [int(v) for v in t.shape[1:]]} for n, t in zip(names, outs)],
            "classes": classes,
            "preprocessing": {"input_size": [h, w],
                              "note": "the detector's transform: images in [0, 1] normalised with image_mean/std, "
                                      "resized (shorter side min_size, longer at most max_size), zero-padded at the "
                                      "bottom and right to input_size", **preprocessing},
            "postprocessing": _postprocessing(model, levels, strides)}
    if part == "maps":
        return _Plan(module, example, ["batch"], names, meta)
    return _plan_whole_detector(model, module, example, outs, meta)


class _ListOutputs(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: torch.Tensor) -> List[torch.Tensor]:
        return list(self.module(batch))


def _plan_whole_detector(model: nn.Module, maps: nn.Module, example: torch.Tensor, outs: Tuple[torch.Tensor, ...],
                         meta: Dict[str, Any]) -> _Plan:
    """The whole detector scripted (osteonet.detection_script): the traced tensor part and the post-processing on
    plain torch operators."""
    import copy

    from .detection_script import BoxHead, DetectorProgram

    post = meta["postprocessing"]
    levels = len(outs) // 3
    h, w = example.shape[-2:]
    anchors = _core.grid_anchors(post["anchors"]["sizes"], post["anchors"]["aspect_ratios"], [h, w], list(outs[:levels]))
    counts = [int(o.shape[1] * o.shape[2] * o.shape[3]) for o in outs[levels:2 * levels]]
    per_level = list(anchors.split(counts))
    box_head, predictor = model.roi_heads.box_head, model.roi_heads.box_predictor
    head = BoxHead(*[copy.deepcopy(m) for m in (box_head.fc6, box_head.fc7, predictor.cls_score, predictor.bbox_pred)])
    ctx = _quiet()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(_ListOutputs(maps), (example,), check_trace=False, strict=False)
        program = torch.jit.script(DetectorProgram(traced, per_level, (int(h), int(w)), head.eval(), post,
                                                   model.num_classes).eval())
    finally:
        ctx.__exit__(None, None, None)
    meta = {**meta, "part": "detector",
            "inputs": [{"name": "images", "type": "List[Tensor]", "shape": [int(example.shape[1]), "H", "W"],
                        "dtype": "float32", "note": f"values in [0, 1]; any H x W that the transform resizes and pads "
                                                    f"to {h} x {w} (every square image)"}],
            "outputs": [{"name": "detections", "type": "List[Dict[str, Tensor]]",
                         "keys": {"boxes": "K x 4, x1 y1 x2 y2 in the input image's pixels",
                                  "labels": "K, int64, 1..num_classes-1", "scores": "K"}}]}
    meta["preprocessing"] = {**meta["preprocessing"], "note": "inside the program: normalise, resize, pad"}
    return _Plan(model, example, [], [], meta, program=program)


# ---- checkpoints ------------------------------------------------------------------------------------------
def _grey(mean: float, std: float) -> Dict[str, Any]:
    return {"mean": [mean], "std": [std], "values": "grey in [0, 1] (DICOM/NIfTI: through the window), then "
                                                    "(x - mean) / std"}


def _mask_labels(card: Dict[str, Any]) -> Tuple[Optional[List[str]], Dict[str, Any]]:
    """A segmenter's classes in output-channel order and the mask value of each channel (the card's label table,
    {mask value: name}, in channel order)."""
    table = card.get("labels")
    if not isinstance(table, dict):
        return None, {}
    return list(table.values()), {"mask_values": [int(k) for k in table], "output": "channel k is the mask value "
                                                                               "mask_values[k] (argmax over channels)"}


def _from_checkpoint(path: str, part: Optional[str], where: str) -> Dict[str, Any]:
    """What a trained run (a run folder, its model.json or a checkpoint in it; or an OVF aggregator checkpoint)
    holds for export: {"model"[, "encoder"], "classes", "preprocessing", "size", "part", "source"}. Weights are
    read by osteonet's verified checkpoint reader (a corrupted file raises one ValueError naming it)."""
    from .tasks.card import CARD_NAME, find_card

    try:
        card, run_dir = find_card(path, where="checkpoint")
    except ValueError as e:
        if os.path.isfile(path) and f"no {CARD_NAME}" in str(e):
            return _from_ovf_checkpoint(path, part, where)
        raise
    from .tasks import get_task

    task = card["task"]
    bundle = get_task(task).load(card, run_dir)
    pre = dict(card.get("preprocessing", {}))
    source = {"checkpoint": os.path.abspath(path), "task": task}

    # a checkpoint file of the run names its own model (ovf's max.pt, hip's classifier_<region>.pt)
    own = None
    if os.path.isfile(path) and task != "detection":
        files = {os.path.normpath(os.path.join(run_dir, v)): k for k, v in card.get("checkpoints", {}).items()}
        own = files.get(os.path.abspath(path))

    def pick(parts: Dict[str, Any], default: Optional[str]) -> str:
        if part is not None and own is not None and part != own:
            raise ValueError(f"{where}: {path} holds the run's {own!r}, got part={part!r}")
        chosen = part if part is not None else own if own is not None else default
        if chosen not in parts:
            got = (f"got part={part!r}" if part is not None else f"{path} is its {own!r}, which is not exported alone"
                   if own is not None else "give part= (--part)")
            raise ValueError(f"{where}: the {task} run holds the models {sorted(parts)}; {got}")
        return chosen

    if task == "classification":
        pick({"classifier": 0}, "classifier")
        return {"model": bundle["model"], "classes": list(card["classes"]), "size": pre["image_size"],
                "preprocessing": {**pre, **_grey(0.5, 0.25)}, "source": source}
    if task == "segmentation":
        pick({"segmenter": 0}, "segmenter")
        classes, masks = _mask_labels(card)
        return {"model": bundle["model"], "classes": classes, "size": pre["image_size"],
                "preprocessing": {**pre, **_grey(0.5, 0.25), **masks}, "source": source}
    if task == "detection":
        chosen = part or "maps"
        return {"model": bundle["model"], "classes": ["background"] + list(card["classes"]), "part": chosen,
                "preprocessing": pre, "source": source}
    if task == "ovf":
        name = pick(bundle["models"], bundle["default"])
        enc, agg = bundle["models"][name]
        return {"model": agg, "encoder": enc, "pixel_mean": bundle["pixel_mean"], "classes": ["no fracture", "fracture"],
                "size": pre["image_size"], "source": {**source, "part": name},
                "preprocessing": {**pre, "values": "sagittal slices in [0, 1] through the window, resized to image_size "
                                                   "and repeated to 3 channels; the training pixel mean is subtracted "
                                                   "inside the exported model"}}
    if task in ("bmd", "hip"):
        models = {"segmenter": bundle["segmenter"]}
        if task == "bmd":
            models["regressor"] = bundle["regressor"]
        else:
            models.update({f"classifier_{r}": m for r, m in bundle["classifiers"].items()})
        name = pick(models, None)
        if name == "segmenter":
            classes, masks = _mask_labels(card)
            return {"model": models[name], "classes": classes, "size": pre["seg_size"],
                    "preprocessing": {**pre, **_grey(0.5, 0.25), **masks}, "source": {**source, "part": name}}
        extra = ({"target_scaler": pre["target_scaler"], "output": "normalised BMD: target_scaler inverts it"}
                 if task == "bmd" else {})
        from .tasks.hip import WHO

        return {"model": models[name], "classes": None if task == "bmd" else list(WHO), "size": pre["crop_size"],
                "preprocessing": {**pre, **_grey(0.25, 0.25), **extra}, "source": {**source, "part": name}}
    raise ValueError(f"{where}: the task {task!r} of {path} has no export recipe")


def _from_ovf_checkpoint(path: str, part: Optional[str], where: str) -> Dict[str, Any]:
    from .sequence import load_ovf_checkpoint

    try:
        enc, agg, card = load_ovf_checkpoint(path)
    except ValueError as e:
        if "not an OVF aggregator checkpoint" not in str(e):
            raise
        raise ValueError(f"{where}: {path} is neither a run of `osteonet train` (no model.json beside it) nor an OVF "
                         "aggregator checkpoint; for other weights give the model name and weights=FILE") from None
    if part is not None and part != card["aggregator"]:
        raise ValueError(f"{where}: {path} holds the {card['aggregator']!r} aggregator, got part={part!r}")
    pre = {k: card[k] for k in ("image_size", "center_fraction", "min_slices", "window_center", "window_width",
                                "threshold")}
    return {"model": agg, "encoder": enc, "pixel_mean": card["pixel_mean"], "classes": ["no fracture", "fracture"],
            "size": card["image_size"], "source": {"checkpoint": os.path.abspath(path), "task": "ovf"},
            "preprocessing": {**pre, "values": "sagittal slices in [0, 1] through the window, resized to image_size "
                                               "and repeated to 3 channels; the training pixel mean is subtracted "
                                               "inside the exported model"}}


# ---- writing and checking ---------------------------------------------------------------------------------
def _quiet() -> Any:
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")  # tracer and exporter notes about the C++ forward; the checks below decide
    return ctx


def _torchscript_bytes(plan: _Plan, meta_json: str) -> bytes:
    if plan.program is not None:
        buf = io.BytesIO()
        torch.jit.save(plan.program, buf, _extra_files={METADATA_NAME: meta_json})
        return buf.getvalue()
    ctx = _quiet()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(plan.module, (plan.example,), check_trace=False)
    except Exception as e:  # noqa: BLE001  (a model the tracer cannot follow: one line)
        release_frames(e)
        raise RuntimeError(f"cannot trace {plan.meta['model']['name']}: {first_line(e)}") from None
    finally:
        ctx.__exit__(None, None, None)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={METADATA_NAME: meta_json})
    return buf.getvalue()


def _onnx_bytes(plan: _Plan, meta_json: str, opset: int) -> bytes:
    try:
        import onnx
    except ImportError:
        raise RuntimeError("ONNX export needs the onnx package to store the metadata and check the graph (Debian: "
                           "python3-onnx)") from None
    buf = io.BytesIO()
    ctx = _quiet()
    try:
        with torch.no_grad():
            torch.onnx.export(plan.module, (plan.example,), buf, input_names=plan.inputs, output_names=plan.outputs,
                              dynamic_axes=plan.dynamic_axes, opset_version=opset, do_constant_folding=True)
    except Exception as e:  # noqa: BLE001  (an operator ONNX lacks: one line)
        release_frames(e)  # its frames hold the exporter's Graph: kept, they break the next export
        raise RuntimeError(f"cannot export {plan.meta['model']['name']} to ONNX opset {opset}: "
                           f"{first_line(e)}") from None
    finally:
        ctx.__exit__(None, None, None)
    graph = onnx.load_from_string(buf.getvalue())
    _inline_shared_initializers(graph)
    _clip_as_relus(graph)
    _pool_attributes_2d(graph)
    _lstm_default_states(graph)
    _check_no_constant_batch(graph, plan)
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_NAME, meta_json
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


def _inline_shared_initializers(graph: Any) -> None:
    """PyTorch's exporter stores equal weights once and copies them with Identity nodes (a fresh model's BatchNorm
    ones and zeros); OpenCV 4.6's importer cannot read an Identity of a weight. The consumers read the weight
    itself instead: the same numbers, no Identity left."""
    initializers = {i.name for i in graph.graph.initializer}
    graph_outputs = {o.name for o in graph.graph.output}
    alias: Dict[str, str] = {}
    keep = []
    for node in graph.graph.node:
        if (node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in graph_outputs):
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.graph.node[:]
    graph.graph.node.extend(keep)


def _clip_as_relus(graph: Any) -> None:
    """Clip(x, lo, hi) with constant bounds (ReLU6 in MobileNets) as lo + relu(x - lo) - relu(x - hi): OpenCV 4.6's
    importer reads only opset 6's Clip (bounds as attributes), which opset 11 no longer allows. Equal up to
    float rounding (one ulp of x where x > hi)."""
    from onnx import helper, numpy_helper

    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t")}
    consts.update({i.name: numpy_helper.to_array(i) for i in graph.graph.initializer})
    nodes = []
    for k, n in enumerate(graph.graph.node):
        if not (n.op_type == "Clip" and len(n.input) == 3 and n.input[1] in consts and n.input[2] in consts):
            nodes.append(n)
            continue
        x, o = n.input[0], n.output[0]
        lo, hi = f"{o}__lo", f"{o}__hi"
        graph.graph.initializer.append(numpy_helper.from_array(consts[n.input[1]].astype("float32").reshape(1), lo))
        graph.graph.initializer.append(numpy_helper.from_array(consts[n.input[2]].astype("float32").reshape(1), hi))
        nodes += [helper.make_node("Sub", [x, lo], [o + "__a0"], name=f"{n.name}__a0"),
                  helper.make_node("Relu", [o + "__a0"], [o + "__a"], name=f"{n.name}__a"),
                  helper.make_node("Sub", [x, hi], [o + "__b0"], name=f"{n.name}__b0"),
                  helper.make_node("Relu", [o + "__b0"], [o + "__b"], name=f"{n.name}__b"),
                  helper.make_node("Sub", [o + "__a", o + "__b"], [o + "__d"], name=f"{n.name}__d"),
                  helper.make_node("Add", [o + "__d", lo], [o], name=f"{n.name}__add")]
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)


def _pool_attributes_2d(graph: Any) -> None:
    """A pooling the C++ forward calls with one number for both sides (``avg_pool2d(x, 3, 1)``, Inception)
    reaches ONNX with one-element kernel_shape/strides/pads, a 1-D pooling on a 4-D tensor (OpenCV then
    computes other shapes than PyTorch): each number is repeated for both spatial axes."""
    from onnx import helper, numpy_helper

    producer = {o: n for n in graph.graph.node for o in n.output}
    for n in graph.graph.node:
        if n.op_type not in ("AveragePool", "MaxPool"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if len(attrs.get("kernel_shape", [])) != 1:
            continue
        pad = producer.get(n.input[0])
        if pad is not None and pad.op_type == "Pad" and pad.input[1] in producer:
            # its explicit padding came as [N, C, W begin, N, C, W end] (3 axes): both spatial axes padded
            const = producer[pad.input[1]]
            if const.op_type == "Constant" and const.attribute and const.attribute[0].HasField("t"):
                v = numpy_helper.to_array(const.attribute[0].t).reshape(-1)
                if v.size == 6:
                    fixed = [int(v[0]), int(v[1]), int(v[2]), int(v[2]), int(v[3]), int(v[4]), int(v[5]), int(v[5])]
                    const.attribute[0].t.CopyFrom(numpy_helper.from_array(np.asarray(fixed, dtype=v.dtype),
                                                                          const.attribute[0].t.name))
        for a in n.attribute:
            if a.name in ("kernel_shape", "strides", "dilations") and len(a.ints) == 1:
                a.ints.append(a.ints[0])
            elif a.name == "pads" and len(a.ints) == 2:  # [begin, end] -> [top, left, bottom, right]
                begin, end = a.ints
                del a.ints[:]
                a.ints.extend([begin, begin, end, end])


def _lstm_default_states(graph: Any) -> None:
    """The LSTM aggregator's zero initial states are built in shape after the input (so that the batch stays
    free): ConstantOfShape(0) then Expand/Unsqueeze. OpenCV 4.6's importer reads initial states only as
    constants. An LSTM operator without them starts from zeros (ONNX's default), so such provably zero states
    are dropped from the LSTM's inputs, with the nodes that only computed them: the same numbers."""
    from onnx import helper, numpy_helper

    producer = {o: n for n in graph.graph.node for o in n.output}
    initializers = {i.name: i for i in graph.graph.initializer}
    keeps_zero = ("Expand", "Unsqueeze", "Squeeze", "Reshape", "Slice", "Gather", "Transpose", "Identity")

    def is_zero(name: str) -> bool:
        if name in initializers:
            return not numpy_helper.to_array(initializers[name]).any()
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type in keeps_zero:  # each of these moves or repeats its first input's elements
            return is_zero(node.input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "ConstantOfShape":  # value defaults to a float 0
            return "value" not in attrs or not numpy_helper.to_array(attrs["value"]).any()
        if node.op_type == "Constant" and "value" in attrs:
            return not numpy_helper.to_array(attrs["value"]).any()
        return False

    changed = False
    for node in graph.graph.node:
        if node.op_type == "LSTM":
            for i in (5, 6):  # initial_h, initial_c
                if len(node.input) > i and node.input[i] and is_zero(node.input[i]):
                    node.input[i] = ""
                    changed = True
    if changed:
        _drop_unused_nodes(graph)


def _drop_unused_nodes(graph: Any) -> None:
    """Removes nodes none of whose outputs is read (by a node or as a graph output), until none is left."""
    outputs = {o.name for o in graph.graph.output}
    while True:
        read = {i for n in graph.graph.node for i in n.input} | outputs
        keep = [n for n in graph.graph.node if any(o in read for o in n.output)]
        if len(keep) == len(graph.graph.node):
            return
        del graph.graph.node[:]
        graph.graph.node.extend(keep)


def _check_no_constant_batch(graph: Any, plan: _Plan) -> None:
    """Refuses a graph with a Reshape to a constant shape holding the example's batch (1): it would give
    wrong results or fail at another batch size."""
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for node in graph.graph.node:
        if node.op_type == "Reshape" and node.input[1] in constants:
            shape = constants[node.input[1]].reshape(-1)
            if shape.size and int(shape[0]) not in (-1, 0) and len(shape) > 1 and int(shape[0]) == 1:
                raise RuntimeError(f"cannot export {plan.meta['model']['name']} with a dynamic batch axis: the reshape "
                                   f"{node.name} holds the example's batch (shape {shape.tolist()})")


def same_detections(ref: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor], min_iou: float = 0.99,
                    score_tolerance: float = 1e-3) -> bool:
    """One image's detections equal up to float rounding: as many, and each of ``ref`` has one in ``got`` with the
    same label, IoU > ``min_iou`` and score within ``score_tolerance`` (the detection parity tests' criterion).
    Rounding (the traced part folds BatchNorm into the convolutions) can tip a near-tie of top-k or NMS to a
    neighbouring box or reorder equal scores; an exact comparison would call that a difference."""
    from .detection_script import box_iou

    if ref["labels"].shape != got["labels"].shape:
        return False
    if ref["labels"].numel() == 0:
        return True
    iou = box_iou(ref["boxes"], got["boxes"])
    score_close = (ref["scores"][:, None] - got["scores"][None, :]).abs() <= score_tolerance
    same_label = ref["labels"][:, None] == got["labels"][None, :]
    return bool(((iou > min_iou) & score_close & same_label).any(1).all())


def _check_detector(program: Any, plan: _Plan) -> None:
    """The whole-detector program against the detector on two images of the export size. One call: from its second
    call on torch 2.x's CPU fuser compiles the program, for minutes or more with some bodies (docs/deploy.md)."""
    images = [plan.example[0], plan.example[0].flip(-1)]
    with torch.no_grad():
        ref, got = plan.module(images), program(images)
    if not all(same_detections(r, g) for r, g in zip(ref, got)):
        raise RuntimeError(f"cannot export {plan.meta['model']['name']} as a whole detector: the scripted program's "
                           "detections differ from the detector's")


def _check_torchscript(data: bytes, plan: _Plan) -> None:
    """The saved program, loaded back, against the eager model at batch 1 and 2 (a trace that kept the
    example's batch size fails here, not in the user's service)."""
    program = torch.jit.load(io.BytesIO(data))
    if plan.program is not None:
        return _check_detector(program, plan)
    for n in (1, 2):
        x = torch.cat([plan.example] * n) if n > 1 else plan.example
        if n > 1:
            x = x + 0.01 * torch.arange(n, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        with torch.no_grad():
            ref = plan.module(x)
            try:
                got = program(x)
            except RuntimeError as e:
                raise RuntimeError(f"cannot export {plan.meta['model']['name']} to TorchScript: the traced program fails "
                                   f"at batch {n} ({str(e).strip().splitlines()[-1][:200]})") from None
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = got if isinstance(got, tuple) else (got,)
        for r, g in zip(ref, got):
            scale = max(1.0, float(r.abs().max())) if r.numel() else 1.0
            if r.shape != g.shape or (r.numel() and float((r - g).abs().max()) > CHECK_TOLERANCE * scale):
                raise RuntimeError(f"cannot export {plan.meta['model']['name']} to TorchScript: the traced program "
                                   f"differs from the model at batch {n}")


def _writable(path: str, where: str) -> str:
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"{where}: the output must be a file path, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: cannot write {path} (the folder {probe} is not writable)")
    return path


# ---- the entry points --------------------------------------------------------------------------------------
def export(model: Union[str, os.PathLike, nn.Module], path: Union[str, os.PathLike], format: str = "onnx", *,
           options: Optional[Dict[str, Any]] = None, weights: Optional[str] = None, part: Optional[str] = None,
           encoder: Optional[nn.Module] = None,
           input_size: Any = None, classes: Any = None, preprocessing: Optional[Dict[str, Any]] = None,
           slices: int = 8, opset: int = DEFAULT_OPSET, check: bool = True) -> Dict[str, Any]:
    """Writes ``model`` to ``path`` as ONNX or TorchScript (atomically) and returns the metadata stored in it.

    Args:
        model: an osteonet model object (``osteonet.create_model``), a registered name (built with ``options``),
            or a trained run (a run folder of ``osteonet train``, its model.json or a checkpoint in it; an OVF
            aggregator checkpoint): weights, classes and preprocessing come from its model card.
        path: the file to write.
        format: ``"onnx"`` or ``"torchscript"``.
        options: model options for a registered name (as ``osteonet.create_model(name, **options)``).
        weights: an osteonet checkpoint to load into a model given by name (verified, every tensor must fit).
        part: detectors: ``"maps"`` (backbone + FPN + RPN head; the default); runs of several models (bmd:
            ``segmenter``/``regressor``; hip: ``segmenter``/``classifier_<region>``; ovf: an aggregator name).
        encoder: aggregators: the slice encoder (``ovf_resnet34``) exported with it (default: a new one; a trained
            run brings its own).
        input_size: the input's height and width (an int for a square; default: the run's size, 224, 299 for
            inception_v3, a detector's ``min_size`` rounded up to 32). Only the batch axis (and a TorchScript
            scan's slice axis) is declared dynamic.
        classes, preprocessing: stored in the metadata (a run's card supplies them otherwise).
        slices: scan models: the slices per scan of the example; an ONNX file takes exactly this many (OpenCV
            computes no shapes), a TorchScript file any number.
        opset: the ONNX opset (default 11, what OpenCV 4.6 reads).
        check: TorchScript: load the file back and compare it with the model at batch 1 and 2 before writing.

    Raises ValueError (unknown model or format, unwritable path, a bad option), TypeError (not a model) or
    RuntimeError (a model the exporter cannot follow), each one line; nothing is written then.
    """
    where = _where(model if isinstance(model, (str, os.PathLike)) else model)
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"{where}: format must be one of {', '.join(FORMATS)}, got format={format!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 9 <= opset <= 17:
        raise ValueError(f"{where}: opset must be an int in 9..17, got opset={opset!r}")
    if isinstance(slices, bool) or not isinstance(slices, int) or slices < 1:
        raise ValueError(f"{where}: slices must be a positive int, got slices={slices!r}")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"{where}: options must be a dict, got {type(options).__name__}")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise TypeError(f"{where}: preprocessing must be a dict, got {type(preprocessing).__name__}")
    if part is not None and not isinstance(part, str):
        raise TypeError(f"{where}: part must be a str, got {type(part).__name__}")
    if format == "onnx" and part == "detector":
        raise ValueError(f"{where}: the whole detector exports to TorchScript only (NMS and RoIAlign loop over the "
                         "data); ONNX: part='maps' (backbone + FPN + RPN head)")
    path = _writable(path, where)
    size = _size_pair(input_size, 0, where) if input_size is not None else None
    found: Dict[str, Any] = {"preprocessing": {}, "source": None}
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str):
        names = _list(None)
        if model in names:
            from .models import create_model

            model = create_model(model, **(options or {}))
        elif os.path.exists(model):
            if options or weights:
                raise ValueError(f"{where}: options and weights apply to a model given by name; a run's model card "
                                 "names its model and weights")
            found = _from_checkpoint(model, part, where)
            # the run's part is chosen there: only a detector's (maps or detector) goes on
            model, part = found.pop("model"), found.pop("part", None)
        else:
            raise ValueError(f"{where}: not a registered model nor an existing checkpoint; did you mean "
                             f"{nearest(model, names)!r}? (osteonet.list_models(None))")
    elif options:
        raise ValueError(f"{where}: options apply to a model given by name; this model is already built")
    if weights is not None:
        from .train import load_checkpoint

        load_checkpoint(os.fspath(weights), model, restore_rng=False)
        found["source"] = {"checkpoint": os.path.abspath(os.fspath(weights))}
    if encoder is not None:
        if found.get("encoder") is not None:
            raise ValueError(f"{where}: a trained run brings its own encoder; encoder= applies to an aggregator object")
        found["encoder"] = encoder
    if size is None and found.get("size"):
        size = (int(found["size"]), int(found["size"]))
    pre = {**found.get("preprocessing", {}), **(preprocessing or {})}
    # the export runs the models in eval mode; the caller's train/eval modes come back afterwards
    modes = [(m, m.training) for m in (model, found.get("encoder")) if isinstance(m, nn.Module)]
    try:
        return _export_plan(model, path, format, where, size, part, classes if classes is not None else
                            found.get("classes"), pre, found, slices, opset, check)
    finally:
        for m, mode in modes:
            m.train(mode)


def _export_plan(model: nn.Module, path: str, format: str, where: str, size: Optional[Tuple[int, int]],
                 part: Optional[str], classes: Any, pre: Dict[str, Any], found: Dict[str, Any], slices: int,
                 opset: int, check: bool) -> Dict[str, Any]:
    plan = _plan_for_model(model, where, size, part, classes, pre, encoder=found.get("encoder"),
                           pixel_mean=found.get("pixel_mean"), slices=slices)
    if format == "onnx" and isinstance(plan.module, _ScanModel):
        # OpenCV computes no shapes: the slice count is a number in the ONNX graph (TorchScript takes any)
        plan.module.fixed_slices = int(plan.example.shape[1])
        plan.dynamic_axes["slices"].pop(1)
        plan.meta["inputs"][0]["shape"][1] = plan.module.fixed_slices
    from . import __version__

    meta = {"osteonet_export": EXPORT_VERSION, "osteonet_version": __version__, "torch_version": torch.__version__,
            "format": format, **({"opset": opset} if format == "onnx" else {}), **plan.meta,
            "dynamic_axes": {n: {str(k): v for k, v in ax.items()} for n, ax in plan.dynamic_axes.items()},
            "source": found.get("source")}
    meta_json = json.dumps(meta, default=_jsonable)
    if format == "onnx":
        data = _onnx_bytes(plan, meta_json, opset)
    else:
        data = _torchscript_bytes(plan, meta_json)
        if check:
            _check_torchscript(data, plan)
    from .io import write_bytes

    try:
        write_bytes(path, data)
    except OSError as e:
        raise ValueError(f"{where}: cannot write {path} ({e.strerror or type(e).__name__})") from None
    return json.loads(meta_json)


def _list(family: Optional[str]) -> List[str]:
    from .models import list_models

    return list_models(family)


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (tuple, set)):
        return list(v)
    return repr(v)


def read_metadata(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The metadata an exported file carries (either format), read without running it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"read_metadata: no such file {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            hits = [n for n in z.namelist() if n.endswith("/extra/" + METADATA_NAME)]
            if not hits:
                raise ValueError(f"read_metadata: {path} is a TorchScript archive without {METADATA_NAME} (not exported "
                                 "by osteonet)")
            return json.loads(z.read(hits[0]).decode())
    try:
        import onnx
    except ImportError:
        raise RuntimeError("read_metadata: reading an ONNX file needs the onnx package (Debian: python3-onnx)") from None
    try:
        graph = onnx.load(path)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"read_metadata: {path} is neither a TorchScript archive nor an ONNX model "
                         f"({type(e).__name__})") from None
    for p in graph.metadata_props:
        if p.key == METADATA_NAME:
            return json.loads(p.value)
    raise ValueError(f"read_metadata: {path} carries no {METADATA_NAME} (not exported by osteonet)")
