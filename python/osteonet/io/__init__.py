"""File I/O shared by osteonet: the one atomic writer and the readers hospitals' formats need."""

from .atomic import atomic_write, remove_stale_temporaries, write_bytes, write_json, write_text, write_with
from .readers import read_dicom, read_dicom_series, read_image, read_manifest, read_nifti, read_volume, window

__all__ = ["atomic_write", "write_bytes", "write_json", "write_text", "write_with", "remove_stale_temporaries",
           "read_dicom", "read_dicom_series", "read_image", "read_manifest", "read_nifti", "read_volume", "window"]
