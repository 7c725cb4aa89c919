"""Axial lumbar CT slices (L1-L4 look, Hounsfield units, 512x512 int16) whose vertebral body's
cortical thickness and trabecular density and texture follow the patient's BMD.

Model (references in docs/synthetic_data.md):
- Patient: a WHO class, a DXA T-score within that class's range, and a QCT trabecular BMD
  `bmd = 165 + 28 T + N(0, 8)` mg/cm³ (young-adult mean 165, SD 28; the noise term keeps CT BMD and
  DXA T-score correlated but not identical, r ≈ 0.95, as in opportunistic-CT studies).
- Trabecular bone: a band-pass random network (spacing ~1-3 mm) thresholded to a bone volume
  fraction chosen so that the mean trabecular HU is bmd + 10 (QCT's calibration of about 1 HU per
  mg/cm³): BV/TV = (bmd + 10 - marrow) / (1200 - marrow), with bone tissue 1200 HU and marrow from
  +30 HU (dense bone) to -30 HU (fatty osteoporotic marrow); ≈ 0.13 at 165 mg/cm³, 0.07 at 60.
  The CT's point-spread function then blurs the network into the familiar mottled texture.
- Cortical shell: thickness 0.35 + 0.45 * (bmd / 165) mm (thinner in osteoporosis), 1100-1500 HU.
- Anatomy: body outline with subcutaneous fat (-100 HU), muscle (50), psoas and paraspinal muscles,
  aorta (40), bowel gas (-900), spinal canal (CSF 10 HU), pedicles, laminae and spinous process;
  vertebral body size grows from L1 to L4.
- Scanner: field of view 300-450 mm (pixel spacing 0.59-0.88 mm), Gaussian PSF (0.5-1.2 px),
  quantum noise 8-25 HU, kVp 100-140 (bone contrast scaled by 1.06 at 100 kVp to 0.95 at 140).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

SIZE = 512
CLASS_T_RANGES = {0: (-1.0, 1.5), 1: (-2.5, -1.0), 2: (-4.0, -2.5)}  # WHO: normal, osteopenia, osteoporosis
LEVELS = ("L1", "L2", "L3", "L4")


@dataclasses.dataclass(frozen=True)
class PatientBone:
    """A patient's bone status: WHO class (from the T-score) and CT trabecular BMD."""

    patient_id: str
    t_score: float
    who_class: int
    bmd: float  # QCT trabecular BMD, mg/cm³


@dataclasses.dataclass(frozen=True)
class ScannerParams:
    fov_mm: float
    psf_sigma_px: float
    noise_hu: float
    kvp: int

    @property
    def pixel_spacing(self) -> float:
        return self.fov_mm / SIZE

    @property
    def bone_contrast(self) -> float:
        """Relative bone attenuation at this kVp (1 at 120 kVp; lower energy, higher contrast)."""
        return 1.0 + (120 - self.kvp) * 0.0028


@dataclasses.dataclass
class AxialSlice:
    hu: np.ndarray  # int16 [512, 512]
    box: Tuple[float, float, float, float]  # vertebral body x1, y1, x2, y2 (pixels)
    mask: np.ndarray  # bool [512, 512], vertebral body (cortex included)
    level: str
    meta: Dict[str, float]


def sample_patient(rng: np.random.Generator, patient_id: str, who_class: int) -> PatientBone:
    lo, hi = CLASS_T_RANGES[who_class]
    t = float(rng.uniform(lo, hi))
    bmd = float(np.clip(165.0 + 28.0 * t + rng.normal(0, 8.0), 15.0, 260.0))
    return PatientBone(patient_id, t, who_class, bmd)


def sample_scanner(rng: np.random.Generator) -> ScannerParams:
    return ScannerParams(fov_mm=float(rng.uniform(300, 450)), psf_sigma_px=float(rng.uniform(0.5, 1.2)),
                         noise_hu=float(rng.uniform(8, 25)), kvp=int(rng.choice([100, 120, 140])))


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    return u * u + v * v <= 1.0


def _trabecular_network(rng, shape, bv_tv, pixel_mm):
    """Binary trabecular network: band-pass noise (trabecular spacing ~0.6-1.2 mm) thresholded so the
    bone fraction is bv_tv, then sub-sampled texture at the CT pixel."""
    noise = rng.standard_normal(shape)
    fine = ndimage.gaussian_filter(noise, 0.5 / pixel_mm) - ndimage.gaussian_filter(noise, 1.5 / pixel_mm)
    # Rod-like connectivity: bone where the band-pass field is near its zero crossings.
    field = -np.abs(fine)
    thr = np.quantile(field, 1.0 - bv_tv)
    return field >= thr


