"""Inference runtime: :class:`InferenceSession`, a prepared callable copy of an osteonet model.

The session copies the model's current weights in C++ (the model itself is never changed), folds
BatchNorm into the convolutions, and on the CPU freezes the copy per input shape with TorchScript
(oneDNN prepacked convolutions); bfloat16 runs channels-last and is checked against float32. On a
CUDA build of LibTorch with a GPU, ``device="cuda"`` replays one CUDA graph per input shape.
For a Faster R-CNN (:mod:`osteonet.detection`) the backbone and FPN are prepared per padded batch
shape and the data-dependent rest (proposals, NMS, RoIAlign, box head) runs eagerly in float32.
Under torch 2.x a backbone session can run TorchScript's oneDNN Graph fuser instead
(``fuser="onednn_graph"``), ahead of the TorchScript peer at batch 1 on the CPU. See docs/runtime.md.
"""

from __future__ import annotations

import copy
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from . import _core
from .detection import Detector, _check_images
from .models import OsteoModel

__all__ = ["InferenceSession", "ScanSession", "built_with_cuda", "cpu_has_bf16", "onednn_graph_available", "FUSERS"]

#: what ``InferenceSession(fuser=...)`` accepts besides None (TorchScript's freeze + optimize_for_inference)
FUSERS = ("onednn_graph",)


def built_with_cuda() -> bool:
    """True when osteonet's extension was compiled with the CUDA-graph code (LibTorch with CUDA)."""
    return bool(_core.runtime_built_with_cuda())


def cpu_has_bf16() -> bool:
    """True when the CPU advertises AMX-BF16 or AVX512-BF16."""
    return bool(_core.cpu_has_bf16())


def onednn_graph_available() -> bool:
    """True where TorchScript's oneDNN Graph fuser runs: torch 2.x (Debian 12's torch 1.13 links a oneDNN
    without its graph API, where the switch exists and fuses nothing)."""
    return int(torch.__version__.split(".")[0]) >= 2 and hasattr(torch._C, "_jit_set_llga_enabled")


#: the fuser switches are process-wide: one session flips them at a time
_FUSER_SWITCHES = threading.Lock()


