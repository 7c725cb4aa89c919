"""Task ``segmentation``: label maps by U-Net or U-Net++ (seeds 003 and 004: vertebral bodies on CT,
hip regions on radiographs; the real hip-xray masks of ../shared/data), 2-D, slice by slice for volumes.

Layout: ``manifest.csv`` with ``image`` and ``mask`` (pairs of the same size: PNG/JPEG images with PNG
label maps, DICOM files, DICOM series folders or NIfTI volumes with NIfTI masks), optionally
``patient_id`` or ``source_id`` (kept whole by the split); ``labels.csv`` (``value``, ``name``; 0 the
background) names the mask values. Without labels.csv the masks must hold 0 (background) and 1.

The stages the bmd and hip tasks share live here too: reading image/mask pairs, the segmenter's
training stage, and inference (:func:`segment`, the one path of evaluate and predict).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics as om
from ..train.distributed import is_main_process
from .base import Option, Samples, Task
from .inputs import Scan, input_name, read_mask, read_scan, to_unit, write_mask_nifti, write_mask_png
from .layout import group_column, groups_of, image_shape, label_table, manifest, where

DEFAULT_LABELS = {0: "background", 1: "foreground"}

#: the segmenter's options, shared by the segmentation, bmd and hip tasks (prefixed there)
SEGMENTER_OPTIONS = {
    "model": Option("unet", "choice", "segmenter", choices=("unet", "unet_plusplus")),
    "encoder": Option(None, "str", "a backbone as U-Net encoder (e.g. resnet34); none: the classic U-Net", nullable=True),
    "base_channels": Option(16, "int", "channels of the first level (doubling per level)", minimum=1),
    "depth": Option(4, "int", "levels", minimum=1),
    "deep_supervision": Option(False, "bool", "U-Net++: a loss on every head"),
    "image_size": Option(256, "int", "the side the segmenter runs at (masks are measured at full size)", minimum=16),
    "epochs": Option(30, "int", "training epochs", minimum=1),
    "batch_size": Option(8, "int", "batch size", minimum=1),
    "lr": Option(2e-3, "float", "AdamW learning rate (cosine schedule)", minimum=0.0),
    "class_weights": Option("balanced", "choice", "cross-entropy class weights: (frequency)^-1/2 or none",
                            choices=("balanced", "none")),
    "window_center": Option(400.0, "float", "HU window centre for DICOM / NIfTI inputs"),
    "window_width": Option(1800.0, "float", "HU window width for DICOM / NIfTI inputs", minimum=1.0),
}


# ------------------------------------------------------------------------------------------ tensors
def to_input(unit: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
    """[0, 1] images N x H x W -> float N x 1 x size x size (area resampling), standardised around mid-grey."""
    x = unit.unsqueeze(1).float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return (x - 0.5) / 0.25


def to_labels(masks: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
    """Label maps N x H x W (int) resized to size x size with nearest sampling."""
    if size is None or tuple(masks.shape[-2:]) == (size, size):
        return masks.long()
    return F.interpolate(masks.unsqueeze(1).float(), size=(size, size), mode="nearest").squeeze(1).long()


class FlipDataset(torch.utils.data.Dataset):
    """(x, y) pairs with a random horizontal flip of x (and of y when y is a label map)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, flip: bool = True) -> None:
        self.x, self.y, self.flip = x, y, flip

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        x, y = self.x[i], self.y[i]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
            if y.dim() >= 2:
                y = y.flip(-1)
        return x, y


# ------------------------------------------------------------------------------------------ stages
def build_segmenter(arch: Dict[str, Any]):
    from ..segmentation import create_segmenter

    return create_segmenter(arch["name"], in_chans=arch["in_chans"], num_classes=arch["num_classes"], **arch["options"])


def segmenter_arch(o: Dict[str, Any], num_labels: int, prefix: str = "") -> Dict[str, Any]:
    g = lambda k: o[prefix + k]  # noqa: E731
    opts: Dict[str, Any] = {"base_channels": g("base_channels"), "depth": g("depth")}
    if g("model") == "unet_plusplus":
        opts["deep_supervision"] = g("deep_supervision")
    elif g("deep_supervision"):
        raise ValueError(f"segmenter: deep_supervision is U-Net++'s, got model={g('model')!r} deep_supervision=True")
    if g("encoder"):
        if g("model") != "unet":
            raise ValueError(f"segmenter: an encoder backbone is U-Net's, got model={g('model')!r} encoder={g('encoder')!r}")
        opts = {"encoder": g("encoder"), "depth": g("depth")}
    return {"name": g("model"), "in_chans": 1, "num_classes": int(num_labels), "options": opts}