def axial_lumbar_slice(rng: np.random.Generator, patient: PatientBone, scanner: ScannerParams, level: str,
                       z_offset_mm: float = 0.0) -> AxialSlice:
    """One axial slice through vertebra `level` (L1-L4) of `patient` on `scanner`."""
    if level not in LEVELS:
        raise ValueError(f"axial_lumbar_slice: level must be one of {LEVELS}, got level={level!r}")
    px = scanner.pixel_spacing
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    cy, cx = SIZE / 2 + rng.normal(0, 8), SIZE / 2 + rng.normal(0, 8)
    hu = np.full((SIZE, SIZE), -1000.0)

    # Body outline: skin/fat shell, muscle core.
    body_rx, body_ry = rng.uniform(150, 180) / px, rng.uniform(105, 130) / px
    fat_mm = rng.uniform(8, 30)
    body = _ellipse(yy, xx, cy, cx, body_ry, body_rx)
    core = _ellipse(yy, xx, cy, cx, body_ry - fat_mm / px, body_rx - fat_mm / px)
    hu[body] = -100.0 + rng.normal(0, 5)
    hu[core] = 45.0 + rng.normal(0, 5)
    # Bowel gas pockets anterior.
    for _ in range(rng.integers(2, 6)):
        gy, gx = cy - rng.uniform(20, 80) / px, cx + rng.uniform(-90, 90) / px
        gas = _ellipse(yy, xx, gy, gx, rng.uniform(5, 15) / px, rng.uniform(5, 20) / px, rng.uniform(0, np.pi))
        hu[gas & core] = -900.0

    # Vertebral body geometry (mm -> px); grows from L1 to L4.
    li = LEVELS.index(level)
    vb_w = (40.0 + 2.5 * li + rng.normal(0, 1.5)) / px / 2  # half width
    vb_d = (29.0 + 1.5 * li + rng.normal(0, 1.2)) / px / 2  # half depth (antero-posterior)
    vy, vx = cy + rng.uniform(5, 20) / px, cx + rng.normal(0, 3) / px  # slightly posterior of centre
    tilt = rng.normal(0, 0.05)
    vb = _ellipse(yy, xx, vy, vx, vb_d, vb_w, tilt)
    # Posterior concavity of the vertebral body (where the canal sits).
    canal_r = (8.5 + rng.normal(0, 0.6)) / px
    canal_cy = vy + vb_d + canal_r * 0.9
    vb &= ~_ellipse(yy, xx, vy + vb_d * 1.15, vx, vb_d * 0.35, vb_w * 0.45)

    # Paraspinal and psoas muscles, aorta.
    for side in (-1, 1):
        hu[_ellipse(yy, xx, vy + vb_d * 0.2, vx + side * (vb_w + 18 / px), 14 / px, 18 / px) & core] = 55.0
        hu[_ellipse(yy, xx, canal_cy + 25 / px, vx + side * 28 / px, 22 / px, 26 / px) & core] = 50.0
    hu[_ellipse(yy, xx, vy - vb_d - 14 / px, vx - 18 / px, 11 / px, 11 / px) & core] = 40.0

    # Posterior elements: pedicles, laminae, spinous process (cortical-like bone).
    post = np.zeros_like(vb)
    for side in (-1, 1):
        post |= _ellipse(yy, xx, vy + vb_d + 4 / px, vx + side * (canal_r + 4 / px), 7 / px, 4 / px)
        post |= _ellipse(yy, xx, canal_cy + canal_r + 3 / px, vx + side * canal_r * 0.9, 3 / px, 9 / px, side * 0.5)
    post |= _ellipse(yy, xx, canal_cy + canal_r + 20 / px, vx, 16 / px, 3.5 / px)
    canal = _ellipse(yy, xx, canal_cy, vx, canal_r, canal_r * 1.1)
    post &= ~canal

    # Bone: cortex thickness and trabecular network from BMD.
    bmd = patient.bmd
    cortex_mm = 0.35 + 0.45 * bmd / 165.0
    inner = ndimage.binary_erosion(vb, iterations=max(1, int(round(cortex_mm / px))))
    cortex = vb & ~inner
    marrow_hu = -30.0 + 60.0 * np.clip(bmd / 200.0, 0, 1)
    bv_tv = float(np.clip((bmd + 10.0 - marrow_hu) / (1200.0 - marrow_hu), 0.02, 0.4))
    net = _trabecular_network(rng, (SIZE, SIZE), bv_tv, px)
    contrast = scanner.bone_contrast
    trab = np.where(net, 1200.0 * contrast, marrow_hu)
    hu[inner] = trab[inner]
    hu[cortex] = (1100.0 + 400.0 * np.clip(bmd / 200.0, 0, 1)) * contrast
    hu[post] = 900.0 * contrast + 300 * np.clip(bmd / 200.0, 0, 1)
    hu[canal] = 10.0

    # Scanner: point-spread function, then quantum noise (slightly correlated).
    hu = ndimage.gaussian_filter(hu, scanner.psf_sigma_px)
    noise = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 0.7)
    noise *= scanner.noise_hu / max(noise.std(), 1e-6)
    hu = np.clip(hu + noise, -1024, 3071).round().astype(np.int16)

    # QCT-style central ROI: the trabecular region 3 mm away from the cortex.
    roi = ndimage.binary_erosion(inner, iterations=max(1, int(round(3.0 / px))))
    ys, xs = np.nonzero(vb)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    meta = {"bmd": bmd, "t_score": patient.t_score, "bv_tv": bv_tv, "cortex_mm": cortex_mm,
            "trabecular_hu": float(hu[roi].mean()), "pixel_spacing": px, "z_mm": z_offset_mm}
    return AxialSlice(hu=hu, box=box, mask=vb, level=level, meta=meta)