class _OneDnnGraphPrograms:
    """A backbone session's programs fused by oneDNN Graph, one per input shape (torch 2.x, CPU).

    Each new shape is traced through the C++ session's folded copy run eagerly (weights become constants,
    the dtype conversion and channels-last layout are in the trace), then run with TorchScript's oneDNN
    Graph fuser on and its TensorExpr fuser off (under 2.x that one compiles DenseNet's graph for minutes)
    for the profiling runs after which TorchScript's executor fixes the fused plan. The switches are put
    back right after: the plan keeps its fusion groups, and other TorchScript code in the process runs as
    before. Then the fused program and the C++ session's own frozen program for that shape are timed,
    alternately, and the faster serves the shape (``InferenceSession.programs``). Shapes beyond
    ``max_shapes`` run the C++ session (its frozen programs up to its own limit, then the folded copy)."""

    TIMED_RUNS = 3

    def __init__(self, cpp: Any, where: str, warmup: int, max_shapes: int) -> None:
        self._cpp, self._where, self._warmup, self._max_shapes = cpp, where, warmup, max_shapes
        self._programs: Dict[Tuple[Any, ...], Tuple[Any, int, str]] = {}
        self._lock = threading.Lock()

    def entries(self) -> Dict[Tuple[int, ...], Tuple[int, str]]:
        """shape -> (fusion groups, the program that serves it: "onednn_graph" or "frozen"), in the order the
        shapes came (a shape's float32 and bfloat16 inputs: once)."""
        return {k[0]: (groups, choice) for k, (_, groups, choice) in self._programs.items()}

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """The shape's oneDNN Graph program whatever the timing chose (built if new): the accuracy check's."""
        key = self._key(x)
        with torch.no_grad():
            return self._entry(key, x)[0](x.contiguous())

    @staticmethod
    def _key(x: torch.Tensor) -> Tuple[Any, ...]:
        return tuple(x.shape), x.dtype, x.device

    def _build(self, x: torch.Tensor) -> Tuple[Any, int, str]:
        eager = self._cpp.forward_eager

        def program(x: torch.Tensor) -> torch.Tensor:
            return eager(x)

        traced = torch.jit.trace(program, x, check_trace=False)
        runs = torch._C._jit_get_num_profiled_runs() + 1 + self._warmup  # profiling, optimising, warm-up
        with _FUSER_SWITCHES:
            llga, texpr = torch._C._jit_llga_enabled(), torch._C._jit_texpr_fuser_enabled()
            torch._C._jit_set_llga_enabled(True)
            torch._C._jit_set_texpr_fuser_enabled(False)
            try:
                for _ in range(runs):
                    traced(x)
                graph = str(torch.jit.last_executed_optimized_graph())
            finally:
                torch._C._jit_set_llga_enabled(llga)
                torch._C._jit_set_texpr_fuser_enabled(texpr)
        groups = graph.count("prim::oneDNNFusionGroup")
        if groups == 0:
            raise RuntimeError(f"{self._where}: oneDNN Graph formed no fusion group for input shape {tuple(x.shape)} "
                               "(is TorchScript's profiling executor off?); use fuser=None")
        times: Dict[str, List[float]] = {"onednn_graph": [], "frozen": []}
        self._cpp(x)  # the C++ session's frozen program for this shape, built and warmed up
        for _ in range(self.TIMED_RUNS):
            for name, run in (("onednn_graph", traced), ("frozen", self._cpp)):
                t0 = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - t0)
        choice = min(times, key=lambda k: sorted(times[k])[len(times[k]) // 2])
        return traced, groups, choice

    def _entry(self, key: Tuple[Any, ...], x: torch.Tensor) -> Optional[Tuple[Any, int, str]]:
        entry = self._programs.get(key)
        if entry is None:
            with self._lock:
                entry = self._programs.get(key)
                if entry is None and len(self._programs) < self._max_shapes:
                    entry = self._programs[key] = self._build(x)
        return entry

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        with torch.no_grad():
            entry = self._entry(self._key(x), x)
            if entry is None or entry[2] == "frozen":
                return self._cpp(x)
            return entry[0](x)


class InferenceSession:
    """A prepared, thread-safe callable for inference with an osteonet backbone or detector.

    Args:
        model: an osteonet model from :func:`osteonet.create_model` (its current weights are copied):
            a backbone, or a Faster R-CNN (``fasterrcnn``, ``fasterrcnn_resnet50_fpn``, ...).
        example_input: backbones: an N x C x H x W float tensor; its shape gets the first prepared
            program and is used for warm-up and the accuracy check. Detectors: a list of C x H x W
            float32 images, as the detector takes them; the padded batch shape gets the first program.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 where the CPU has AMX/AVX512-BF16
            or on CUDA, when the accuracy check passes).
        device: ``"cpu"`` or ``"cuda"``.
        cuda_graph: CUDA graphs per input shape (CUDA builds only).
        freeze: CPU: TorchScript-freeze the folded copy per shape (else run it eagerly). ``None``: backbones
            freeze; detectors run eagerly, where a frozen backbone + FPN measured no worthwhile gain
            (docs/runtime.md, "Detectors"; ``freeze=True`` still builds it).
        num_threads: ``torch.set_num_threads`` at construction when given (process-wide).
        warmup: runs of each new shape's program before use.
        max_shapes: shapes with their own program; later shapes run the folded copy eagerly.
        features: run the model without its classifier and return its features (what the model
            returns with ``num_classes=0``: pooled features; ``ovf_resnet34``: the 32-d slice
            embedding that seed 002's aggregators take, so a scan runs as session + aggregator).
        fuser: ``None`` (TorchScript freeze + optimize_for_inference, per shape) or ``"onednn_graph"``:
            backbones on the CPU under torch 2.x (:func:`onednn_graph_available`), each shape's program
            traced from the folded copy and fused by TorchScript's oneDNN Graph fuser, timed against the
            frozen program of that shape (the faster serves it: ``programs``), held to the same accuracy
            check (above its tolerance the session warns and runs without the fuser). ``mode`` is then
            ``"onednn_graph"``.
        float32_ends: bfloat16 backbone sessions: keep the stem convolution and the classifier in float32
            from the start (``float32_modules`` names them): the input and the logits are not rounded to
            bfloat16's 8 bits, everything between computes in bfloat16. Without it a bfloat16 session
            keeps them only when full bfloat16 fails the accuracy check (warning).

    Calling the session returns float32 outputs (detectors: a list of dicts of boxes, labels and
    scores per image, as the detector's eval forward). ``accuracy`` is max |softmax(session) -
    softmax(eager float32)| (sigmoid for one logit) on the example input (with ``features=True``: max |difference| relative to
    the largest feature value; detectors: RPN objectness and box class probabilities of the same
    proposals); a bfloat16 backbone session above 1e-2 is rebuilt with its float32 ends, and above it
    again (detectors: at once) falls back to float32 (warnings).

    Raises:
        TypeError: ``model`` is not an osteonet backbone model, or an input is not a float tensor.
        ValueError: bad dtype/device names, ``device="cuda"`` without CUDA, wrong input shapes, a fuser
            this torch, device or model cannot run.
    """

    def __init__(self, model: Any, example_input: torch.Tensor, dtype: str = "float32", device: str = "cpu",
                 cuda_graph: bool = True, freeze: Optional[bool] = None, num_threads: Optional[int] = None,
                 warmup: int = 2, max_shapes: int = 8, features: bool = False, fuser: Optional[str] = None,
                 float32_ends: bool = False) -> None:
        if not isinstance(model, (OsteoModel, Detector)):
            raise TypeError("InferenceSession: model must be an osteonet backbone or detector model "
                            f"(osteonet.create_model), got {type(model).__name__}")
        self._detector = isinstance(model, Detector)
        if self._detector:
            example_input = _image_list(example_input, f"InferenceSession({model.model_name}) example_input")
        elif not isinstance(example_input, torch.Tensor):
            raise TypeError(f"InferenceSession: example_input must be a torch.Tensor, got {type(example_input).__name__}")
        for name, value in (("dtype", dtype), ("device", device)):
            if not isinstance(value, str):
                raise TypeError(f"InferenceSession: {name} must be a str, got {type(value).__name__}")
        if freeze is None:
            freeze = not self._detector
        for name, value in (("cuda_graph", cuda_graph), ("freeze", freeze), ("features", features),
                            ("float32_ends", float32_ends)):
            if not isinstance(value, bool):
                raise TypeError(f"InferenceSession: {name} must be a bool, got {type(value).__name__}")
        for name, value in (("num_threads", 0 if num_threads is None else num_threads), ("warmup", warmup),
                            ("max_shapes", max_shapes)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"InferenceSession: {name} must be an int, got {type(value).__name__}")
        self._check_fuser(fuser, model, device, freeze, max_shapes)
        self._fused: Optional[_OneDnnGraphPrograms] = None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"InferenceSession: device={device!r} needs a CUDA-enabled PyTorch and a visible GPU; "
                             "torch.cuda.is_available() is False")
        self.model_name = model.model_name
        if model.python_modified():
            raise ValueError(f"InferenceSession({self.model_name}): the model has Python-side changes "
                             f"({', '.join(model.python_modified())}); a session runs the C++ model alone. Use "
                             "reset_classifier() for a new head, or run the model eagerly")
        model._sync()
        if self._detector:
            if features:
                raise ValueError(f"InferenceSession({self.model_name}): features=True applies to backbones; "
                                 "a detector returns detections")
            if float32_ends:
                raise ValueError(f"InferenceSession({self.model_name}): float32_ends=True applies to backbones (stem "
                                 "and classifier); a detector's heads run in float32 already")
            self._session = _core.DetectorSession(model._cpp, example_input, dtype, device, cuda_graph, freeze,
                                                  num_threads or 0, warmup, max_shapes)
            self._warn_fallback(dtype)
            return
        config = dict(model.config)
        config.pop("num_classes", None)
        config.pop("in_chans", None)
        attention = config.pop("attention", None) or "none"
        self._session = _core.InferenceSession(model._impl, model.num_classes, attention, model.in_chans, config,
                                               example_input.detach(), dtype, device, cuda_graph, freeze,
                                               num_threads or 0, warmup, max_shapes, features, float32_ends)
        self._warn_fallback(dtype, float32_ends)
        if fuser is not None:
            self._fused = _OneDnnGraphPrograms(self._session, f"InferenceSession({self.model_name})", warmup,
                                               max_shapes)
            self._accuracy = self._session.accuracy_of(self._fused.fused(example_input.detach().float()))
            if self._accuracy > self._session.tolerance:
                warnings.warn(f"InferenceSession({self.model_name}): the oneDNN Graph {self._session.dtype} program "
                              f"differed from eager float32 by {self._accuracy:.3g} (> {self._session.tolerance:.3g}) "
                              "on the example input; the session runs without the fuser", RuntimeWarning)
                self._fused = None

    @staticmethod
    def _check_fuser(fuser: Any, model: Any, device: str, freeze: bool, max_shapes: int) -> None:
        if fuser is None:
            return
        if not isinstance(fuser, str):
            raise TypeError(f"InferenceSession: fuser must be None or a str, got {type(fuser).__name__}")
        if fuser not in FUSERS:
            raise ValueError(f"InferenceSession: fuser must be None or one of {', '.join(FUSERS)}, got {fuser!r}")
        where = f"InferenceSession({model.model_name}, fuser={fuser!r})"
        if isinstance(model, Detector):
            raise ValueError(f"{where}: the fuser applies to backbones; a detector's session runs the C++ programs")
        if device != "cpu":
            raise ValueError(f"{where}: oneDNN Graph runs on the CPU, got device={device!r}")
        if not freeze or max_shapes < 1:
            asked = "freeze=False" if not freeze else f"max_shapes={max_shapes}"
            raise ValueError(f"{where}: the fuser builds a program per shape; {asked} asks for none")
        if not onednn_graph_available():
            raise ValueError(f"{where}: needs torch 2.x, got torch {torch.__version__} (its oneDNN has no graph "
                             "API; docs/runtime.md)")

    def _warn_fallback(self, dtype: str, float32_ends: bool = False) -> None:
        if dtype != "bfloat16":
            return
        if self._session.dtype != "bfloat16":
            warnings.warn(f"InferenceSession({self.model_name}): bfloat16 probabilities differed from float32 by "
                          "more than 1e-2 on the example input; the session runs in float32", RuntimeWarning)
        elif self.float32_modules and not float32_ends:
            warnings.warn(f"InferenceSession({self.model_name}): bfloat16 probabilities differed from float32 by "
                          f"more than 1e-2 on the example input; the session keeps {', '.join(self.float32_modules)} "
                          f"in float32 (accuracy {self._session.accuracy:.2g})", RuntimeWarning)

    @property
    def features(self) -> bool:
        """True when the session returns features (the model without its classifier)."""
        return False if self._detector else self._session.features

    def __call__(self, x: Any) -> Any:
        if self._detector:
            return self._session(_image_list(x, f"InferenceSession({self.model_name})"))
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"InferenceSession({self.model_name}): expected a torch.Tensor, got {type(x).__name__}")
        if self._fused is not None:
            return self._fused(x.detach())
        return self._session(x.detach())

    def backbone_maps(self, batch: torch.Tensor) -> List[torch.Tensor]:
        """Detector sessions: the backbone + FPN maps (float32, finest first) of a padded, normalised
        N x C x H x W batch (what the detector's transform makes of its images) through the prepared
        program, the part the session freezes (CPU) or graphs (CUDA): features, or that part timed alone."""
        if not self._detector:
            raise TypeError(f"InferenceSession({self.model_name}): backbone_maps() applies to detector sessions; "
                            "call the session for a backbone's outputs")
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f"InferenceSession({self.model_name}).backbone_maps: expected a torch.Tensor, "
                            f"got {type(batch).__name__}")
        return list(self._session.backbone_maps(batch.detach()))

    @property
    def accuracy(self) -> float:
        """max |softmax(session) - softmax(eager float32)| measured on the example input (see above)."""
        return self._accuracy if self._fused is not None else self._session.accuracy

    @property
    def fuser(self) -> Optional[str]:
        """``"onednn_graph"`` when the session's programs are fused by oneDNN Graph, else None."""
        return None if self._fused is None else FUSERS[0]

    @property
    def programs(self) -> Dict[Tuple[int, ...], Dict[str, Any]]:
        """With a fuser: per input shape, ``{"serves": "onednn_graph" or "frozen", "fusion_groups": n}`` (the
        faster of the two as timed when the shape came); without one, empty."""
        if self._fused is None:
            return {}
        return {s: {"serves": choice, "fusion_groups": groups} for s, (groups, choice) in self._fused.entries().items()}

    @property
    def dtype(self) -> str:
        return self._session.dtype

    @property
    def float32_modules(self) -> Tuple[str, ...]:
        """Modules a bfloat16 backbone session runs in float32 (its float32 ends: the stem convolution and the
        classifier, by qualified name); empty when it runs all in one dtype."""
        return () if self._detector else tuple(self._session.float32_modules)

    @property
    def device(self) -> str:
        return self._session.device

    @property
    def mode(self) -> str:
        """``"frozen"``, ``"cuda_graph"``, ``"eager"`` or ``"onednn_graph"``."""
        return "onednn_graph" if self._fused is not None else self._session.mode

    @property
    def folded(self) -> int:
        """Conv+BatchNorm pairs folded in the session's copy."""
        return self._session.folded

    @property
    def cached_shapes(self) -> List[Tuple[int, ...]]:
        """Input shapes with their own prepared program (detectors: padded batch shapes)."""
        if self._fused is not None:
            return list(self._fused.entries())
        return [tuple(s) for s in self._session.cached_shapes]

    def __repr__(self) -> str:
        ends = f", float32_modules={self.float32_modules}" if self.float32_modules else ""
        return (f"InferenceSession({self.model_name}, dtype={self.dtype}{ends}, device={self.device}, "
                f"mode={self.mode}, accuracy={self.accuracy:.2e})")


