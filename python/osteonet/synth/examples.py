"""Small example folders in each task's documented data layout (docs/tasks.md), written by the built-in
generator: `osteonet synth --example <task> --out DIR`. They are what the tests train on and what a
user copies the layout from."""

from __future__ import annotations

import os
from typing import Any, Dict

from ..io import write_text
from .dataset import generate_ct_dataset, generate_dxa_dataset, generate_hip_dataset, generate_ovf_dataset

__all__ = ["write_example", "EXAMPLE_LAYOUTS"]

#: task -> (what the folder holds, the layout in one paragraph)
EXAMPLE_LAYOUTS = {
    "classification": ("12 synthetic spine DXA-like images, 2 classes",
                       "manifest.csv: path, label, patient_id (the split keeps each patient whole)."),
    "detection": ("6 synthetic patients x 2 axial lumbar CT slices (PNG and DICOM), boxes of the vertebral body",
                  "annotations.json (COCO): images (id, file_name relative to the folder, width, height, optional "
                  "patient_id), annotations (image_id, category_id, bbox [x, y, w, h] in pixels), categories "
                  "(id, name: the WHO classes normal, osteopenia, osteoporosis)."),
    "ovf": ("10 synthetic sagittal CT stacks (NIfTI), half with vertebral fractures",
            "manifest.csv: path (a NIfTI file or a DICOM series folder), label (fracture | no_fracture, or 1 | 0), "
            "patient_id."),
    "segmentation": ("9 synthetic hip radiographs with 4-label maps (labels.csv)",
                     "manifest.csv: image, mask (same size; values from labels.csv), optional patient_id or "
                     "source_id; labels.csv: value, name (0 = background)."),
    "bmd": ("6 synthetic patients x 4 axial CT slices (L1-L4) with vertebral-body masks and QCT BMD",
            "manifest.csv: image, mask (vertebral body; values from labels.csv), bmd (mg/cm³, trabecular QCT), "
            "patient_id, optional level; labels.csv: value, name."),
    "hip": ("12 synthetic hip radiographs with region label maps and DXA T-scores",
            "manifest.csv: image, mask (labels 0 background, 1 femoral_neck, 2 greater_trochanter, 3 wards_triangle, "
            "4 total_hip_rest, as labels.csv), t_score (and/or label: normal | osteopenia | osteoporosis), patient_id."),
}


def write_example(task: str, out: str, seed: int = 0, progress: bool = False) -> Dict[str, Any]:
    """Writes the example folder of ``task`` into ``out``; returns the generator's summary."""
    if task not in EXAMPLE_LAYOUTS:
        raise ValueError(f"write_example: task must be one of {sorted(EXAMPLE_LAYOUTS)}, got task={task!r}")
    make = {
        "classification": lambda: generate_dxa_dataset(out, 12, seed=seed, size=64, progress=progress),
        "detection": lambda: generate_ct_dataset(out, 6, 2, seed=seed, progress=progress, masks=False),
        "ovf": lambda: generate_ovf_dataset(out, 10, seed=seed, size=(20, 48, 48), progress=progress),
        "segmentation": lambda: generate_hip_dataset(out, 9, seed=seed, size=96, progress=progress),
        "bmd": lambda: generate_ct_dataset(out, 6, 4, seed=seed, progress=progress, dicom=False),
        "hip": lambda: generate_hip_dataset(out, 12, seed=seed, size=96, progress=progress),
    }[task]
    summary = make()
    what, layout = EXAMPLE_LAYOUTS[task]
    write_text(os.path.join(out, "LAYOUT.md"),
               f"# Example data for `osteonet train --task {task}`\n\n{what} (osteonet's built-in synthetic data, "
               f"seed {seed}).\n\nLayout: {layout}\n\nCheck a folder with `osteonet check-data --task {task} DIR`; "
               "docs/tasks.md describes every layout.\n")
    return {"task": task, "folder": out, **summary}
