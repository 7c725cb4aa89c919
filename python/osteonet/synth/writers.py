"""Writers for the built-in data: CT DICOM (real rescale slope/intercept, pixel spacing, position),
windowed PNG, NIfTI. All atomic (osteonet.io)."""

from __future__ import annotations

import datetime

import numpy as np

from ..io import write_with

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def hu_to_png8(hu: np.ndarray, center: float = 400.0, width: float = 1800.0) -> np.ndarray:
    """8-bit grey of a HU image through a window (default: -500..1300 HU, soft tissue to cortex)."""
    lo = center - width / 2
    return (np.clip((hu.astype(np.float64) - lo) / width, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str, image8: np.ndarray) -> None:
    from PIL import Image

    write_with(path, lambda tmp: Image.fromarray(image8).save(tmp, format="PNG"))


def write_ct_dicom(path: str, hu: np.ndarray, *, pixel_spacing: float, patient_id: str, study_uid: str,
                   series_uid: str, sop_uid: str, instance: int, z_mm: float, kvp: int,
                   slice_thickness: float = 1.0, description: str = "osteonet synthetic lumbar CT") -> None:
    """A CT Image Storage file: stored value = HU + 1024 (uint16), RescaleSlope 1, RescaleIntercept -1024."""
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, patient_id
    ds.StudyDate = ds.SeriesDate = datetime.date(2024, 1, 1).strftime("%Y%m%d")
    ds.SeriesDescription, ds.Manufacturer = description, "osteonet"
    ds.InstanceNumber = instance
    ds.KVP = kvp
    ds.SliceThickness = slice_thickness
    ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.ImagePositionPatient = [-pixel_spacing * hu.shape[1] / 2, -pixel_spacing * hu.shape[0] / 2, z_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z_mm
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 400, 1800
    ds.PixelData = np.clip(hu.astype(np.int32) + 1024, 0, 4095).astype(np.uint16).tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    write_with(path, lambda tmp: ds.save_as(tmp, write_like_original=False))


def write_nifti(path: str, volume: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm")
    write_with(path, lambda tmp: nib.save(img, tmp))
