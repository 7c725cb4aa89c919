"""3-D lumbar spine CT volumes with exact ground truth, for the screen (osteonet.screen) and its tests.

The anatomy is built analytically in patient space (RAS mm) and sampled at the voxel centres of any
grid (anisotropic spacing, any axis order and direction, oblique), so the same spine can be written in
many orientations and the truth does not depend on the grid:

- Vertebrae T11-L5 along a lordotic arc in the mid-sagittal plane (each vertebra's superior axis is
  the arc's tangent at its centre; consecutive vertebrae are equally spaced along the arc), the whole
  spine optionally rolled and tilted in the scanner. A vertebral body is an elliptic cylinder of depth
  D and width W; its height along the vertebra's superior axis is a profile h(u) over the normalised
  antero-posterior position u (0 posterior wall, 1 anterior wall):
  intact h = H; wedge (superior endplate tilted): h = H (1 - L (u - 0.15) / 0.7), so the anterior
  column (u = 0.85) has lost L and the posterior column (u = 0.15) none; biconcave (both endplates
  dished): h = H (1 - L b(u)), b a flat-bottomed dish: 1 for |u - 0.5| <= 0.1, falling as cos² to 0
  at |u - 0.5| = 0.28 (the middle column has lost L, the anterior and posterior columns none); crush:
  h = H (1 - L) everywhere.
- A 1 mm cortex (700 HU above the trabecular value), a trabecular interior of a chosen HU per
  vertebra, discs (80 HU), the spinal canal (CSF, 15 HU), posterior elements (pedicles, lamina,
  spinous and transverse processes; 650 HU), the sacrum below L5, soft tissue (40 HU) inside a fat
  layer (-100 HU) and air outside the body.
- The scanner: a Gaussian point-spread function (sigma 0.6 mm), white noise (10 HU), HU quantised to
  0.5 (so the series can be written with a rescale slope of 0.5).

Truth per vertebra (VertebraTruth): its trabecular HU, the column heights at u = 0.85 / 0.5 / 0.15
(the screen's anterior, middle and posterior columns), the body volume (the profile integrated over the
ellipse), whether the body is cut by the field of view, and the reference height, height loss and
Genant grade by the screen's documented rule (docs/screen.md) evaluated on the exact heights. Label maps:
whole vertebrae in TotalSegmentator's `total` numbering (27 L5 ... 33 T11, 25 sacrum) and vertebral
bodies/discs in its `vertebrae_body` numbering (1 body, 2 disc).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

__all__ = ["SPINE_LEVELS", "TOTAL_LABELS", "VertebraSpec", "VertebraTruth", "SpineVolume", "default_specs",
           "grid_affine", "spine_volume", "genant_truth"]

SPINE_LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")
#: TotalSegmentator `total` label values of the structures the generator draws.
TOTAL_LABELS = {"T11": 33, "T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "sacrum": 25}
COLUMNS = (0.85, 0.5, 0.15)  # anterior, middle, posterior column positions u (0 posterior wall)
DEFORMITIES = ("", "wedge", "biconcave", "crush")


@dataclasses.dataclass
class VertebraSpec:
    """One vertebra: intact body height, depth and width (mm), trabecular HU, deformity and its loss."""

    name: str
    height_mm: float
    depth_mm: float
    width_mm: float
    hu: float
    deformity: str = ""
    loss: float = 0.0  # fraction of the intact height lost at the deformity's column


@dataclasses.dataclass
class VertebraTruth:
    name: str
    label: int  # TotalSegmentator `total` value
    hu: float
    heights_mm: Tuple[float, float, float]  # anterior, middle, posterior column
    volume_ml: float
    complete: bool
    deformity: str
    designed_loss: float
    centroid_mm: Tuple[float, float, float]
    superior: Tuple[float, float, float]
    anterior: Tuple[float, float, float]
    reference_height_mm: float = float("nan")
    height_loss: float = float("nan")
    genant_grade: Optional[int] = None
    body_in_view: bool = True  # False: only posterior elements of this vertebra are in the field of view


@dataclasses.dataclass
class SpineVolume:
    hu: np.ndarray  # float32, HU in steps of 0.5
    affine: np.ndarray  # 4 x 4 voxel -> RAS mm
    vertebrae: np.ndarray  # uint8, TotalSegmentator `total` values (whole vertebrae, sacrum)
    bodies: np.ndarray  # uint8, `vertebrae_body` values (1 body, 2 disc)
    truth: List[VertebraTruth]

    def truth_by_name(self) -> Dict[str, VertebraTruth]:
        return {t.name: t for t in self.truth}

    def write_nifti(self, folder: str) -> Dict[str, str]:
        """ct.nii.gz (float32 HU), vertebrae.nii.gz and bodies.nii.gz (uint8) into `folder`."""
        from .writers import write_nifti

        paths = {k: os.path.join(folder, f"{k}.nii.gz") for k in ("ct", "vertebrae", "bodies")}
        write_nifti(paths["ct"], self.hu.astype(np.float32), self.affine)
        write_nifti(paths["vertebrae"], self.vertebrae, self.affine)
        write_nifti(paths["bodies"], self.bodies, self.affine)
        return paths

    def write_dicom(self, folder: str, seed: int = 0, rescale: Tuple[float, float] = (0.5, -1024.0)) -> List[str]:
        """The CT as a DICOM series (array axis 0 = slices), RescaleSlope 0.5 by default."""
        import pydicom

        from .writers import write_ct_series

        uid = lambda *p: pydicom.uid.generate_uid(entropy_srcs=["osteonet-spine", str(seed), *p])  # noqa: E731
        return write_ct_series(folder, self.hu, self.affine, patient_id=f"SPINE{seed:04d}", study_uid=uid("study"),
                               series_uid=uid("series"), frame_of_reference_uid=uid("for"), rescale=rescale,
                               description="osteonet synthetic lumbar spine CT")


def default_specs(rng: Optional[np.random.Generator] = None, levels: Sequence[str] = SPINE_LEVELS) -> List[VertebraSpec]:
    """Intact vertebrae with heights rising from T11 to L5 (about 22 to 27 mm), depth 28-34 mm, width
    38-50 mm, and a trabecular HU per vertebra (drawn around 150 HU when `rng` is given)."""
    specs = []
    for i, name in enumerate(levels):
        f = i / max(1, len(SPINE_LEVELS) - 1)
        hu = 150.0 if rng is None else float(rng.uniform(40, 260))
        specs.append(VertebraSpec(name, height_mm=22.0 + 5.0 * f, depth_mm=28.0 + 6.0 * f, width_mm=38.0 + 12.0 * f, hu=hu))
    return specs


_CODES = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


def _rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    t = np.deg2rad(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def grid_affine(shape: Sequence[int], spacing: Sequence[float], axcodes: str = "SPL", oblique_deg: float = 0.0,
                oblique_axis: Sequence[float] = (1.0, 0.0, 0.0), center_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The affine of a grid whose array axes run towards `axcodes` (e.g. "SPL": slices towards superior,
    rows towards posterior, columns towards left — an axial DICOM series as osteonet reads it; "RAS";
    "LIP": sagittal) with `spacing` mm, rotated by `oblique_deg` about `oblique_axis`, centred on `center_mm`."""
    codes = str(axcodes).upper()
    if len(codes) != 3 or any(c not in _CODES for c in codes) or \
            sorted(int(np.flatnonzero(_CODES[c])[0]) for c in codes) != [0, 1, 2]:
        raise ValueError(f"grid_affine: axcodes must name three different axes from R/L, A/P, S/I, got axcodes={axcodes!r}")
    m = np.stack([np.asarray(_CODES[c], np.float64) * float(s) for c, s in zip(codes, spacing)], axis=1)
    m = _rotation(oblique_axis, oblique_deg) @ m
    aff = np.eye(4)
    aff[:3, :3] = m
    half = (np.asarray(shape, np.float64) - 1) / 2
    aff[:3, 3] = np.asarray(center_mm, np.float64) - m @ half
    return aff