class ScanSession:
    """A vertebral-fracture scan (seed 002) through a prepared slice encoder, slices padded to fixed lengths.

    A scan's T preprocessed slices (T x 3 x H x W) are zero-padded to the smallest of ``lengths`` that
    holds them (longer scans run in chunks of the largest length), the encoder runs as an
    :class:`InferenceSession` on the padded batch, the padded slices' outputs are masked off, and the
    aggregator runs eagerly on the T real ones. So a stream of scans of any length uses at most
    ``len(lengths)`` prepared programs (frozen TorchScript on the CPU, CUDA graphs on CUDA builds),
    each built on first use. In eval mode every slice is encoded independently of the others, so
    the padding does not change the result.

    Args:
        encoder: the slice encoder (:func:`osteonet.sequence.create_slice_encoder`).
        aggregator: ``"lstm"`` (takes the 32-d embeddings; the session runs with ``features=True``) or a
            rule aggregator ``"max"``/``"mean"``/``"vote"`` (takes slice probabilities, the sigmoid of the
            encoder's logits).
        example_slices: T x 3 x H x W preprocessed slices; they prepare the first length and the
            accuracy check.
        lengths: the padded lengths, ascending positive ints.
        dtype, device, cuda_graph, freeze, num_threads, warmup, float32_ends: as :class:`InferenceSession`.

    Calling it with T x 3 x H x W slices returns the scan probability (a 1-element float32 tensor).
    ``session`` is the encoder's :class:`InferenceSession` (its ``accuracy``, ``dtype`` and
    ``cached_shapes``: the padded lengths prepared so far).
    """

    def __init__(self, encoder: Any, aggregator: Any, example_slices: torch.Tensor,
                 lengths: Sequence[int] = (8, 16, 32, 64), dtype: str = "float32", device: str = "cpu",
                 cuda_graph: bool = True, freeze: bool = True, num_threads: Optional[int] = None,
                 warmup: int = 2, float32_ends: bool = False) -> None:
        from .sequence import Aggregator, SliceEncoder

        if not isinstance(encoder, SliceEncoder):
            raise TypeError(f"ScanSession: encoder must be a SliceEncoder (osteonet.sequence.create_slice_encoder), "
                            f"got {type(encoder).__name__}")
        if not isinstance(aggregator, Aggregator):
            raise TypeError(f"ScanSession: aggregator must be an Aggregator (osteonet.sequence.create_aggregator), "
                            f"got {type(aggregator).__name__}")
        lengths = list(lengths) if isinstance(lengths, (list, tuple)) else lengths
        if not isinstance(lengths, list) or not lengths or \
                any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths) or \
                lengths != sorted(set(lengths)):
            raise ValueError(f"ScanSession: lengths must be a non-empty ascending list of distinct positive ints, "
                             f"got {lengths!r}")
        self.lengths = lengths
        self._features = not aggregator.takes_probabilities
        example = self._check(example_slices)
        self.session = InferenceSession(encoder, self._pad(example[:lengths[-1]])[0], dtype=dtype, device=device,
                                         cuda_graph=cuda_graph, freeze=freeze, num_threads=num_threads,
                                         warmup=warmup, max_shapes=len(lengths), features=self._features,
                                         float32_ends=float32_ends)
        # A copy on the session's device (the caller's aggregator is left as it is): the encoder's outputs
        # come back on that device.
        self.aggregator = copy.deepcopy(aggregator).eval().to(self.session.device)

    def _check(self, slices: Any) -> torch.Tensor:
        if not isinstance(slices, torch.Tensor):
            raise TypeError(f"ScanSession: expected a T x 3 x H x W tensor of slices, got {type(slices).__name__}")
        if slices.dim() != 4 or slices.shape[0] == 0:
            raise ValueError(f"ScanSession: expected a T x 3 x H x W tensor of slices (T >= 1), "
                             f"got shape {tuple(slices.shape)}")
        return slices.detach()

    def _pad(self, chunk: torch.Tensor) -> Tuple[torch.Tensor, int]:
        """The chunk zero-padded to the smallest length that holds it, and its number of real slices."""
        t = chunk.shape[0]
        n = next(n for n in self.lengths if n >= t)
        if n == t:
            return chunk, t
        return torch.cat([chunk, chunk.new_zeros((n - t,) + tuple(chunk.shape[1:]))]), t

    def slice_outputs(self, slices: torch.Tensor) -> torch.Tensor:
        """T x 32 embeddings (LSTM) or T slice probabilities (rule aggregators) of the real slices."""
        slices = self._check(slices)
        outs = []
        for start in range(0, slices.shape[0], self.lengths[-1]):
            padded, t = self._pad(slices[start:start + self.lengths[-1]])
            outs.append(self.session(padded)[:t])  # the mask: padded slices' outputs are dropped
        out = torch.cat(outs)
        return out if self._features else torch.sigmoid(out[:, 0])

    def __call__(self, slices: torch.Tensor) -> torch.Tensor:
        out = self.slice_outputs(slices)
        with torch.no_grad():
            return self.aggregator(out[None])

    def __repr__(self) -> str:
        return f"ScanSession(lengths={self.lengths}, aggregator={self.aggregator.model_name}, {self.session!r})"


def _image_list(images: Any, where: str) -> List[torch.Tensor]:
    """A detector's input as the detector takes it (a list of C x H x W tensors), float32, detached."""
    images = _check_images(images, where)
    if not images:
        raise ValueError(f"{where}: expected a non-empty list of images, got an empty list")
    for i, im in enumerate(images):
        if im.dtype != torch.float32:
            raise TypeError(f"{where}: image {i} must be float32, got dtype={im.dtype}")
    return [im.detach() for im in images]
