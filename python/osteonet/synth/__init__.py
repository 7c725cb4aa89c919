"""Built-in data: a documented, physics-inspired generator of the images the papers use (their
hospital data are private). Deterministic from a seed; written in the real formats (DICOM, NIfTI,
PNG, COCO JSON, manifest.csv). Parameters and references: docs/synthetic_data.md.
"""

from .ct import AxialSlice, PatientBone, ScannerParams, axial_lumbar_slice, sample_patient, sample_scanner
from .dataset import generate_ct_dataset

__all__ = ["AxialSlice", "PatientBone", "ScannerParams", "axial_lumbar_slice", "sample_patient", "sample_scanner",
           "generate_ct_dataset"]