def genant_truth(heights: List[Optional[Tuple[float, float, float]]], span: int = 2) -> List[Tuple[float, float, Optional[int]]]:
    """The screen's reference height, height loss and Genant grade (docs/screen.md) from exact column
    heights (None for a vertebra cut by the field of view): reference = max(own tallest column, median
    of the tallest columns of the complete vertebrae within `span` positions)."""
    out = []
    for i, h in enumerate(heights):
        if h is None:
            out.append((float("nan"), float("nan"), None))
            continue
        neigh = [max(o) for j, o in enumerate(heights) if o is not None and j != i and abs(j - i) <= span]
        ref = max(max(h), float(np.median(neigh))) if neigh else max(h)
        loss = max(0.0, 1.0 - min(h) / ref)
        grade = 0 if loss < 0.20 else 1 if loss < 0.25 else 2 if loss <= 0.40 else 3
        out.append((ref, loss, grade))
    return out


def _profile(spec: VertebraSpec, u: np.ndarray) -> np.ndarray:
    """Height fraction h(u) / H and the share of the loss taken from the superior endplate."""
    if spec.deformity == "wedge":
        return 1.0 - spec.loss * (u - 0.15) / 0.7
    if spec.deformity == "biconcave":
        x = np.clip((np.abs(u - 0.5) - 0.1) / 0.18, 0.0, 1.0)
        return 1.0 - spec.loss * np.cos(x * np.pi / 2) ** 2
    if spec.deformity == "crush":
        return np.full_like(u, 1.0 - spec.loss)
    if spec.deformity:
        raise ValueError(f"spine_volume: deformity must be one of {DEFORMITIES}, got deformity={spec.deformity!r}")
    return np.ones_like(u)


