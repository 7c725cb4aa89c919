"""`--fracture`: osteonet's vertebral-fracture classifier (seed 002's CNN/LSTM, osteonet.sequence) applied
to each vertebra, beside its morphometric Genant grade.

The classifier scores sagittal CT slices and aggregates them (max, mean, vote or LSTM); it was trained on
whole-scan sagittal stacks. Here each vertebra gets its own stack: the CT is reoriented to sagittal
(osteonet.sequence.reorient_to_sagittal) and windowed as in training, the sagittal slices through the
middle third of the body's width are taken, each cropped to a square of 2.5 body heights centred on the
body and resampled to square pixels; the pipeline (the checkpoint's own preprocessing) turns them into one
probability. The probability is the scan classifier's on that neighbourhood, not calibrated per vertebra.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["load_fracture_model", "vertebra_stack", "fracture_probabilities"]


def load_fracture_model(checkpoint: str):
    """(encoder, aggregator, card) of an OVF aggregator checkpoint (osteonet reproduce ovf: lstm.pt, ...)."""
    from ..sequence import load_ovf_checkpoint

    return load_ovf_checkpoint(checkpoint)


def vertebra_stack(sag: np.ndarray, sag_body: np.ndarray, spacing: Sequence[float], height_mm: float) -> Optional[torch.Tensor]:
    """The sagittal slices (T x S x S, values as in `sag`) around one body (`sag_body`: its mask in the
    same sagittal array, slices along axis 0, rows inferior, columns posterior)."""
    idx = np.nonzero(sag_body)
    if idx[0].size == 0:
        return None
    lo, hi = int(idx[0].min()), int(idx[0].max())
    third = max(1, (hi - lo + 1) // 3)
    slices = range(lo + third, max(lo + third + 1, hi - third + 1))
    ci, cj = float(idx[1].mean()), float(idx[2].mean())
    half = 1.25 * max(height_mm, 10.0)
    pix = min(spacing[1], spacing[2])
    size = max(8, int(round(2 * half / pix)))
    out = []
    for s in slices:
        img = torch.from_numpy(np.ascontiguousarray(sag[s], dtype=np.float32))[None, None]
        # Square pixels first, then the square crop around the body's centre (padded with the background).
        h, w = img.shape[2:]
        img = F.interpolate(img, size=(max(1, int(round(h * spacing[1] / pix))), max(1, int(round(w * spacing[2] / pix)))),
                            mode="bilinear", align_corners=False)
        cy, cx = ci * spacing[1] / pix, cj * spacing[2] / pix
        top, left = int(round(cy - size / 2)), int(round(cx - size / 2))
        pad = (max(0, -left), max(0, left + size - img.shape[3]), max(0, -top), max(0, top + size - img.shape[2]))
        img = F.pad(img, pad, value=0.0)
        top, left = top + pad[2], left + pad[0]
        out.append(img[0, 0, top:top + size, left:left + size])
    return torch.stack(out)


def fracture_probabilities(model, vol, vertebrae: List[Dict[str, Any]], bodies: Optional[np.ndarray] = None) -> List[Optional[float]]:
    """One probability per vertebra (None without a body), in `vertebrae`'s order. `bodies`: the body
    label map of osteonet.screen.measure (value = mask_value), on `vol`'s grid."""
    from ..io import window
    from ..sequence import ScanPipeline, reorient_to_sagittal

    enc, agg, card = model
    if bodies is None:
        raise ValueError("fracture_probabilities: the body label map is needed (osteonet.screen.measure's 'bodies')")
    sag = reorient_to_sagittal(window(vol.hu, card["window_center"], card["window_width"]), affine=vol.affine)
    sag_bodies = reorient_to_sagittal(bodies, affine=vol.affine)
    from nibabel import orientations as ornt

    tr = ornt.ornt_transform(ornt.io_orientation(vol.affine), ornt.axcodes2ornt(("L", "I", "P")))
    spacing = [0.0, 0.0, 0.0]
    for src, (dst, _flip) in enumerate(tr):
        spacing[int(dst)] = float(np.linalg.norm(vol.affine[:3, src]))
    pipe = ScanPipeline(enc, agg, center_fraction=1.0, min_slices=1, image_size=card["image_size"],
                        threshold=card["threshold"], pixel_mean=card["pixel_mean"])
    out: List[Optional[float]] = []
    for v in vertebrae:
        if not v["body_voxels"]:
            out.append(None)
            continue
        h = v["heights_mm"]
        height = max([x for x in (h["anterior"], h["middle"], h["posterior"]) if x is not None], default=25.0)
        stack = vertebra_stack(sag, sag_bodies == v["mask_value"], spacing, height)
        out.append(None if stack is None else float(pipe.predict_slices(stack)["probability"]))
    return out