def train_segmenter(arch: Dict[str, Any], x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
                    out_dir: str, seed: int, progress: bool, class_weights=None, resume: bool = False):
    """The segmentation stage: AdamW, cosine schedule, combined cross-entropy + Dice loss, random flips."""
    from .. import train as ot
    from ..segmentation import segmentation_step

    ot.seed_everything(seed)
    model = build_segmenter(arch)
    loader = torch.utils.data.DataLoader(FlipDataset(x, y), batch_size=batch_size, shuffle=True,
                                         drop_last=len(x) > batch_size)
    opt = ot.create_optimizer("adamw", model, lr=lr, weight_decay=1e-4)
    trainer = ot.Trainer(model, opt, ot.make_schedule("cosine", t_max=max(1, epochs)), epochs=epochs, out_dir=out_dir,
                         seed=seed, progress=progress)
    trainer.fit(loader, segmentation_step(class_weights=class_weights), resume=resume)
    return model.eval()


def segmentation_stage(samples: Samples, train: Sequence[int], o: Dict[str, Any], out_dir: str, seed: int,
                       progress: bool, resume: bool, num_labels: int, where_: str, one_size: bool = True):
    """The segmentation stage of the segmentation, bmd and hip tasks (``o``: the segmenter's options under the
    segmentation task's names, as :func:`osteonet.tasks.bmd.seg_view` gives them): the training slices at
    full size (``one_size``: all of one size, as the cut-out stages need), the segmenter trained on them at
    its input size. Returns (model, arch, images, labels, training labels at the input size, class weights)."""
    from ..segmentation import balanced_class_weights

    window = (o["window_center"], o["window_width"])
    unit, labels, _ = stack_pairs(samples, train, window)
    if one_size and not isinstance(unit, torch.Tensor):
        raise ValueError(f"{where_}: the images must share one size, got several in {samples.folder}")
    xs, ys = resized_pairs(unit, labels, o["image_size"])
    weights = balanced_class_weights(ys, num_labels) if o["class_weights"] == "balanced" else None
    arch = segmenter_arch(o, num_labels)
    seg = train_segmenter(arch, xs, ys, o["epochs"], o["batch_size"], o["lr"], out_dir, seed, progress, weights, resume)
    return seg, arch, unit, labels, ys, weights


def segment(model: torch.nn.Module, unit: torch.Tensor, size: int, chunk: int = 16) -> torch.Tensor:
    """Label maps (uint8 N x H x W, at the images' own size) of [0, 1] images N x H x W of one size, the
    segmenter run at ``size``: the one inference path of training (cut-outs), evaluate and predict."""
    from ..segmentation import predict_labels

    out = [predict_labels(model, to_input(unit[i:i + chunk], size), out_size=unit.shape[-2:]).to(torch.uint8)
           for i in range(0, unit.shape[0], chunk)]
    return torch.cat(out)


def mask_digest(mask: np.ndarray) -> str:
    """A short fingerprint of a label stack (evaluate and predict records compare with it)."""
    m = np.ascontiguousarray(np.asarray(mask).astype(np.uint8))
    return hashlib.sha1(m.tobytes() + str(m.shape).encode()).hexdigest()[:16]


def group_bootstrap(values: np.ndarray, groups: Sequence[str], seed: int = 0, n: int = 1000) -> Optional[List[float]]:
    """95 % percentile interval of the mean of ``values`` (NaN skipped), resampling whole groups (patients,
    sources): copies of one radiograph do not count as independent evidence. None with fewer than 2 groups."""
    values = np.asarray(values, dtype=np.float64)
    keys = sorted(set(groups))
    if len(keys) < 2 or np.all(np.isnan(values)):
        return None
    members = [np.array([i for i, g in enumerate(groups) if g == k]) for k in keys]

    def mean_of(picked):
        idx = np.concatenate([members[int(k)] for k in picked])
        v = values[idx]
        return float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")

    r = om.bootstrap_ci(mean_of, np.arange(len(keys)), n_resamples=n, seed=seed)
    return [r["ci_low"], r["ci_high"]]