def _endplates(spec: VertebraSpec, u: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inferior and superior endplate positions along the vertebra's superior axis (mm from the centre
    of the intact body): wedge and crush lower the superior endplate, biconcave moves both inwards."""
    h = spec.height_mm * _profile(spec, u)
    lost = spec.height_mm - h
    if spec.deformity == "biconcave":
        return -spec.height_mm / 2 + lost / 2, spec.height_mm / 2 - lost / 2
    return np.full_like(h, -spec.height_mm / 2), spec.height_mm / 2 - lost


def _body_volume_ml(spec: VertebraSpec) -> float:
    a = np.linspace(-spec.depth_mm / 2, spec.depth_mm / 2, 20001)
    u = (a + spec.depth_mm / 2) / spec.depth_mm
    chord = spec.width_mm * np.sqrt(np.clip(1 - (2 * a / spec.depth_mm) ** 2, 0, None))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it (trapz goes)
    return float(trapezoid(spec.height_mm * _profile(spec, u) * chord, a) / 1000.0)


class _Sampler:
    """World coordinates of the voxel centres of a grid, box by box."""

    def __init__(self, shape: Sequence[int], affine: np.ndarray) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.affine = np.asarray(affine, np.float64)
        self.inv = np.linalg.inv(self.affine)

    def box(self, center: np.ndarray, radius: float):
        """(index slices, world coords [3, ...]) of the voxels within a cube of half-size `radius` mm."""
        corners = np.array([[center[0] + sx * radius, center[1] + sy * radius, center[2] + sz * radius, 1.0]
                            for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        idx = (self.inv @ corners.T)[:3]
        lo = np.maximum(np.floor(idx.min(1)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(idx.max(1)).astype(int) + 2, self.shape)
        if np.any(hi <= lo):
            return None, None
        grids = np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)], indexing="ij")
        world = np.tensordot(self.affine[:3, :3], np.stack(grids), axes=1) + self.affine[:3, 3][:, None, None, None]
        return tuple(slice(a, b) for a, b in zip(lo, hi)), world


def spine_volume(shape: Sequence[int] = (110, 170, 170), spacing: Sequence[float] = (1.5, 0.8, 0.8), axcodes: str = "SPL",
                 specs: Optional[Sequence[VertebraSpec]] = None, lordosis_deg: float = 30.0, roll_deg: float = 0.0,
                 tilt_deg: float = 0.0, oblique_deg: float = 0.0, center_level: str = "L3", disc_mm: float = 9.0,
                 noise_hu: float = 10.0, psf_mm: float = 0.6, seed: int = 0, shift_mm: Sequence[float] = (0.0, 0.0, 0.0),
                 affine: Optional[np.ndarray] = None) -> SpineVolume:
    """A lumbar spine CT with exact truth (see the module docstring). The grid: `shape` voxels of
    `spacing` mm along array axes running towards `axcodes`, turned by `oblique_deg` about the
    anterior axis (or any `affine`); the spine: `specs` (default :func:`default_specs`) along an arc of
    `lordosis_deg`, rolled by `roll_deg` about the superior axis and tilted by `tilt_deg` about the
    right axis, `center_level`'s body centred in the field of view (+ `shift_mm`)."""
    rng = np.random.default_rng(seed)
    specs = list(specs) if specs is not None else default_specs()
    names = [s.name for s in specs]
    if center_level not in names:
        raise ValueError(f"spine_volume: center_level must be one of {names}, got center_level={center_level!r}")
    for s in specs:
        if s.deformity not in DEFORMITIES:
            raise ValueError(f"spine_volume: deformity must be one of {DEFORMITIES}, got deformity={s.deformity!r}")
        if s.name not in TOTAL_LABELS:
            raise ValueError(f"spine_volume: vertebra names must be among {SPINE_LEVELS}, got name={s.name!r}")
        if not 0 <= s.loss < 0.8:
            raise ValueError(f"spine_volume: loss must be in [0, 0.8), got loss={s.loss} for {s.name}")
    shape = tuple(int(v) for v in shape)

    # Arc from the top vertebra down; theta: angle of the superior axis from +S towards +A.
    lengths = [s.height_mm for s in specs]
    pos = [0.0]
    for i in range(1, len(specs)):
        pos.append(pos[-1] - (lengths[i - 1] / 2 + disc_mm + lengths[i] / 2))
    total = -pos[-1] if len(specs) > 1 else 1.0
    kappa = np.deg2rad(lordosis_deg) / total
    theta = lambda sigma: -np.deg2rad(lordosis_deg) / 2 - kappa * sigma  # noqa: E731  (top: posterior tilt)

    def arc_point(sigma):
        # Integral of (0, sin theta, cos theta) from 0 to sigma (theta linear in sigma).
        t0, t1 = theta(0.0), theta(sigma)
        if abs(kappa) < 1e-12:
            return np.array([0.0, sigma * np.sin(t0), sigma * np.cos(t0)])
        return np.array([0.0, (np.cos(t0) - np.cos(t1)) / (-kappa), (np.sin(t1) - np.sin(t0)) / (-kappa)])

    pose = _rotation((0, 0, 1), roll_deg) @ _rotation((1, 0, 0), tilt_deg)
    frames = []
    for s, sigma in zip(specs, pos):
        th = theta(sigma)
        e_s = pose @ np.array([0.0, np.sin(th), np.cos(th)])
        e_a = pose @ np.array([0.0, np.cos(th), -np.sin(th)])
        e_r = np.cross(e_a, e_s)
        frames.append((pose @ arc_point(sigma), e_s, e_a, e_r))
    origin = frames[names.index(center_level)][0] - np.asarray(shift_mm, np.float64)
    frames = [(c - origin, es, ea, er) for c, es, ea, er in frames]

    if affine is None:
        affine = grid_affine(shape, spacing, axcodes, oblique_deg=oblique_deg, oblique_axis=(0, 1, 0))
    sampler = _Sampler(shape, affine)

    hu = np.full(shape, -1000.0)
    vert = np.zeros(shape, np.uint8)
    bodies = np.zeros(shape, np.uint8)
    # Patient outline (axial ellipse around the spine's mid-line), fat layer, soft tissue.
    full = sampler.box(np.zeros(3), 1e4)[1]
    ex, ey = full[0], full[1] - frames[names.index(center_level)][0][1] - 40.0
    outline = (ex / 170.0) ** 2 + (ey / 125.0) ** 2
    hu[outline <= 1.0] = -100.0
    hu[outline <= (1 - 18.0 / 125.0) ** 2] = 40.0
    del full, ex, ey, outline

    def local(world, frame):
        c, es, ea, er = frame
        d = world - c[:, None, None, None]
        return (np.tensordot(es, d, axes=1), np.tensordot(ea, d, axes=1), np.tensordot(er, d, axes=1))

    canal_a, canal_r = 7.5, 9.0  # canal half-axes (antero-posterior, lateral)
    truths = []
    bone_stamps = []
    for i, (spec, frame) in enumerate(zip(specs, frames)):
        D, W, H = spec.depth_mm, spec.width_mm, spec.height_mm
        sl, world = sampler.box(frame[0], max(D / 2 + 45.0, W / 2 + 20.0, H / 2 + disc_mm))
        if sl is None:
            continue
        s, a, r = local(world, frame)
        u = (a + D / 2) / D
        ell = (2 * a / D) ** 2 + (2 * r / W) ** 2
        lo_e, hi_e = _endplates(spec, np.clip(u, 0, 1))
        body = (ell <= 1.0) & (s >= lo_e) & (s <= hi_e)
        t = 1.0  # cortex
        inner = ((2 * a / (D - 2 * t)) ** 2 + (2 * r / (W - 2 * t)) ** 2 <= 1.0) & (s >= lo_e + t) & (s <= hi_e - t)
        # Disc below this vertebra, and disc tissue filling what a deformity took from the intact body.
        disc = (ell <= 1.0) & (((s < lo_e) & (s > -H / 2 - disc_mm)) | ((s > hi_e) & (s < H / 2 + 0.5)))
        # Canal and posterior elements (relative to the posterior wall a = -D/2).
        wall = -D / 2
        ca = wall - canal_a  # canal centre along a
        canal = ((a - ca) / canal_a) ** 2 + (r / canal_r) ** 2 <= 1.0
        canal &= np.abs(s) <= H / 2 + disc_mm / 2 + 0.5
        post = np.zeros_like(body)
        # Pedicles and articular pillars: from the body's back to the lamina, closing the ring round the canal.
        post |= (np.abs(np.abs(r) - (canal_r + 3.0)) <= 3.0) & (a <= wall + 1.0) & (a >= ca - canal_a) & (np.abs(s - H / 6) <= 5.0)
        lam = (a <= ca - canal_a + 0.5) & (a >= ca - canal_a - 5.0) & (np.abs(r) <= canal_r + 6.0) & (np.abs(s) <= H / 3)
        post |= lam
        post |= (np.abs(r) <= 3.0) & (a <= ca - canal_a - 2.0) & (a >= ca - canal_a - 28.0) & (s >= -H / 3) & (s <= H / 6)
        post |= (np.abs(r) >= canal_r + 4.0) & (np.abs(r) <= W / 2 + 18.0) & (a <= wall - 2.0) & (a >= wall - 9.0) & \
                (np.abs(s - 2.0) <= 4.0)
        post &= ~canal
        view = hu[sl]
        view[disc] = 80.0
        view[canal & ~body] = 15.0
        view[post & ~body] = 650.0
        view[body] = spec.hu + 700.0
        view[inner] = spec.hu
        vsub = vert[sl]
        vsub[(post | body) & ~canal] = TOTAL_LABELS[spec.name]
        vsub[canal & ~body] = 0
        bsub = bodies[sl]
        bsub[disc & (bsub == 0)] = 2
        bsub[body] = 1
        bone_stamps.append((spec, sl, body))
        c, es, ea, er = frame
        # Body centroid (exact profile: mean over the deformed body) is not needed by the truth; the
        # frame centre of the intact body is reported.
        heights = tuple(float(H * _profile(spec, np.array([uc]))[0]) for uc in COLUMNS)
        truths.append(VertebraTruth(spec.name, TOTAL_LABELS[spec.name], float(spec.hu), heights, _body_volume_ml(spec),
                                    True, spec.deformity, float(spec.loss), tuple(float(v) for v in c),
                                    tuple(float(v) for v in es), tuple(float(v) for v in ea)))
    # Sacrum: a block below the last vertebra, tilted with it.
    last, lf = specs[-1], frames[-1]
    sc = lf[0] - lf[1] * (last.height_mm / 2 + disc_mm + 18.0)
    sl, world = sampler.box(sc, 70.0)
    if sl is not None:
        s, a, r = local(world, (sc, lf[1], lf[2], lf[3]))
        sac = (np.abs(s) <= 18.0) & (((a + 4.0) / 22.0) ** 2 + (r / 30.0) ** 2 <= 1.0)
        sac |= (np.abs(s) <= 14.0) & (np.abs(r) <= 55.0) & (np.abs(a + 8.0) <= 10.0)
        hu[sl][sac] = 300.0
        vert[sl][sac & (vert[sl] == 0)] = TOTAL_LABELS["sacrum"]

    # A body cut by the field of view is incomplete; a vertebra with no body voxel in view has no truth.
    present = set(np.unique(vert[vert > 0]).tolist())
    kept = []
    for truth, (spec, sl, body) in zip(truths, bone_stamps):
        idx = [v + s.start for v, s in zip(np.nonzero(body & (bodies[sl] == 1)), sl)]
        if idx[0].size == 0:
            if truth.label in present:
                truth.complete, truth.body_in_view = False, False
                kept.append(truth)
            continue
        truth.complete = not any(v.min() == 0 or v.max() == n - 1 for v, n in zip(idx, shape))
        kept.append(truth)
    truths = kept

    # Scanner: blur, noise, quantisation to 0.5 HU.
    sp = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    if psf_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=[psf_mm / v for v in sp])
    hu = hu + rng.normal(0.0, noise_hu, hu.shape)
    hu = np.clip(np.round(hu * 2.0) / 2.0, -1024.0, 3071.0).astype(np.float32)

    for t, g in zip(truths, genant_truth([t.heights_mm if t.complete else None for t in truths])):
        t.reference_height_mm, t.height_loss, t.genant_grade = g
    return SpineVolume(hu=hu, affine=np.asarray(affine, np.float64), vertebrae=vert, bodies=bodies, truth=truths)
