"""osteonet screen on a 512 x 512 x 300 CT with masks given: reading included, against a straightforward
numpy/scipy implementation of the same measurements (issue 16's speed goal: <= 2 s on this 2-core CPU).

The case: a synthetic lumbar spine (osteonet.synth.spine; 300 x 240 x 240 voxels of 1.0 x 0.7 x 0.7 mm,
T11-L5 and the sacrum) embedded in a 300 x 512 x 512 CT of soft tissue and air, written as NIfTI (int16
.nii and .nii.gz), a 300-file DICOM series, whole-vertebra masks (TotalSegmentator numbering) and a body
mask. Times are medians of --repeats runs, the variants alternating. The numpy/scipy baseline does what a
direct implementation does: per vertebra `labels == value` over the whole volume, np.argwhere, the same
frame, column-kernel heights and erosion (scipy.ndimage.distance_transform_edt) as the C++ core; its
numbers are checked equal to the core's.

Writes benchmarks/results/screen.json and screen.md with the machine described.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np

from bench_metrics import cpu_model  # this folder's runner (benchmarks/ is on sys.path when run as a script)
from osteonet.io import write_text

SHAPE = (300, 512, 512)


def build_case(folder, seed=0):
    import nibabel as nib

    from osteonet.synth.spine import default_specs, spine_volume

    specs = default_specs()
    specs[1].deformity, specs[1].loss = "wedge", 0.3
    specs[3].deformity, specs[3].loss = "biconcave", 0.3
    specs[5].deformity, specs[5].loss = "crush", 0.45
    spine = spine_volume(shape=(300, 240, 240), spacing=(1.0, 0.7, 0.7), axcodes="SPL", specs=specs, seed=seed,
                         shift_mm=(0.0, 0.0, 40.0))
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, -1000, np.int16)
    yy, xx = np.mgrid[0:SHAPE[1], 0:SHAPE[2]]
    body = ((yy - 256) / 230.0) ** 2 + ((xx - 256) / 250.0) ** 2 <= 1.0
    hu[:, body] = 40
    hu += rng.normal(0, 10, SHAPE).astype(np.int16)
    o = (SHAPE[1] - 240) // 2
    hu[:, o:o + 240, o:o + 240] = np.round(spine.hu).astype(np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, o:o + 240, o:o + 240] = spine.vertebrae
    bodies = np.zeros(SHAPE, np.uint8)
    bodies[:, o:o + 240, o:o + 240] = spine.bodies
    affine = spine.affine.copy()
    affine[:3, 3] -= affine[:3, 1] * o + affine[:3, 2] * o
    paths = {"nii": os.path.join(folder, "ct.nii"), "nii.gz": os.path.join(folder, "ct.nii.gz"),
             "masks": os.path.join(folder, "vertebrae.nii.gz"), "body": os.path.join(folder, "bodies.nii.gz"),
             "dicom": os.path.join(folder, "dicom")}
    for key in ("nii", "nii.gz"):
        img = nib.Nifti1Image(hu, affine)
        img.set_data_dtype(np.int16)
        nib.save(img, paths[key])
    nib.save(nib.Nifti1Image(labels, affine), paths["masks"])
    nib.save(nib.Nifti1Image(bodies, affine), paths["body"])
    from osteonet.synth.writers import write_ct_series

    write_ct_series(paths["dicom"], hu, affine, patient_id="BENCH", study_uid="1.2.826.0.1.3680043.8.498.1",
                    series_uid="1.2.826.0.1.3680043.8.498.2", frame_of_reference_uid="1.2.826.0.1.3680043.8.498.3")
    return paths, spine


# ---- the straightforward numpy/scipy implementation of the same measurements (body-mask mode) ----
def _tangent(t, pts, usable):
    steps = [np.linalg.norm(pts[u] - pts[u - 1]) for u in range(1, len(pts)) if usable[u] and usable[u - 1]]
    ms = 2.5 * float(np.median(steps)) if steps else 0.0
    n = len(pts)

    def near(a, b, k):
        return a is not None and 0 <= a < n and 0 <= b < n and usable[a] and usable[b] and np.linalg.norm(pts[a] - pts[b]) <= k * ms

    up1, up2 = (t - 1 if t >= 1 else None), (t - 2 if t >= 2 else None)

    def extrap(q1, q2, q3, d):
        t2 = np.linalg.norm(q2 - q1)
        t3 = t2 + np.linalg.norm(q3 - q2)
        x = -d
        l1 = ((x - t2) + (x - t3)) / ((0 - t2) * (0 - t3))
        l2 = ((x - 0) + (x - t3)) / ((t2 - 0) * (t2 - t3))
        l3 = ((x - 0) + (x - t2)) / ((t3 - 0) * (t3 - t2))
        return l1 * q1 + l2 * q2 + l3 * q3

    def end(p0, p1, p2):
        t1 = np.linalg.norm(p1 - p0)
        t2 = t1 + np.linalg.norm(p2 - p1)
        return -(t1 + t2) / (t1 * t2) * p0 + t2 / (t1 * (t2 - t1)) * p1 - t1 / (t2 * (t2 - t1)) * p2

    if near(up1, t + 1, 2.0):
        d = pts[up1] - pts[t + 1]
    elif t >= 3 and near(up1, t, 1) and near(up2, up1, 1) and near(t - 3, up2, 1):
        d = -extrap(pts[up1], pts[up2], pts[t - 3], np.linalg.norm(pts[t] - pts[up1]))
    elif near(t, t + 1, 1) and near(t + 1, t + 2, 1) and near(t + 2, t + 3, 1):
        d = extrap(pts[t + 1], pts[t + 2], pts[t + 3], np.linalg.norm(pts[t] - pts[t + 1]))
    elif near(up1, t, 1) and near(up2, up1, 1):
        d = end(pts[t], pts[up1], pts[up2])
    elif near(t, t + 1, 1) and near(t + 1, t + 2, 1):
        d = -end(pts[t], pts[t + 1], pts[t + 2])
    elif near(up1, t, 1):
        d = pts[up1] - pts[t]
    elif near(t, t + 1, 1):
        d = pts[t] - pts[t + 1]
    else:
        return np.array([0.0, 0.0, 1.0])
    d = d / np.linalg.norm(d)
    return -d if d[2] < 0 else d


def _box_triangle(x, half, box):
    """The triangle max(0, 1 - |t| / half) averaged over [x - box, x + box]."""
    def cdf(v):
        return np.where(v <= -half, 0.0, np.where(v <= 0, (v + half) ** 2 / (2 * half),
                                                  np.where(v < half, half - (half - v) ** 2 / (2 * half), half)))
    return (cdf(x + box) - cdf(x - box)) / (2 * box)


def reference_measure(hu, labels, body, affine, order, margin=4.0, inset=0.15, ta_max=2.0, tr_max=5.0, span=2):
    from scipy import ndimage

    M, t0 = affine[:3, :3], affine[:3, 3]
    sp = np.linalg.norm(M, axis=0)
    vox = abs(np.linalg.det(M))
    items = []
    for v in order:
        m = labels == v  # the whole volume, once per vertebra
        if not m.any():
            continue
        b = m & (body == 1)
        idx = np.argwhere(b)
        if not len(idx):
            continue
        world = idx @ M.T + t0
        complete = not any((idx[:, a].min() == 0 or idx[:, a].max() == hu.shape[a] - 1) for a in range(3))
        items.append({"label": v, "idx": idx, "world": world, "c": world.mean(0), "complete": complete})
    pts = [it["c"] for it in items]
    usable = [it["complete"] for it in items]
    out = []
    for t, it in enumerate(items):
        es = _tangent(t, pts, usable)
        a0 = np.array([0.0, 1.0, 0.0]) - es[1] * es
        a0 /= np.linalg.norm(a0)
        r0 = np.cross(a0, es)
        r0 /= np.linalg.norm(r0)
        d = it["world"] - it["c"]
        a, r = d @ a0, d @ r0
        caa, crr, car = (a * a).mean(), (r * r).mean(), (a * r).mean()
        mean, dev = 0.5 * (caa + crr), np.sqrt(0.25 * (caa - crr) ** 2 + car ** 2)
        ea = a0
        if (mean - dev) / (mean + dev) < 0.8:
            phi = 0.5 * np.arctan2(2 * car, caa - crr)
            minor = np.cos(phi + np.pi / 2) * a0 + np.sin(phi + np.pi / 2) * r0
            minor = -minor if minor @ a0 < 0 else minor
            if minor @ a0 >= np.cos(np.deg2rad(35)):
                ea = minor / np.linalg.norm(minor)
        er = np.cross(ea, es)
        er /= np.linalg.norm(er)
        a, r = d @ ea, d @ er
        rec = {"label": it["label"], "complete": it["complete"]}
        if it["complete"]:
            width = r.max() - r.min()
            tr = min(tr_max, 0.25 * width)
            band = np.abs(r) <= tr
            amin, amax = a[band].min(), a[band].max()
            depth = amax - amin
            ta = min(ta_max, inset * depth)
            ha, hr = (0.5 * np.abs(M.T @ e).sum() for e in (ea, er))  # half a voxel's extent along each axis
            wr = _box_triangle(r, tr, hr)
            rec["heights"] = [float(np.sum(_box_triangle(a - (amin + u * depth), ta, ha) * wr) * vox / (ta * tr))
                              for u in (1 - inset, 0.5, inset)]
        lo, hi = it["idx"].min(0), it["idx"].max(0) + 1
        crop = np.zeros(hi - lo, bool)
        crop[tuple((it["idx"] - lo).T)] = True
        dist = ndimage.distance_transform_edt(np.pad(crop, 1), sampling=sp)[1:-1, 1:-1, 1:-1]
        roi = dist > margin + 1e-4
        vals = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][roi].astype(np.float64)
        rec.update(roi_voxels=int(roi.sum()), hu_mean=float(vals.mean()), hu_median=float(np.median(vals)),
                   hu_sd=float(vals.std(ddof=1)))
        out.append(rec)
    for i, rec in enumerate(out):
        if "heights" not in rec:
            continue
        neigh = [max(o["heights"]) for j, o in enumerate(out) if j != i and "heights" in o and abs(j - i) <= span]
        ref = max(max(rec["heights"]), float(np.median(neigh))) if neigh else max(rec["heights"])
        loss = max(0.0, 1 - min(rec["heights"]) / ref)
        rec["genant_grade"] = 0 if loss < 0.2 else 1 if loss < 0.25 else 2 if loss <= 0.4 else 3
    return out


def median_times(fns, repeats):
    """{name: median seconds}, the functions run in alternating order after one warm-up each."""
    times = {k: [] for k in fns}
    for k, fn in fns.items():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", default=None, help="folder for the generated case (default: a temporary one)")
    args = ap.parse_args()
    import osteonet
    from osteonet.screen import load_table, measure, read_ct, read_label_map, screen

    work = args.work or tempfile.mkdtemp(prefix="bench_screen_")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    paths, spine = build_case(work)
    print(f"case built in {time.perf_counter() - t0:.1f} s in {work}", flush=True)
    total = load_table("total")
    out_dir = os.path.join(work, "out")

    # Arrays in memory for the measurement-only comparison.
    ct = read_ct(paths["nii"])
    lab = read_label_map(paths["masks"], ct)
    body = (read_label_map(paths["body"], ct) == 1).astype(np.uint8)
    order = total.spine_order()
    hu_c, lab_c, body_c = ct.hu, lab, body
    core = measure(hu_c, lab_c, ct.affine, total, body=body_c)
    ref = reference_measure(hu_c, lab_c, body_c, ct.affine, order)
    # The baseline computes the same numbers.
    by = {v["label"]: v for v in core["vertebrae"]}
    max_dh, max_dhu = 0.0, 0.0
    for r in ref:
        v = by[r["label"]]
        assert v["roi_voxels"] == r["roi_voxels"], (r["label"], v["roi_voxels"], r["roi_voxels"])
        max_dhu = max(max_dhu, abs(v["hu_mean"] - r["hu_mean"]), abs(v["hu_median"] - r["hu_median"]),
                      abs(v["hu_sd"] - r["hu_sd"]))
        if "heights" in r:
            got = [v["heights_mm"][k] for k in ("anterior", "middle", "posterior")]
            max_dh = max(max_dh, max(abs(a - b) for a, b in zip(got, r["heights"])))
            assert v["genant_grade"] == r["genant_grade"]
    assert max_dh < 1e-6 and max_dhu < 1e-6, (max_dh, max_dhu)

    cases = {
        "measure, C++ core (arrays in memory, body mask)": lambda: measure(hu_c, lab_c, ct.affine, total, body=body_c),
        "measure, numpy/scipy baseline (same arrays)": lambda: reference_measure(hu_c, lab_c, body_c, ct.affine, order),
        "screen(): read .nii (int16) + masks + body mask, measure": lambda: screen(paths["nii"], masks=paths["masks"], body_mask=paths["body"]),
        "screen(): read .nii + masks, body derived from whole vertebrae": lambda: screen(paths["nii"], masks=paths["masks"]),
        "baseline: read .nii + masks + body mask (nibabel), numpy/scipy measure": lambda: reference_measure(
            *(lambda c: (c.hu, read_label_map(paths["masks"], c), (read_label_map(paths["body"], c) == 1).astype(np.uint8),
                         c.affine))(read_ct(paths["nii"])), order),
        "screen(): read .nii.gz + masks, measure": lambda: screen(paths["nii.gz"], masks=paths["masks"]),
        "screen(): read DICOM series (300 files) + masks, measure": lambda: screen(paths["dicom"], masks=paths["masks"]),
        "screen(): .nii + masks, all outputs written (JSON, CSV, PNG, HTML, 2 NIfTI masks)": lambda: screen(
            paths["nii"], out=out_dir, masks=paths["masks"]),
        "screen(): DICOM series + masks, all outputs incl. SEG and SR": lambda: screen(
            paths["dicom"], out=out_dir + "_dcm", masks=paths["masks"]),
    }
    times = median_times(cases, args.repeats)
    for k, v in times.items():
        print(f"{v:8.3f} s  {k}", flush=True)
    rep = screen(paths["nii"], masks=paths["masks"], body_mask=paths["body"])
    rows = [{"case": k, "seconds": v} for k, v in times.items()]
    speedup = times["measure, numpy/scipy baseline (same arrays)"] / times["measure, C++ core (arrays in memory, body mask)"]
    result = {
        "what": "osteonet screen, 512 x 512 x 300 CT (int16, 1.0 x 0.7 x 0.7 mm), 7 vertebrae, masks given",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "osteonet": osteonet.__version__, "load_avg_1min": os.getloadavg()[0]},
        "repeats": args.repeats, "target_s": 2.0, "rows": rows, "core_vs_baseline_speedup": speedup,
        "baseline_max_abs_diff": {"heights_mm": max_dh, "hu": max_dhu},
        "timings_inside_screen_s": rep["timings_s"], "vertebrae": len(rep["vertebrae"]),
    }
    os.makedirs(args.out, exist_ok=True)
    write_text(os.path.join(args.out, "screen.json"), json.dumps(result, indent=1) + "\n")
    md = ["# osteonet screen: 512 x 512 x 300 CT with masks", "",
          f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores (shared), Python "
          f"{result['machine']['python']}, numpy {result['machine']['numpy']}; 1-min load average at the end "
          f"{result['machine']['load_avg_1min']:.2f}. Medians of {args.repeats} alternating runs. Command: "
          "`.venv/bin/python benchmarks/bench_screen.py`.", "",
          "| case | seconds |", "|---|---|"]
    md += [f"| {r['case']} | {r['seconds']:.3f} |" for r in rows]
    md += ["", f"The C++ core is {speedup:.1f}x faster than the numpy/scipy baseline on the same arrays; both give the same "
           f"numbers (largest difference: heights {max_dh:.1e} mm, HU {max_dhu:.1e}). Target: <= 2 s with masks given, "
           "reading included.", ""]
    write_text(os.path.join(args.out, "screen.md"), "\n".join(md))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}/screen.json and screen.md")


if __name__ == "__main__":
    main()
