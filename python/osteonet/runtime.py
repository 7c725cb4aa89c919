"""Inference runtime: :class:`InferenceSession`, a prepared callable copy of an osteonet model.

The session copies the model's current weights in C++ (the model itself is never changed), folds
BatchNorm into the convolutions, and on the CPU freezes the copy per input shape with TorchScript
(oneDNN prepacked convolutions); bfloat16 runs channels-last and is checked against float32. On a
CUDA build of LibTorch with a GPU, ``device="cuda"`` replays one CUDA graph per input shape.
See docs/runtime.md.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional, Tuple

import torch

from . import _core
from .models import OsteoModel

__all__ = ["InferenceSession", "built_with_cuda", "cpu_has_bf16"]


def built_with_cuda() -> bool:
    """True when osteonet's extension was compiled with the CUDA-graph code (LibTorch with CUDA)."""
    return bool(_core.runtime_built_with_cuda())


def cpu_has_bf16() -> bool:
    """True when the CPU advertises AMX-BF16 or AVX512-BF16."""
    return bool(_core.cpu_has_bf16())


class InferenceSession:
    """A prepared, thread-safe callable for inference with an osteonet backbone.

    Args:
        model: an osteonet model from :func:`osteonet.create_model` (its current weights are copied).
        example_input: an N x C x H x W float tensor; its shape gets the first prepared program and
            is used for warm-up and the accuracy check.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 where the CPU has AMX/AVX512-BF16
            or on CUDA, when the accuracy check passes).
        device: ``"cpu"`` or ``"cuda"``.
        cuda_graph: CUDA graphs per input shape (CUDA builds only).
        freeze: CPU: TorchScript-freeze the folded copy per shape (else run it eagerly).
        num_threads: ``torch.set_num_threads`` at construction when given (process-wide).
        warmup: runs of each new shape's program before use.
        max_shapes: shapes with their own program; later shapes run the folded copy eagerly.
        features: run the model without its classifier and return its features (what the model
            returns with ``num_classes=0``: pooled features; ``ovf_resnet34``: the 32-d slice
            embedding that seed 002's aggregators take, so a scan runs as session + aggregator).

    Calling the session returns float32 outputs. ``accuracy`` is max |softmax(session) -
    softmax(eager float32)| on the example input (with ``features=True``: max |difference| relative to
    the largest feature value); a bfloat16 session above 1e-2 falls back to float32 (warning).

    Raises:
        TypeError: ``model`` is not an osteonet backbone model, or an input is not a float tensor.
        ValueError: bad dtype/device names, ``device="cuda"`` without CUDA, wrong input shapes.
    """

    def __init__(self, model: Any, example_input: torch.Tensor, dtype: str = "float32", device: str = "cpu",
                 cuda_graph: bool = True, freeze: bool = True, num_threads: Optional[int] = None,
                 warmup: int = 2, max_shapes: int = 8, features: bool = False) -> None:
        if not isinstance(model, OsteoModel):
            raise TypeError("InferenceSession: model must be an osteonet backbone model (osteonet.create_model), "
                            f"got {type(model).__name__}")
        if not isinstance(example_input, torch.Tensor):
            raise TypeError(f"InferenceSession: example_input must be a torch.Tensor, got {type(example_input).__name__}")
        for name, value in (("dtype", dtype), ("device", device)):
            if not isinstance(value, str):
                raise TypeError(f"InferenceSession: {name} must be a str, got {type(value).__name__}")
        for name, value in (("cuda_graph", cuda_graph), ("freeze", freeze), ("features", features)):
            if not isinstance(value, bool):
                raise TypeError(f"InferenceSession: {name} must be a bool, got {type(value).__name__}")
        for name, value in (("num_threads", 0 if num_threads is None else num_threads), ("warmup", warmup),
                            ("max_shapes", max_shapes)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"InferenceSession: {name} must be an int, got {type(value).__name__}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"InferenceSession: device={device!r} needs a CUDA-enabled PyTorch and a visible GPU; "
                             "torch.cuda.is_available() is False")
        self.model_name = model.model_name
        config = dict(model.config)
        num_classes = config.pop("num_classes", model.num_classes)
        attention = config.pop("attention", None) or "none"
        in_chans = config.pop("in_chans", model.in_chans)
        self._session = _core.InferenceSession(model._cpp, num_classes, attention, in_chans, config,
                                               example_input.detach(), dtype, device, cuda_graph, freeze,
                                               num_threads or 0, warmup, max_shapes, features)
        if dtype == "bfloat16" and self._session.dtype != "bfloat16":
            warnings.warn(f"InferenceSession({self.model_name}): bfloat16 probabilities differed from float32 by "
                          "more than 1e-2 on the example input; the session runs in float32", RuntimeWarning)

    @property
    def features(self) -> bool:
        """True when the session returns features (the model without its classifier)."""
        return self._session.features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"InferenceSession({self.model_name}): expected a torch.Tensor, got {type(x).__name__}")
        return self._session(x.detach())

    @property
    def accuracy(self) -> float:
        """max |softmax(session) - softmax(eager float32)| measured on the example input."""
        return self._session.accuracy

    @property
    def dtype(self) -> str:
        return self._session.dtype

    @property
    def device(self) -> str:
        return self._session.device

    @property
    def mode(self) -> str:
        """``"frozen"``, ``"cuda_graph"`` or ``"eager"``."""
        return self._session.mode

    @property
    def folded(self) -> int:
        """Conv+BatchNorm pairs folded in the session's copy."""
        return self._session.folded

    @property
    def cached_shapes(self) -> List[Tuple[int, ...]]:
        """Input shapes with their own prepared program."""
        return [tuple(s) for s in self._session.cached_shapes]

    def __repr__(self) -> str:
        return (f"InferenceSession({self.model_name}, dtype={self.dtype}, device={self.device}, mode={self.mode}, "
                f"accuracy={self.accuracy:.2e})")
