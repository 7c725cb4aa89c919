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


def new_dicom_file(sop_class: str, sop_uid: str):
    """An empty DICOM file dataset (explicit VR little endian) of SOP class `sop_class`, instance `sop_uid`."""
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    return ds


def write_ct_dicom(path: str, hu: np.ndarray, *, pixel_spacing, patient_id: str, study_uid: str,
                   series_uid: str, sop_uid: str, instance: int, z_mm: float, kvp: int,
                   slice_thickness: float = 1.0, description: str = "osteonet synthetic lumbar CT",
                   position=None, orientation=None, rescale=(1.0, -1024.0), frame_of_reference_uid=None,
                   spacing_between_slices=None) -> None:
    """A CT Image Storage file: stored value = (HU - intercept) / slope (uint16; by default slope 1,
    intercept -1024, 12 bits stored). ``pixel_spacing``: one number or (between rows, between columns) mm.
    ``position`` (LPS mm of the first pixel) and ``orientation`` (row and column direction cosines) default
    to an axial slice centred on the table at height ``z_mm``."""
    import pydicom

    ds = new_dicom_file(CT_IMAGE_STORAGE, sop_uid)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, patient_id
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName, ds.AccessionNumber = "", "O", "", ""
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber = "1", 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "LSPINE"
    ds.StudyDate = ds.SeriesDate = datetime.date(2024, 1, 1).strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.SeriesDescription, ds.Manufacturer = description, "osteonet"
    ds.InstanceNumber = instance
    ds.KVP = kvp
    ds16 = lambda v: pydicom.valuerep.DSfloat(float(v), auto_format=True)  # noqa: E731  (at most 16 characters)
    dy, dx = (pixel_spacing, pixel_spacing) if np.isscalar(pixel_spacing) else (float(v) for v in pixel_spacing)
    ds.PixelSpacing = [ds16(dy), ds16(dx)]
    ds.ImagePositionPatient = [-dx * hu.shape[1] / 2, -dy * hu.shape[0] / 2, z_mm] if position is None else \
        [ds16(v) for v in position]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0] if orientation is None else [ds16(v) for v in orientation]
    if frame_of_reference_uid is not None:
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference_uid, ""
    if spacing_between_slices is not None:
        ds.SpacingBetweenSlices = ds16(spacing_between_slices)
    ds.SliceThickness = ds16(slice_thickness)
    ds.SliceLocation = ds16(z_mm)
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    slope, intercept = (float(v) for v in rescale)
    if (slope, intercept) == (1.0, -1024.0):
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        stored = np.clip(hu.astype(np.int32) + 1024, 0, 4095)
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        stored = np.rint((np.asarray(hu, np.float64) - intercept) / slope)
        if stored.min() < 0 or stored.max() > 65535:
            raise ValueError(f"write_ct_dicom: HU {float(np.min(hu))}..{float(np.max(hu))} do not fit 16 bits with "
                             f"rescale slope={slope} intercept={intercept}")
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, slope, "HU"
    ds.WindowCenter, ds.WindowWidth = 400, 1800
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    write_with(path, lambda tmp: ds.save_as(tmp, write_like_original=False))


def write_ct_series(folder: str, hu: np.ndarray, affine: np.ndarray, *, patient_id: str, study_uid: str,
                    series_uid: str, frame_of_reference_uid: str, kvp: int = 120, rescale=(1.0, -1024.0),
                    description: str = "osteonet synthetic CT") -> list:
    """A volume (array axes: slice, row, column; HU) with its 4 x 4 RAS affine -> one CT Image Storage file
    per slice in ``folder`` (``0000.dcm``, ...), the geometry (position, orientation, spacing) in the
    headers so that ``osteonet.io.read_dicom_series`` gives the same world geometry back. Returns the paths."""
    import pydicom

    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"write_ct_series: expected a 3-D volume, got shape {hu.shape}")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    slice_step, row_step, col_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    dz, dy, dx = (float(np.linalg.norm(v)) for v in (slice_step, row_step, col_step))
    orientation = [*(col_step / dx), *(row_step / dy)]
    paths = []
    for k in range(hu.shape[0]):
        position = lps[:3, 3] + k * slice_step
        path = f"{folder}/{k:04d}.dcm"
        write_ct_dicom(path, hu[k], pixel_spacing=(dy, dx), patient_id=patient_id, study_uid=study_uid,
                       series_uid=series_uid, sop_uid=pydicom.uid.generate_uid(entropy_srcs=[series_uid, str(k)]),
                       instance=k + 1, z_mm=float(position[2]), kvp=kvp, slice_thickness=dz, description=description,
                       position=position, orientation=orientation, rescale=rescale,
                       frame_of_reference_uid=frame_of_reference_uid, spacing_between_slices=dz)
        paths.append(path)
    return paths


def write_nifti(path: str, volume: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm")
    write_with(path, lambda tmp: nib.save(img, tmp))
