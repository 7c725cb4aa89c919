"""Seed 002: CNN/LSTM detection of osteoporotic vertebral fractures on CT, backed by osteonet's C++ core.

A ResNet-34 slice encoder (``ovf_resnet34``: 512 -> 32 -> 1, sigmoid, BCE with every slice carrying its
scan's label) scores each sagittal slice and gives a 32-d feature vector; an aggregator (max, mean,
vote, or LSTM with 256 units) turns the scan's sequence into one probability (Table 1). See
docs/sequence.md for the choices the paper leaves open.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import _core
from ._errors import first_line
from .models import CppModule, OsteoModel, create_model
from .train.trainer import freeze_batchnorm  # noqa: F401  (one freeze_batchnorm, re-exported here)

__all__ = [
    "SliceEncoder", "Aggregator", "ScanPipeline", "create_slice_encoder", "create_aggregator", "AGGREGATOR_NAMES",
    "pad_sequences", "lengths_from_mask", "expand_scan_labels", "slice_bce_loss", "freeze_batchnorm",
    "encoder_fc_parameters", "stage2_param_groups", "center_slice_range", "select_center_slices", "resize_slices",
    "grey_to_rgb", "subtract_pixel_mean", "pixel_mean", "random_rotate_shift", "reorient_to_sagittal",
    "predict_scan", "occlusion_sensitivity", "save_occlusion_overlay", "SAGITTAL_AXCODES",
    "train_two_stage", "TwoStageResult", "STAGE2_AGGREGATORS", "save_ovf_checkpoints", "load_ovf_checkpoint",
]

AGGREGATOR_NAMES = tuple(e["name"] for e in _core.registry_entries("aggregator"))
#: Array axes after reorientation: slices run towards the patient's left, rows towards inferior,
#: columns towards posterior (the usual sagittal display: head up, face to the viewer's left).
SAGITTAL_AXCODES = ("L", "I", "P")

_BN_TYPES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


# ---- the slice encoder -----------------------------------------------------------------------------
class SliceEncoder(OsteoModel):
    """``ovf_resnet34``: ``forward(x)`` gives N x 1 logits; ``features(x)`` the N x 32 embedding."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn1(fc1(pooled))): the 32-d vector the aggregators take (§3.3.1)."""
        return _core.ovf_features(self._cpp, self._check(x, "features"))

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ResNet-34 features (N x 512); cache them to train stage 2 with the backbone frozen."""
        return _core.ovf_backbone_features(self._cpp, self._check(x, "backbone_features"))

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """The 32-d embedding from pooled features (N x 512): the part fine-tuned in stage 2."""
        return _core.ovf_embed(self._cpp, self._check(pooled, "embed"))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (N x 1) from embeddings."""
        return _core.ovf_head(self._cpp, self._check(embedding, "head"))

    @property
    def embed_dim(self) -> int:
        return _core.ovf_embed_dim(self._cpp)

    def freeze_batchnorm(self, frozen: bool = True) -> "SliceEncoder":
        """Keeps every BatchNorm in eval mode (through later ``train()`` calls) without gradients (§3.3.1)."""
        _core.ovf_set_batchnorm_frozen(self._cpp, bool(frozen))
        self.train(self.training)
        return self

    @property
    def batchnorm_frozen(self) -> bool:
        return _core.ovf_batchnorm_frozen(self._cpp)

    def _family_state(self) -> Dict[str, Any]:
        return {"batchnorm_frozen": self.batchnorm_frozen}

    def _restore_family_state(self, state: Dict[str, Any]) -> None:
        if state.get("batchnorm_frozen"):
            self.freeze_batchnorm(True)

    def load_torchvision_backbone(self, state_dict: Dict[str, torch.Tensor]) -> None:
        """Loads a torchvision ``resnet34`` state dict (e.g. ImageNet weights) into ``backbone.*``; ``fc`` is skipped."""
        mapped = {f"backbone.{k}": v for k, v in state_dict.items() if not k.startswith("fc.")}
        own = self.state_dict()
        missing = [k for k in own if k.startswith("backbone.") and k not in mapped]
        if missing:
            raise ValueError(f"load_torchvision_backbone: the state dict lacks {len(missing)} keys, e.g. {missing[0]}")
        own.update(mapped)
        self.load_state_dict(own)


def create_slice_encoder(num_classes: int = 1, in_chans: int = 3, attention: Optional[str] = None,
                         embed_dim: int = 32, **options: Any) -> SliceEncoder:
    """Builds the slice encoder ``ovf_resnet34`` (also ``osteonet.create_model("ovf_resnet34", num_classes=1)``)."""
    model = create_model("ovf_resnet34", num_classes=num_classes, in_chans=in_chans, attention=attention,
                         embed_dim=embed_dim, **options)
    assert isinstance(model, SliceEncoder)
    return model