def overlap_scores(pred: np.ndarray, true: np.ndarray, num_labels: int) -> Tuple[np.ndarray, np.ndarray]:
    """(Dice, IoU) of each foreground label (K - 1) between two label stacks of one sample (NaN where the
    label is absent from both)."""
    p = torch.from_numpy(np.asarray(pred).reshape(1, -1, pred.shape[-1]).astype(np.int64))
    t = torch.from_numpy(np.asarray(true).reshape(1, -1, true.shape[-1]).astype(np.int64))
    return (np.asarray(om.dice(p, t, num_classes=num_labels, reduction="none"))[0],
            np.asarray(om.iou(p, t, num_classes=num_labels, reduction="none"))[0])


# ------------------------------------------------------------------------------------------ data
def read_pairs(folder: str, task: str, extra: Sequence[str] = (), labels_required: bool = False,
               default_labels: Optional[Dict[int, str]] = None) -> Samples:
    """Image/mask pairs of a manifest (the segmentation layout; bmd and hip add ``extra`` columns)."""
    rows = manifest(folder, task, ("image", "mask", *extra), files=("image", "mask"))
    col = group_column(rows, folder)
    table = label_table(folder, labels_required, DEFAULT_LABELS if default_labels is None else default_labels)
    ids = [r["image"] for r in rows]
    return Samples(folder, ids, groups_of(rows, col, ids), [""] * len(rows), rows, col, {"labels": table})


def check_pairs(samples: Samples) -> None:
    """Every image and mask readable, of one size, the mask's values in the label table."""
    folder, table = samples.folder, samples.info["labels"]
    has_table = os.path.exists(os.path.join(folder, "labels.csv"))
    for r in samples.rows:
        img, msk = os.path.join(folder, r["image"]), os.path.join(folder, r["mask"])
        shape = image_shape(img)
        if len(shape) == 2:
            shape = (1, *shape)
        else:  # a volume: its shape in the orientation the tasks read it
            shape = read_scan(img).array.shape
        raw = read_mask(msk)
        if raw.shape != tuple(shape):
            raise ValueError(f"{where(folder, r)}: field 'mask' names a {'x'.join(map(str, raw.shape))} mask for a "
                             f"{'x'.join(map(str, shape))} image (slices x rows x columns)")
        unknown = sorted(set(np.unique(raw).astype(int).tolist()) - set(table))
        if unknown:
            what = "labels.csv" if has_table else "the default table (0 background, 1 foreground; write labels.csv)"
            raise ValueError(f"{msk}: mask values {unknown} are not in {what}, which has {sorted(table)}")


def load_pair(samples: Samples, j: int, window: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray, Scan]:
    """(image [0, 1] S x H x W, class indices S x H x W, the image's scan) of sample ``j``."""
    r = samples.rows[j]
    scan = read_scan(os.path.join(samples.folder, r["image"]))
    raw = read_mask(os.path.join(samples.folder, r["mask"]), like=scan)
    lut = np.zeros(256, dtype=np.int64)
    for k, v in enumerate(samples.info["labels"]):
        lut[v] = k
    return to_unit(scan, *window), lut[np.clip(raw, 0, 255)], scan


def stack_pairs(samples: Samples, indices: Sequence[int], window: Tuple[float, float]):
    """Every slice of the samples ``indices``: (images N x H x W, labels N x H x W, sample index per slice)
    when all slices share one size; else lists."""
    imgs, labs, owner = [], [], []
    for j in indices:
        u, lab, _ = load_pair(samples, j, window)
        imgs += list(u)
        labs += list(lab)
        owner += [j] * len(u)
    if len({a.shape for a in imgs}) == 1:
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labs)), owner
    return [torch.from_numpy(a) for a in imgs], [torch.from_numpy(a) for a in labs], owner


