"""Built-in data: a documented, physics-inspired generator of the images the papers use (their
hospital data are private). Deterministic from a seed; written in the real formats (DICOM, NIfTI,
PNG, COCO JSON, manifest.csv). Parameters and references: docs/synthetic_data.md.
"""

from .ct import AxialSlice, PatientBone, ScannerParams, axial_lumbar_slice, sample_patient, sample_scanner
from .dataset import generate_ct_dataset, generate_dxa_dataset, generate_hip_dataset, generate_ovf_dataset
from .examples import EXAMPLE_LAYOUTS, write_example
from .radiographs import HIP_REGIONS, dxa_spine, hip_radiograph
from .sagittal import GENANT_LOSS, MORPHOLOGIES, SagittalScan, sagittal_scan

__all__ = ["AxialSlice", "PatientBone", "ScannerParams", "axial_lumbar_slice", "sample_patient", "sample_scanner",
           "generate_ct_dataset", "generate_ovf_dataset", "generate_hip_dataset", "generate_dxa_dataset", "HIP_REGIONS",
           "hip_radiograph", "dxa_spine", "GENANT_LOSS", "MORPHOLOGIES", "SagittalScan", "sagittal_scan", "write_example",
           "EXAMPLE_LAYOUTS"]