# ---- aggregators ------------------------------------------------------------------------------------
def pad_sequences(seqs: Sequence[torch.Tensor], value: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A list of T_i x D (or T_i) tensors -> (B x T_max x D padded batch, B lengths)."""
    if not isinstance(seqs, (list, tuple)) or not seqs:
        raise ValueError("pad_sequences: expected a non-empty list of tensors")
    seqs = [s.unsqueeze(1) if s.dim() == 1 else s for s in seqs]
    if any(s.dim() != 2 or s.shape[0] == 0 for s in seqs):
        raise ValueError("pad_sequences: every sequence must be T x D with T >= 1, got shapes "
                         f"{[tuple(s.shape) for s in seqs]}")
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=value), lengths


def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Lengths from a B x T mask of valid steps (valid steps first in each row)."""
    return _core.lengths_from_mask(mask)


class Aggregator(CppModule):
    """A slice aggregator: ``forward(x, lengths=None)`` -> scan probabilities (B).

    ``x`` is a padded batch B x T x D (rule aggregators: D = 1 slice probabilities, or B x T), with
    ``lengths`` (B) marking the valid steps, or a list of T_i x D tensors (padded here).
    """

    def __init__(self, cpp: Any, name: str, config: Dict[str, Any]) -> None:
        self.__dict__["_impl"] = _core.as_aggregator(cpp)
        super().__init__(cpp, name, config)

    def _inputs(self, x: Any, lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        self._check_not_fx(x)
        if isinstance(x, (list, tuple)):
            if lengths is not None:
                raise ValueError(f"{self.model_name}: give lengths with a padded tensor, not with a list")
            return pad_sequences(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.model_name}: expected a tensor or a list of tensors, got {type(x).__name__}")
        if self._impl.takes_probabilities and x.dim() == 2:
            x = x.unsqueeze(2)
        self._sync()
        return x, lengths

    def forward(self, x: Any, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._impl.forward(*self._inputs(x, lengths))

    def forward_logits(self, x: Any, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scan logits (LSTM only): use with ``binary_cross_entropy_with_logits``."""
        if self.model_name != "lstm":
            raise ValueError(f"{self.model_name}: only the 'lstm' aggregator has logits")
        return _core.lstm_forward_logits(self._cpp, *self._inputs(x, lengths))

    @property
    def takes_probabilities(self) -> bool:
        """True for max/mean/vote (slice probabilities in), False for the LSTM (features in)."""
        return self._impl.takes_probabilities

    @property
    def input_dim(self) -> int:
        return self._impl.input_dim


def create_aggregator(name: str, **options: Any) -> Aggregator:
    """``"max"``, ``"mean"``, ``"vote"`` (``threshold``=0.5) or ``"lstm"`` (``input_size``=32,
    ``hidden_size``=256, ``num_layers``=1, ``dropout``=0.2); the same as ``osteonet.create_model(name, ...)``."""
    from .models import _check_family

    _check_family(name, "aggregator", "create_aggregator")
    model = create_model(name, **options)
    assert isinstance(model, Aggregator)
    return model


# ---- losses and two-stage training helpers ----------------------------------------------------------
def expand_scan_labels(labels: torch.Tensor, slices_per_scan: Union[torch.Tensor, Sequence[int]]) -> torch.Tensor:
    """Label propagation (§2.1): every slice carries its scan's label. (B) labels, (B) counts -> (sum counts)."""
    counts = torch.as_tensor(slices_per_scan, dtype=torch.long, device=labels.device)
    if counts.dim() != 1 or counts.numel() != labels.numel():
        raise ValueError(f"expand_scan_labels: expected one count per scan ({labels.numel()}), got shape {tuple(counts.shape)}")
    return labels.reshape(-1).repeat_interleave(counts)


def slice_bce_loss(slice_logits: torch.Tensor, scan_labels: torch.Tensor,
                   slices_per_scan: Union[torch.Tensor, Sequence[int]]) -> torch.Tensor:
    """Eq. (1): BCE averaged over all slices, each labelled with its scan's label (logits in, stable)."""
    logits = slice_logits.reshape(-1)
    target = expand_scan_labels(scan_labels.to(logits.dtype), slices_per_scan)
    if target.numel() != logits.numel():
        raise ValueError(f"slice_bce_loss: {logits.numel()} slice logits for {target.numel()} labelled slices")
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


def encoder_fc_parameters(encoder: nn.Module, include_output: bool = False) -> List[nn.Parameter]:
    """The encoder's FC layers fine-tuned in stage 2 (§3.3.2): ``fc1`` (and ``fc2`` when asked)."""
    names = ("fc1.",) + (("fc2.",) if include_output else ())
    return [p for n, p in encoder.named_parameters() if n.startswith(names)]


def stage2_param_groups(encoder: nn.Module, aggregator: nn.Module, lr: float = 0.1,
                        encoder_fc_lr: float = 1e-4, weight_decay: float = 1e-4) -> List[Dict[str, Any]]:
    """Optimiser groups for stage 2 (§3.3.2): the aggregator at ``lr`` (0.1), the encoder's FC layers at 1e-4."""
    return [
        {"params": [p for p in aggregator.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay},
        {"params": encoder_fc_parameters(encoder), "lr": encoder_fc_lr, "weight_decay": weight_decay},
    ]


# ---- preprocessing ---------------------------------------------------------------------------------
def center_slice_range(num_slices: int, fraction: float = 0.05, min_slices: int = 1) -> Tuple[int, int]:
    """(first index, count) of the centre ``fraction`` of the slices (§3.2: 5 %)."""
    return tuple(_core.center_slice_range(int(num_slices), float(fraction), int(min_slices)))


def select_center_slices(volume: torch.Tensor, fraction: float = 0.05, min_slices: int = 1) -> torch.Tensor:
    return _core.select_center_slices(volume, float(fraction), int(min_slices))


def resize_slices(x: torch.Tensor, size: int = 224, antialias: bool = True) -> torch.Tensor:
    return _core.resize_slices(x, int(size), bool(antialias))


def grey_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return _core.grey_to_rgb(x)


def subtract_pixel_mean(x: torch.Tensor, mean: Optional[torch.Tensor]) -> torch.Tensor:
    return _core.subtract_pixel_mean(x, mean)


def pixel_mean(slices: torch.Tensor, size: int = 224, antialias: bool = True) -> torch.Tensor:
    """The per-pixel mean image (1 x 1 x size x size) of training slices."""
    return _core.pixel_mean(slices, int(size), bool(antialias))


def random_rotate_shift(x: torch.Tensor, max_degrees: float = 10.0, max_shift: float = 0.1,
                        same_for_all: bool = False) -> torch.Tensor:
    """Training augmentation (§3.2): random rotation and horizontal shift (fraction of the width)."""
    return _core.random_rotate_shift(x, float(max_degrees), float(max_shift), bool(same_for_all))


# ---- scan level -------------------------------------------------------------------------------------
class ScanPipeline:
    """Preprocessing + encoder + aggregator for whole scans (the C++ ``ScanPipeline``)."""

    def __init__(self, encoder: SliceEncoder, aggregator: Aggregator, center_fraction: float = 0.05,
                 min_slices: int = 1, image_size: int = 224, antialias: bool = True, threshold: float = 0.5,
                 chunk_size: int = 64, pixel_mean: Optional[torch.Tensor] = None) -> None:
        if not isinstance(encoder, SliceEncoder):
            raise TypeError(f"ScanPipeline: encoder must be a SliceEncoder, got {type(encoder).__name__}")
        if not isinstance(aggregator, Aggregator):
            raise TypeError(f"ScanPipeline: aggregator must be an Aggregator, got {type(aggregator).__name__}")
        for name, m in (("encoder", encoder), ("aggregator", aggregator)):
            if m.python_modified():
                raise ValueError(f"ScanPipeline: the {name} has Python-side changes ({', '.join(m.python_modified())}); "
                                 "the pipeline runs the C++ model")
        self.encoder, self.aggregator = encoder, aggregator
        self._cpp = _core.ScanPipeline(encoder._cpp, aggregator._cpp, float(center_fraction), int(min_slices),
                                       int(image_size), bool(antialias), float(threshold), int(chunk_size), pixel_mean)

    def preprocess(self, slices: torch.Tensor) -> torch.Tensor:
        return self._cpp.preprocess(slices)

    def _run(self, fn, x: torch.Tensor) -> Dict[str, Any]:
        modes = (self.encoder.training, self.aggregator.training)
        self.encoder.eval()
        self.aggregator.eval()
        try:
            return fn(x)
        finally:
            self.encoder.train(modes[0])
            self.aggregator.train(modes[1])

    def predict_slices(self, slices: torch.Tensor) -> Dict[str, Any]:
        """Slices already selected (T x H x W) -> probability, slice_probabilities, slice_indices, positive."""
        return self._run(self._cpp.predict_slices, torch.as_tensor(slices))

    def predict_volume(self, volume: torch.Tensor) -> Dict[str, Any]:
        """A sagittal-first volume (S x H x W): the centre slices are selected first."""
        return self._run(self._cpp.predict_volume, torch.as_tensor(volume))


def reorient_to_sagittal(volume: Any, affine: Optional[np.ndarray] = None,
                         axcodes: Optional[Sequence[str]] = None,
                         target: Sequence[str] = SAGITTAL_AXCODES) -> np.ndarray:
    """Reorders/flips the axes of a 3-D array so that axis 0 indexes sagittal slices.

    The orientation of ``volume``'s axes comes from ``affine`` (4 x 4 voxel -> RAS+ world, nibabel's
    convention: axis i of the array is column i of the affine) or from ``axcodes`` (the direction
    each axis increases towards, e.g. ``("R", "A", "S")``). The result's axes follow ``target``
    (default :data:`SAGITTAL_AXCODES`: slices towards the left, rows towards inferior, columns
    towards posterior). Voxel spacing is not resampled.
    """
    from nibabel import orientations as ornt

    arr = np.asarray(volume)
    if arr.ndim != 3:
        raise ValueError(f"reorient_to_sagittal: expected a 3-D volume, got shape {arr.shape}")
    if (affine is None) == (axcodes is None):
        raise ValueError("reorient_to_sagittal: give exactly one of affine and axcodes")
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape != (4, 4):
            raise ValueError(f"reorient_to_sagittal: affine must be 4 x 4, got shape {affine.shape}")
        start = ornt.io_orientation(affine)
    else:
        codes = tuple(str(c).upper() for c in axcodes)
        if len(codes) != 3:
            raise ValueError(f"reorient_to_sagittal: axcodes must name 3 axes, got {axcodes}")
        try:
            start = ornt.axcodes2ornt(codes)
        except Exception as e:  # nibabel raises on repeated or unknown codes
            raise ValueError(f"reorient_to_sagittal: bad axcodes {axcodes}: {e}") from None
    if np.isnan(start).any():
        raise ValueError("reorient_to_sagittal: the affine/axcodes do not give a unique direction for every axis")
    transform = ornt.ornt_transform(start, ornt.axcodes2ornt(tuple(target)))
    return np.ascontiguousarray(ornt.apply_orientation(arr, transform))


def predict_scan(encoder: SliceEncoder, aggregator: Aggregator, volume: Any, affine: Optional[np.ndarray] = None,
                 axcodes: Optional[Sequence[str]] = None, **pipeline_options: Any) -> Dict[str, Any]:
    """One CT scan -> fracture probability and per-slice scores.

    ``volume``: a NIfTI path (loaded with nibabel; its affine gives the orientation), or a 3-D array /
    tensor with ``affine`` or ``axcodes`` describing its axes. It is reoriented to sagittal (see
    :func:`reorient_to_sagittal`), the centre slices are selected, preprocessed, encoded and aggregated.
    ``pipeline_options``: :class:`ScanPipeline`'s (``center_fraction``, ``threshold``, ``pixel_mean``, ...).

    Returns a dict: ``probability`` (float), ``positive`` (bool), ``slice_probabilities`` (T tensor),
    ``slice_indices`` (their indices along the sagittal axis after reorientation).
    """
    if isinstance(volume, (str, os.PathLike)):
        import nibabel

        img = nibabel.load(os.fspath(volume))
        if affine is not None or axcodes is not None:
            raise ValueError("predict_scan: a NIfTI file carries its own affine; do not pass affine/axcodes")
        data, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
    else:
        data = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    sag = reorient_to_sagittal(data, affine=affine, axcodes=axcodes)
    pipe = ScanPipeline(encoder, aggregator, **pipeline_options)
    out = pipe.predict_volume(torch.from_numpy(sag.astype(np.float32, copy=False)))
    out["probability"] = float(out["probability"])
    return out


# ---- occlusion sensitivity --------------------------------------------------------------------------
def occlusion_sensitivity(model: Any, image: torch.Tensor, patch_size: int = 32, stride: int = 16,
                          fill_value: float = 0.0, batch_size: int = 32) -> Dict[str, Any]:
    """Occlusion sensitivity (C++): the drop of the output probability when a patch hides each region.

    ``model``: a :class:`SliceEncoder` (probability = sigmoid of its logit, run entirely in C++) or any
    callable mapping an N x C x H x W batch to N probabilities. ``image``: C x H x W (as the model takes
    it, i.e. preprocessed). Returns ``heatmap`` (H x W, the mean drop of the patches covering each
    pixel), ``grid`` (drop per patch position), ``ys``/``xs`` (patch corners), ``base_probability``.
    """
    if isinstance(model, SliceEncoder) and not model.python_modified():
        model._sync()
        target = model._cpp
    elif callable(model):
        def target(x):  # noqa: ANN001
            with torch.no_grad():
                return model(x)
    else:
        raise TypeError(f"occlusion_sensitivity: model must be a SliceEncoder or a callable, got {type(model).__name__}")
    return _core.occlusion_sensitivity(target, image, int(patch_size), int(stride), float(fill_value), int(batch_size))


def save_occlusion_overlay(image: Any, heatmap: Any, path: Union[str, os.PathLike], alpha: float = 0.45,
                           cmap: str = "jet", title: Optional[str] = None, dpi: int = 100) -> str:
    """Writes a PNG of the grey ``image`` (H x W, or C x H x W: first channel) with ``heatmap`` overlaid.

    The file is written whole or not at all (osteonet.io's atomic writer).
    """
    import matplotlib

    from .io import write_with

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    heat = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if img.ndim == 3:
        img = img[0]
    if img.ndim != 2 or heat.shape != img.shape:
        raise ValueError(f"save_occlusion_overlay: expected an H x W image and heat map of one size, got "
                         f"{img.shape} and {heat.shape}")
    path = os.fspath(path)
    h, w = img.shape
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(img, cmap="gray", interpolation="nearest")
    lim = float(np.abs(heat).max()) or 1.0
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=-lim if (heat < 0).any() else 0.0, vmax=lim, interpolation="bilinear")
    if title:
        ax.set_title(title, fontsize=8, color="white", y=0.98, va="top")  # inside the image, several lines downwards
    ax.set_axis_off()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return path


# ---- two-stage training (§3.3) ----------------------------------------------------------------------
STAGE2_AGGREGATORS = ("max", "mean", "vote", "lstm")
_HEAD_PREFIXES = ("fc1.", "bn1.", "fc2.")


@dataclasses.dataclass
class TwoStageResult:
    """What :func:`train_two_stage` returns.

    ``encoder``: the stage-1 encoder (BatchNorm frozen). ``models``: aggregator name -> (its encoder,
    the aggregator); each aggregator has its own copy of the encoder whose FC layers it fine-tuned in
    stage 2 (the backbone is shared in value). ``pixel_mean``: the 1 x 1 x S x S mean image of the
    training slices. ``history``: ``"stage1"`` and one list per aggregator of per-epoch records.
    """

    encoder: SliceEncoder
    models: Dict[str, Tuple[SliceEncoder, Aggregator]]
    pixel_mean: torch.Tensor
    image_size: int
    history: Dict[str, List[Dict[str, float]]]


def _prepare(scans: Sequence[torch.Tensor], size: int, mean: Optional[torch.Tensor]) -> List[torch.Tensor]:
    out = []
    for i, s in enumerate(scans):
        s = torch.as_tensor(s, dtype=torch.float32)
        if s.dim() != 3 or s.shape[0] == 0:
            raise ValueError(f"train_two_stage: scan {i} must be T x H x W with T >= 1, got shape {tuple(s.shape)}")
        x = resize_slices(s.unsqueeze(1), size)
        out.append(x if mean is None else subtract_pixel_mean(x, mean))
    return out


def _labels_tensor(labels: Any, n: int, what: str) -> torch.Tensor:
    y = torch.as_tensor(labels, dtype=torch.float32).reshape(-1)
    if y.numel() != n or not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"train_two_stage: {what} must be {n} labels in {{0, 1}}, got {y.tolist()[:8]}")
    return y


def _optimizer(name: str, groups: List[Dict[str, Any]], weight_decay: float) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    if name == "adam":
        return torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"train_two_stage: optimizer must be 'adam' or 'sgd', got {name!r}")


class _SliceBatches:
    """Stage 1's loader: per epoch a permutation of ``n`` slices drawn from ``generator``, in batches of
    ``batch_size`` index tensors; a batch smaller than ``min_size`` is skipped (BatchNorm needs two).
    With ``before_epoch``, it is called first each epoch (stage 2 recomputes augmented features)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, min_size: int = 1,
                 before_epoch: Any = None) -> None:
        self.n, self.batch_size, self.generator, self.min_size = int(n), int(batch_size), generator, int(min_size)
        self.before_epoch = before_epoch

    def __iter__(self):
        if self.before_epoch is not None:
            self.before_epoch()
        for idx in torch.randperm(self.n, generator=self.generator).split(self.batch_size):
            if len(idx) >= self.min_size:
                yield idx


class _Stage2Model(nn.Module):
    """What stage 2 trains: an aggregator and its encoder copy's FC head. Its state dict holds those
    parts only (``aggregator.*``, ``encoder.fc1.*`` ...), so its checkpoints stay small; the frozen
    backbone is the stage-1 encoder's."""

    def __init__(self, encoder: SliceEncoder, aggregator: Aggregator) -> None:
        super().__init__()
        self.encoder, self.aggregator = encoder, aggregator

    def state_dict(self, *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        out = {f"aggregator.{k}": v for k, v in self.aggregator.state_dict().items()}
        out.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items() if k.startswith(_HEAD_PREFIXES)})
        return out

    def load_state_dict(self, state: Dict[str, torch.Tensor], strict: bool = True):  # type: ignore[override]
        self.aggregator.load_state_dict({k[len("aggregator."):]: v for k, v in state.items() if k.startswith("aggregator.")},
                                        strict=strict)
        own = self.encoder.state_dict()
        head = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        if strict and set(head) != {k for k in own if k.startswith(_HEAD_PREFIXES)}:
            raise RuntimeError(f"_Stage2Model: the encoder head's keys differ, got {sorted(head)[:4]}")
        own.update(head)
        self.encoder.load_state_dict(own)
        return None


def train_two_stage(train_scans: Sequence[torch.Tensor], train_labels: Any,
                    val_scans: Optional[Sequence[torch.Tensor]] = None, val_labels: Any = None,
                    aggregators: Sequence[str] = STAGE2_AGGREGATORS, *, image_size: int = 224,
                    stage1_optimizer: str = "adam", stage1_lr: float = 0.01, stage1_batch_size: int = 192,
                    stage1_epochs: int = 400, stage1_patience: int = 10, stage2_optimizer: str = "sgd",
                    stage2_lr: float = 0.1, stage2_encoder_fc_lr: float = 1e-4, stage2_batch_size: int = 16,
                    stage2_epochs: int = 600, stage2_patience: int = 10, stage2_augment: bool = False,
                    weight_decay: float = 1e-4, max_degrees: float = 10.0, max_shift: float = 0.1,
                    lstm_options: Optional[Dict[str, Any]] = None, encoder: Optional[SliceEncoder] = None,
                    seed: int = 0, log: Any = print, out_dir: Optional[str] = None,
                    resume: bool = False) -> TwoStageResult:
    """Seed 002's two-stage training (§3.3) on scans given as their selected sagittal slices: one
    :class:`osteonet.train.Trainer` ``fit`` for stage 1, one per trained aggregator for stage 2.

    ``train_scans``/``val_scans``: lists of T_i x H x W tensors (the selected slices, intensity already
    windowed; any H x W: they are resized to ``image_size``), with one 0/1 label per scan.

    Stage 1 (§3.3.1): the slice encoder on single slices, every slice carrying its scan's label (BCE),
    random rotation + horizontal shift, ``stage1_optimizer`` with weight decay, the learning rate halved
    when the validation loss (training loss without a validation set) stops improving for
    ``stage1_patience`` epochs; the best epoch's weights are kept, then every BatchNorm is frozen.

    Stage 2 (§3.3.2): for each aggregator, a copy of the encoder whose FC layers are fine-tuned at
    ``stage2_encoder_fc_lr`` (``fc1`` for the LSTM, which reads the 32-d features; ``fc1`` and ``fc2``
    for max/mean, which read slice probabilities), the LSTM itself at ``stage2_lr``; scan-level BCE, the
    same plateau halving and best-epoch selection. The frozen backbone's pooled features are computed
    once (``stage2_augment=True`` recomputes them from augmented slices every epoch, as the paper
    augments in stage 2). Voting is a count with no gradient: it is used with the stage-1 encoder.

    ``out_dir``: each fit's checkpoints and logs in ``out_dir/stage1`` and ``out_dir/stage2_<aggregator>``;
    with ``resume``, an interrupted run continues from them and ends as an uninterrupted one would.
    """
    from .train import Trainer, freeze_batchnorm, make_schedule

    unknown = [a for a in aggregators if a not in AGGREGATOR_NAMES]
    if unknown or not aggregators:
        raise ValueError(f"train_two_stage: aggregators must be among {list(AGGREGATOR_NAMES)}, got {list(aggregators)}")
    if not train_scans:
        raise ValueError("train_two_stage: no training scans")
    if resume and not out_dir:
        raise ValueError("train_two_stage: resume=True needs out_dir, got out_dir=None")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y_tr = _labels_tensor(train_labels, len(train_scans), "train_labels")
    has_val = bool(val_scans)
    y_va = _labels_tensor(val_labels, len(val_scans), "val_labels") if has_val else None
    mean = pixel_mean(torch.cat([torch.as_tensor(s, dtype=torch.float32) for s in train_scans]), image_size)
    tr = _prepare(train_scans, image_size, mean)
    va = _prepare(val_scans, image_size, mean) if has_val else []
    bce = nn.functional.binary_cross_entropy_with_logits
    history: Dict[str, List[Dict[str, float]]] = {}
    folder = (lambda name: os.path.join(out_dir, name)) if out_dir else (lambda name: None)  # noqa: E731
    monitor = "val_loss" if has_val else "train_loss"

    # ---- stage 1: the slice encoder
    enc = encoder if encoder is not None else create_slice_encoder()
    X = torch.cat(tr)
    y = expand_scan_labels(y_tr, [t.shape[0] for t in tr])
    Xv = torch.cat(va) if has_val else None
    yv = expand_scan_labels(y_va, [t.shape[0] for t in va]) if has_val else None
    opt = _optimizer(stage1_optimizer, [{"params": [p for p in enc.parameters() if p.requires_grad],
                                         "lr": stage1_lr}], weight_decay)

    def slice_step(model: nn.Module, idx: torch.Tensor):
        xb = grey_to_rgb(random_rotate_shift(X[idx], max_degrees, max_shift))
        return bce(model(xb).reshape(-1), y[idx]), len(idx)

    def slice_val(model: nn.Module, epoch: int) -> Dict[str, float]:
        return {"val_loss": float(sum(bce(model(grey_to_rgb(xb)).reshape(-1), yb, reduction="sum")
                                      for xb, yb in zip(Xv.split(256), yv.split(256))) / max(1, len(yv)))}

    trainer = Trainer(enc, opt, make_schedule("plateau", factor=0.5, patience=int(stage1_patience)),
                      epochs=int(stage1_epochs), monitor=monitor, keep_best=True, out_dir=folder("stage1"),
                      generators=[gen], progress=log is not None)
    history["stage1"] = trainer.fit(_SliceBatches(len(X), stage1_batch_size, gen, min_size=2), slice_step,
                                    slice_val if has_val else None, resume=resume)
    freeze_batchnorm(enc)
    enc.eval()

    # ---- stage 2: aggregators on the 32-d features, the encoder's FC layers fine-tuned
    def pooled_of(scans: List[torch.Tensor], augment: bool) -> List[torch.Tensor]:
        enc.eval()
        with torch.no_grad():
            return [enc.backbone_features(grey_to_rgb(random_rotate_shift(s, max_degrees, max_shift) if augment else s))
                    for s in scans]

    p_tr, p_va = pooled_of(tr, False), pooled_of(va, False)
    models: Dict[str, Tuple[SliceEncoder, Aggregator]] = {}
    lstm_opts = dict(input_size=enc.embed_dim, hidden_size=256, num_layers=1, dropout=0.2)
    lstm_opts.update(lstm_options or {})
    for name in aggregators:
        enc_k = copy.deepcopy(enc)
        agg = create_aggregator(name, **(lstm_opts if name == "lstm" else {}))
        models[name] = (enc_k, agg)
        if name == "vote" or stage2_epochs <= 0:
            history[name] = []
            continue
        is_lstm = name == "lstm"
        groups = [{"params": encoder_fc_parameters(enc_k, include_output=not is_lstm), "lr": stage2_encoder_fc_lr}]
        if is_lstm:
            groups.insert(0, {"params": list(agg.parameters()), "lr": stage2_lr})
        opt = _optimizer(stage2_optimizer, groups, weight_decay)
        current = {"pooled": p_tr}

        def scan_loss(model: _Stage2Model, pooled: List[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
            feats = [model.encoder.embed(p) for p in pooled]
            if model.aggregator.takes_probabilities:
                prob = model.aggregator([torch.sigmoid(model.encoder.head(f)) for f in feats]).clamp(1e-6, 1 - 1e-6)
                return nn.functional.binary_cross_entropy(prob, labels)
            return bce(model.aggregator.forward_logits(feats), labels)

        def scan_step(model: _Stage2Model, idx: torch.Tensor):
            return scan_loss(model, [current["pooled"][i] for i in idx.tolist()], y_tr[idx]), len(idx)

        def augmented() -> None:
            current["pooled"] = pooled_of(tr, True)

        trainer = Trainer(_Stage2Model(enc_k, agg), opt, make_schedule("plateau", factor=0.5, patience=int(stage2_patience)),
                          epochs=int(stage2_epochs), monitor=monitor, keep_best=True, out_dir=folder(f"stage2_{name}"),
                          generators=[gen], progress=False)
        loader = _SliceBatches(len(p_tr), stage2_batch_size, gen, before_epoch=augmented if stage2_augment else None)
        history[name] = hist = trainer.fit(
            loader, scan_step, (lambda m, e: {"val_loss": float(scan_loss(m, p_va, y_va))}) if has_val else None,
            resume=resume)
        enc_k.eval()
        agg.eval()
        if log and hist:
            last = hist[-1]
            log(f"stage 2 {name}: {len(hist)} epochs, train_loss {last['train_loss']:.4g}"
                + (f" val_loss {last['val_loss']:.4g}" if "val_loss" in last else "")
                + f", best {trainer.early_stopping.best:.4g}")
    return TwoStageResult(enc, models, mean, int(image_size), history)


# ---- checkpoints (the ovf task, osteonet/tasks/ovf.py, predicts with them) -------------------------
OVF_CARD_VERSION = 1


def save_ovf_checkpoints(folder: Union[str, os.PathLike], result: TwoStageResult, center_fraction: float = 0.05,
                         min_slices: int = 1, window: Tuple[float, float] = (400.0, 1800.0), threshold: float = 0.5,
                         encoder_name: str = "encoder.pt") -> Dict[str, str]:
    """Writes ``encoder.pt`` (the stage-1 encoder) and one ``<aggregator>.pt`` per aggregator (``lstm.pt``,
    ...) into ``folder``, atomically. An aggregator checkpoint holds the aggregator's state, its
    fine-tuned encoder FC layers and everything :func:`load_ovf_checkpoint` needs to rebuild the
    pipeline (pixel mean, image size, centre fraction, HU window, threshold); it names the encoder
    checkpoint relative to its own folder. Returns name -> path."""
    from .io import write_bytes
    from .train import CHECKPOINT_VERSION, save_checkpoint
    from .train.checkpoint import serialize_checkpoint

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    enc_path = os.path.join(folder, encoder_name)
    save_checkpoint(enc_path, result.encoder, epoch=len(result.history.get("stage1", [])),
                    history=result.history.get("stage1", []))
    paths = {"encoder": enc_path}
    for name, (enc_k, agg) in result.models.items():
        card = {"version": OVF_CARD_VERSION, "task": "ovf", "aggregator": name, "aggregator_options": dict(agg.config),
                "encoder_config": dict(result.encoder.config), "encoder_checkpoint": encoder_name,
                "encoder_head": {k: v.detach().cpu() for k, v in enc_k.state_dict().items() if k.startswith(_HEAD_PREFIXES)},
                "pixel_mean": result.pixel_mean.detach().cpu(), "image_size": int(result.image_size),
                "center_fraction": float(center_fraction), "min_slices": int(min_slices),
                "window_center": float(window[0]), "window_width": float(window[1]), "threshold": float(threshold)}
        state = {"osteonet_checkpoint": CHECKPOINT_VERSION, "writer": "python", "epoch": len(result.history.get(name, [])),
                 "model": {k: v.detach().cpu().contiguous() for k, v in agg.state_dict().items()}, "schedule": {}, "extra": {},
                 "history": [{k: float(v) for k, v in r.items()} for r in result.history.get(name, [])], "ovf": card}
        paths[name] = os.path.join(folder, f"{name}.pt")
        write_bytes(paths[name], serialize_checkpoint(state, card_key="ovf"))
    return paths


def load_ovf_checkpoint(path: Union[str, os.PathLike]) -> Tuple[SliceEncoder, Aggregator, Dict[str, Any]]:
    """An aggregator checkpoint written by :func:`save_ovf_checkpoints` -> (encoder, aggregator, card), in
    eval mode. A file that is not one raises one ValueError naming it."""
    from .train import load_checkpoint
    from .train.checkpoint import _read

    path = os.fspath(path)
    state = _read(path)
    card = state.get("ovf")
    if not isinstance(card, dict) or card.get("task") != "ovf":
        raise ValueError(f"checkpoint {path}: not an OVF aggregator checkpoint (osteonet reproduce ovf writes "
                         "max.pt, mean.pt, vote.pt and lstm.pt beside encoder.pt)")
    enc_path = os.path.join(os.path.dirname(os.path.abspath(path)), card["encoder_checkpoint"])
    if not os.path.exists(enc_path):
        raise ValueError(f"checkpoint {path}: its encoder checkpoint {enc_path} is missing (keep them in one folder)")
    enc = create_slice_encoder(**card["encoder_config"])
    load_checkpoint(enc_path, enc, restore_rng=False)
    own = enc.state_dict()
    own.update(card["encoder_head"])
    enc.load_state_dict(own)
    agg = create_aggregator(card["aggregator"], **card["aggregator_options"])
    try:
        agg.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path}: the aggregator state does not fit {card['aggregator']!r} "
                         f"({first_line(e)})") from None
    return enc.eval(), agg.eval(), card