def resized_pairs(imgs, labs, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Training tensors at ``size``: inputs N x 1 x size x size and labels N x size x size."""
    if isinstance(imgs, torch.Tensor):
        return to_input(imgs, size), to_labels(labs, size)
    return (torch.cat([to_input(a[None], size) for a in imgs]), torch.cat([to_labels(b[None], size) for b in labs]))


def segment_scan(model: torch.nn.Module, unit: np.ndarray, size: int) -> np.ndarray:
    """Label stack (S x H x W uint8) of one sample's [0, 1] slices."""
    return segment(model, torch.from_numpy(np.ascontiguousarray(unit)), size).numpy()


def overlay_png(path: str, images: List[np.ndarray], truths: List[np.ndarray], preds: List[np.ndarray],
                titles: List[str], num_labels: int, notice: Optional[str] = None, predicted_only: bool = False) -> None:
    from .. import figures

    figures.mask_overlay_png(path, images, truths, preds,
                             [t + ("\nSYNTHETIC-DATA MODEL: not a finding" if notice else "") for t in titles],
                             num_labels=num_labels, heading=PREDICTED if predicted_only else HEADING)


HEADING = "reference (solid) and predicted (dashed) outlines"
PREDICTED = "predicted outlines (dashed)"


def middle(stack: np.ndarray) -> np.ndarray:
    return np.asarray(stack)[len(stack) // 2]


def area_per_pixel(scan: Scan) -> float:
    return float(scan.spacing[1] * scan.spacing[2])


class SegmentationTask(Task):
    name = "segmentation"
    title = "label maps by U-Net / U-Net++ (vertebral bodies, hip regions, hip-xray bone masks)"
    layout = ("manifest.csv: image, mask (same size; PNG/JPEG + PNG, DICOM, DICOM series or NIfTI + NIfTI), optional "
              "patient_id or source_id; labels.csv: value, name (0 background; absent: 0/1 masks)")
    inputs = "an image, a DICOM file or series folder, or a NIfTI volume (segmented slice by slice)"
    options = dict(SEGMENTER_OPTIONS)

    def check_options(self, o, where_):
        segmenter_arch(o, 2)

    def read(self, folder: str) -> Samples:
        return read_pairs(folder, self.name)

    def check_data(self, folder: str) -> Dict[str, Any]:
        s = self.read(folder)
        check_pairs(s)
        return {**s.counts(), "labels": {str(k): v for k, v in s.info["labels"].items()}}

    def fit(self, samples, train, o, run_dir, seed, resume, progress):
        table = samples.info["labels"]
        window = (o["window_center"], o["window_width"])
        model, arch, _, _, ys, weights = segmentation_stage(samples, train, o, self.stage_dir(run_dir, "segmenter"), seed,
                                                            progress, resume, len(table), "train --task segmentation",
                                                            one_size=False)
        # trivial baseline: every pixel gets the label most training masks have there
        counts = torch.stack([(ys == k).sum(0) for k in range(len(table))])
        if is_main_process():
            write_mask_png(os.path.join(run_dir, "baseline_mask.png"), counts.argmax(0).numpy())
        bundle = {"model": model, "labels": table, "image_size": o["image_size"], "window": list(window),
                  "baseline_mask": counts.argmax(0).numpy()}
        part = {"architecture": {"segmenter": arch}, "labels": {str(k): v for k, v in table.items()},
                "preprocessing": {"image_size": o["image_size"], "window": list(window),
                                  "normalise": "(x - 0.5) / 0.25 of [0, 1] values"},
                "checkpoints": {"segmenter": "segmenter/last.pt"}, "baseline_mask": "baseline_mask.png",
                "class_weights": weights}
        return bundle, part

    def load(self, card, run_dir):
        from ..io import read_image
        from ..train import load_checkpoint

        model = build_segmenter(card["architecture"]["segmenter"])
        load_checkpoint(os.path.join(run_dir, card["checkpoints"]["segmenter"]), model, restore_rng=False)
        pre = card["preprocessing"]
        return {"model": model.eval(), "labels": {int(k): v for k, v in card["labels"].items()},
                "image_size": pre["image_size"], "window": pre["window"],
                "baseline_mask": read_image(os.path.join(run_dir, card["baseline_mask"])).astype(np.int64)}

    def evaluate(self, bundle, samples, indices, out, seed=0, baseline=None):
        table = bundle["labels"]
        if list(samples.info["labels"]) != list(table):
            raise ValueError(f"{samples.folder}: its label table {samples.info['labels']} differs from the model's {table}")
        names = list(table.values())[1:]
        K = len(table)
        window = tuple(bundle["window"])
        per, base_bg, base_mean, preds = [], [], [], []
        show: List[Tuple[np.ndarray, np.ndarray, np.ndarray, str]] = []
        for j in indices:
            unit, truth, scan = load_pair(samples, j, window)
            pred = segment_scan(bundle["model"], unit, bundle["image_size"])
            d, i = overlap_scores(pred, truth, K)
            per.append((d, i))
            base_bg.append(overlap_scores(np.zeros_like(truth), truth, K)[1])
            bm = F.interpolate(torch.from_numpy(bundle["baseline_mask"])[None, None].float(), size=truth.shape[-2:],
                               mode="nearest")[0, 0].long().numpy()
            base_mean.append(overlap_scores(np.broadcast_to(bm, truth.shape), truth, K)[1])
            preds.append({"id": samples.ids[j], **self.record(pred, table, scan), "dice": dict(zip(names, map(_f, d))),
                          "iou": dict(zip(names, map(_f, i)))})
            if len(show) < 4:
                show.append((middle(unit), middle(truth), middle(pred), f"{input_name(samples.ids[j])} IoU {np.nanmean(i):.2f}"))
        groups = [samples.groups[j] for j in indices]
        dice = np.array([p[0] for p in per])
        iou = np.array([p[1] for p in per])
        metrics: Dict[str, Any] = {"labels": names, "per_label": {}}
        for k, name in enumerate(names):
            metrics["per_label"][name] = {
                "dice": _f(np.nanmean(dice[:, k])), "dice_ci": group_bootstrap(dice[:, k], groups, seed),
                "iou": _f(np.nanmean(iou[:, k])), "iou_ci": group_bootstrap(iou[:, k], groups, seed),
                "n": int(np.sum(~np.isnan(iou[:, k])))}
        mean_iou = np.nanmean(iou, axis=1)
        metrics["mean_iou"] = _f(np.nanmean(mean_iou))
        metrics["mean_iou_ci"] = group_bootstrap(mean_iou, groups, seed)
        metrics["mean_dice"] = _f(np.nanmean(np.nanmean(dice, axis=1)))
        metrics["mean_dice_ci"] = group_bootstrap(np.nanmean(dice, axis=1), groups, seed)
        for key, vals, what in (("all_background", base_bg, "every pixel background"),
                                ("training_mean_mask", base_mean, "every image gets the per-pixel most common training label")):
            v = np.nanmean(np.array(vals), axis=1)
            metrics.setdefault("baselines", {})[key] = {"method": what, "mean_iou": _f(np.nanmean(v)),
                                                        "mean_iou_ci": group_bootstrap(v, groups, seed)}
        metrics["ci_method"] = "95 % percentile bootstrap over groups (patients / sources), 1000 resamples"
        os.makedirs(out, exist_ok=True)
        overlay_png(os.path.join(out, "masks.png"), *[list(t) for t in zip(*show)], num_labels=K)
        return metrics, preds

    @staticmethod
    def record(pred: np.ndarray, table: Dict[int, str], scan: Scan) -> Dict[str, Any]:
        """What evaluate and predict both say about one predicted label stack."""
        names = list(table.values())
        px = {names[k]: int((pred == k).sum()) for k in range(1, len(names))}
        out: Dict[str, Any] = {"pixels": px, "mask_sha1": mask_digest(pred)}
        if scan.kind != "image":  # DICOM and NIfTI know their voxel size
            unit = area_per_pixel(scan) * (scan.spacing[0] if scan.is_volume else 1.0)
            out["volume_mm3" if scan.is_volume else "area_mm2"] = {k: round(v * unit, 3) for k, v in px.items()}
        return out

    def headline(self, m):
        ci = m.get("mean_iou_ci") or [float("nan")] * 2
        b = m["baselines"]
        return (f"mean IoU {m['mean_iou']:.3f} (95 % CI {ci[0]:.3f}-{ci[1]:.3f}); baselines: all background "
                f"{b['all_background']['mean_iou']:.3f}, training mean mask {b['training_mean_mask']['mean_iou']:.3f}")

    def predict(self, bundle, input_path, out, options):
        table = bundle["labels"]
        scan = read_scan(input_path)
        unit = to_unit(scan, *bundle["window"])
        pred = segment_scan(bundle["model"], unit, bundle["image_size"])
        name = input_name(input_path)
        res: Dict[str, Any] = {"_name": name, "labels": {str(k): v for k, v in table.items()}, **self.record(pred, table, scan)}
        res["mask_nifti"] = write_mask_nifti(os.path.join(out, f"{name}_mask.nii.gz"), scan, pred)
        if not scan.is_volume:
            res["mask_png"] = write_mask_png(os.path.join(out, f"{name}_mask.png"), pred[0])
        res["picture"] = os.path.join(out, f"{name}.png")
        overlay_png(res["picture"], [middle(unit)], [np.zeros_like(middle(pred))], [middle(pred)], [name], len(table),
                    options.get("_notice"), predicted_only=True)
        return res


def _f(v: Any) -> Optional[float]:
    v = float(v)
    return None if np.isnan(v) else v


TASK = SegmentationTask()
