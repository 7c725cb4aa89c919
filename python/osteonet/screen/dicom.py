"""DICOM outputs of the screen for a DICOM CT series: a Segmentation (SEG, binary; one segment per
vertebral body and one per trabecular ROI, frames on the source slices, referencing them) and a
Comprehensive SR following TID 1500 (Imaging Measurement Report) with one TID 1411 measurement group
per body and per ROI, each referencing its SEG segment and the source series. Built with pydicom.

Codes: DCM and SNOMED CT (SCT) codes for the report's structure and for mean / median / standard
deviation / volume; concepts DICOM has no code for (vertebral levels, column heights, calibrated BMD,
ACR class, Genant grade, Pickhardt's profile) use the private coding scheme 99OSTEONET (docs/screen.md)."""

from __future__ import annotations

import datetime
import io
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["SEG_SOP_CLASS", "SR_SOP_CLASS", "segmentation_dataset", "sr_dataset", "to_bytes", "source_header"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
PRIVATE = "99OSTEONET"

_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def source_header(path: str):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def _ds(values):
    """Decimal strings of at most 16 characters (the DS VR), as scanners write them."""
    from pydicom.valuerep import DSfloat

    return [DSfloat(float(v), auto_format=True) for v in values]


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    d = Dataset()
    d.CodeValue, d.CodingSchemeDesignator, d.CodeMeaning = value, scheme, meaning
    return d


def _uid(*parts: Any) -> str:
    import pydicom

    return pydicom.uid.generate_uid(entropy_srcs=["osteonet-screen", *[str(p) for p in parts]])


def _base(src, sop_class: str, sop_uid: str, modality: str, series_uid: str, series_number: int, description: str,
          now: datetime.datetime, version: str):
    from pydicom.dataset import Dataset

    from ..synth.writers import new_dicom_file

    ds = new_dicom_file(sop_class, sop_uid)
    ds.SpecificCharacterSet = getattr(src, "SpecificCharacterSet", None) or "ISO_IR 100"
    for k in _PATIENT_STUDY:
        setattr(ds, k, getattr(src, k, "") or "")
    ds.Modality = modality
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series_number, description
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.InstanceNumber = 1
    scheme = Dataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeName = PRIVATE, "osteonet screen codes"
    scheme.CodingSchemeResponsibleOrganization = "osteonet (docs/screen.md)"
    ds.CodingSchemeIdentificationSequence = [scheme]
    ds.Manufacturer = "osteonet"
    ds.ManufacturerModelName = "osteonet screen"
    ds.DeviceSerialNumber = "1"
    ds.SoftwareVersions = version
    return ds


def _ref_sop(sop_class: str, sop_uid: str):
    from pydicom.dataset import Dataset

    d = Dataset()
    d.ReferencedSOPClassUID, d.ReferencedSOPInstanceUID = sop_class, sop_uid
    return d


def segments_of(vertebrae: Sequence[Dict[str, Any]]) -> List[Tuple[int, str, str, int]]:
    """(segment number, label, kind, mask value) for every body and ROI, bodies first."""
    out = []
    for kind in ("body", "roi"):
        for v in vertebrae:
            if v["body_voxels"] and (kind == "body" or v["roi_voxels"]):
                name = v["name"] or f"#{v['index']}"
                label = f"{name} vertebral body" if kind == "body" else f"{name} trabecular ROI"
                out.append((len(out) + 1, label, kind, int(v["mask_value"])))
    return out


def segmentation_dataset(ct_meta: Dict[str, Any], bodies: np.ndarray, rois: np.ndarray, vertebrae: Sequence[Dict[str, Any]],
                         version: str, now: datetime.datetime):
    """A binary SEG on the source series' slices (`bodies`/`rois`: label maps in the series' [slice,
    row, column] order, value = a vertebra's mask_value). Frames only where a segment has voxels."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    src = source_header(ct_meta["files"][0])
    sop_uid = _uid(ct_meta["series_uid"], "seg", now.isoformat())
    ds = _base(src, SEG_SOP_CLASS, sop_uid, "SEG", _uid(ct_meta["series_uid"], "seg-series", now.isoformat()), 901,
               "osteonet screen: vertebral bodies and trabecular ROIs", now, version)
    ds.FrameOfReferenceUID = getattr(src, "FrameOfReferenceUID", None) or _uid(ct_meta["series_uid"], "for")
    ds.PositionReferenceIndicator = ""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ContentLabel = "VERTEBRAE"
    ds.ContentDescription = "osteonet screen"
    ds.ContentCreatorName = "osteonet"
    ds.SegmentationType = "BINARY"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(bodies.shape[1]), int(bodies.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.LossyImageCompression = "00"
    segs = segments_of(vertebrae)
    seq = []
    for number, label, kind, _value in segs:
        s = Dataset()
        s.SegmentNumber, s.SegmentLabel = number, label
        s.SegmentAlgorithmType, s.SegmentAlgorithmName = "AUTOMATIC", "osteonet screen"
        s.SegmentedPropertyCategoryCodeSequence = Seq([_code("91723000", "SCT", "Anatomical Structure")])
        s.SegmentedPropertyTypeCodeSequence = Seq([_code("VB", PRIVATE, "Vertebral body") if kind == "body"
                                                   else _code("VB-TROI", PRIVATE, "Vertebral body trabecular ROI")])
        seq.append(s)
    ds.SegmentSequence = Seq(seq)
    dz, dy, dx = (float(v) for v in ct_meta["spacing_zyx"])
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = _ds([dy, dx])
    pm.SliceThickness, pm.SpacingBetweenSlices = _ds([dz, dz])
    po = Dataset()
    po.ImageOrientationPatient = _ds(ct_meta["orientation"])
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Seq([pm]), Seq([po])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    dim_uid = _uid(sop_uid, "dim")
    org = Dataset()
    org.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = Seq([org])
    ds.DimensionOrganizationType = "3D"
    idx = []
    for pointer, group, label in ((0x0062000B, 0x0062000A, "ReferencedSegmentNumber"),
                                  (0x00200032, 0x00209113, "ImagePositionPatient")):
        d = Dataset()
        d.DimensionOrganizationUID, d.DimensionIndexPointer, d.FunctionalGroupPointer = dim_uid, pointer, group
        d.DimensionDescriptionLabel = label
        idx.append(d)
    ds.DimensionIndexSequence = Seq(idx)
    from scipy import ndimage

    frames, bits = [], []
    sop_class = ct_meta["sop_class_uid"]
    boxes = {"body": ndimage.find_objects(bodies), "roi": ndimage.find_objects(rois)}  # one pass each
    for number, _label, kind, value in segs:
        arr = bodies if kind == "body" else rois
        box = boxes[kind][value - 1] if value - 1 < len(boxes[kind]) else None
        if box is None:
            continue
        sub = arr[box] == value
        for kk in np.flatnonzero(sub.reshape(sub.shape[0], -1).any(axis=1)):
            k = box[0].start + int(kk)
            frame = np.zeros(arr.shape[1:], bool)
            frame[box[1], box[2]] = sub[kk]
            f = Dataset()
            der = Dataset()
            srcimg = _ref_sop(sop_class, ct_meta["sop_uids"][k])
            srcimg.PurposeOfReferenceCodeSequence = Seq([_code("121322", "DCM", "Source image for image processing operation")])
            der.SourceImageSequence = Seq([srcimg])
            der.DerivationCodeSequence = Seq([_code("113076", "DCM", "Segmentation")])
            f.DerivationImageSequence = Seq([der])
            fc = Dataset()
            fc.DimensionIndexValues = [number, int(k) + 1]
            f.FrameContentSequence = Seq([fc])
            pp = Dataset()
            pp.ImagePositionPatient = _ds(ct_meta["positions"][k])
            f.PlanePositionSequence = Seq([pp])
            si = Dataset()
            si.ReferencedSegmentNumber = number
            f.SegmentIdentificationSequence = Seq([si])
            frames.append(f)
            bits.append(frame.reshape(-1))
    ds.PerFrameFunctionalGroupsSequence = Seq(frames)
    ds.NumberOfFrames = len(frames)
    packed = np.packbits(np.concatenate(bits) if bits else np.zeros(0, bool), bitorder="little").tobytes()
    ds.PixelData = packed + (b"\0" if len(packed) % 2 else b"")
    ref = Dataset()
    ref.SeriesInstanceUID = ct_meta["series_uid"]
    ref.ReferencedInstanceSequence = Seq([_ref_sop(sop_class, u) for u in ct_meta["sop_uids"]])
    ds.ReferencedSeriesSequence = Seq([ref])
    ds["PixelData"].VR = "OB"
    return ds


def _item(rel: str, vtype: str, concept, **kw):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    d = Dataset()
    d.RelationshipType, d.ValueType = rel, vtype
    if concept is not None:
        d.ConceptNameCodeSequence = Seq([concept])
    if vtype == "CODE":
        d.ConceptCodeSequence = Seq([kw["code"]])
    elif vtype == "TEXT":
        d.TextValue = kw["text"]
    elif vtype == "UIDREF":
        d.UID = kw["uid"]
    elif vtype == "NUM":
        mv = Dataset()
        mv.NumericValue = f"{kw['value']:.6g}"
        mv.MeasurementUnitsCodeSequence = Seq([kw["units"]])
        d.MeasuredValueSequence = Seq([mv])
        if kw.get("children"):
            d.ContentSequence = Seq(kw["children"])
    elif vtype == "IMAGE":
        ref = _ref_sop(kw["sop_class"], kw["sop_uid"])
        if kw.get("segment") is not None:
            ref.ReferencedSegmentNumber = kw["segment"]
        d.ReferencedSOPSequence = Seq([ref])
    elif vtype == "CONTAINER":
        d.ContinuityOfContent = "SEPARATE"
        d.ContentSequence = Seq(kw.get("children", []))
    return d


_HU = ("[hnsf'U]", "UCUM", "Hounsfield unit")
_MM = ("mm", "UCUM", "millimeter")
_ACR_CODES = {"normal": ("ACR-NORMAL", "Normal BMD (> 120 mg/cm3)"), "osteopenia": ("ACR-OSTEOPENIA", "Osteopenia (80-120 mg/cm3)"),
              "osteoporosis": ("ACR-OSTEOPOROSIS", "Osteoporosis (< 80 mg/cm3)")}
_GENANT = ("Genant grade 0 (normal)", "Genant grade 1 (mild)", "Genant grade 2 (moderate)", "Genant grade 3 (severe)")
_PICKHARDT = {"osteoporosis_likely": ("L1-OP-LIKELY", "L1 attenuation <= 110 HU (osteoporosis likely)"),
              "low_bmd_possible": ("L1-LOWBMD-POSS", "L1 attenuation <= 160 HU (low BMD possible)"),
              "osteoporosis_unlikely": ("L1-OP-UNLIKELY", "L1 attenuation > 160 HU (osteoporosis unlikely)")}


def _num(concept, value, units, derivation=None):
    children = None
    if derivation is not None:
        children = [_item("HAS CONCEPT MOD", "CODE", _code("121401", "DCM", "Derivation"), code=derivation)]
    return _item("CONTAINS", "NUM", concept, value=value, units=_code(*units), children=children)


def sr_dataset(ct_meta: Dict[str, Any], seg, report: Dict[str, Any], version: str, now: datetime.datetime):
    """A TID 1500 Comprehensive SR of the screen's measurements, referencing the SEG's segments and
    the source CT series (image library: every source slice)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    src = source_header(ct_meta["files"][0])
    sop_uid = _uid(ct_meta["series_uid"], "sr", now.isoformat())
    ds = _base(src, SR_SOP_CLASS, sop_uid, "SR", _uid(ct_meta["series_uid"], "sr-series", now.isoformat()), 902,
               "osteonet screen: per-vertebra measurements", now, version)
    ds.ReferencedPerformedProcedureStepSequence = Seq([])
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = Seq([])
    ct_class = ct_meta["sop_class_uid"]
    evidence = Dataset()
    evidence.StudyInstanceUID = getattr(src, "StudyInstanceUID", "")
    s_ct, s_seg = Dataset(), Dataset()
    s_ct.SeriesInstanceUID = ct_meta["series_uid"]
    s_ct.ReferencedSOPSequence = Seq([_ref_sop(ct_class, u) for u in ct_meta["sop_uids"]])
    s_seg.SeriesInstanceUID = seg.SeriesInstanceUID
    s_seg.ReferencedSOPSequence = Seq([_ref_sop(SEG_SOP_CLASS, seg.SOPInstanceUID)])
    evidence.ReferencedSeriesSequence = Seq([s_ct, s_seg])
    ds.CurrentRequestedProcedureEvidenceSequence = Seq([evidence])

    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Seq([_code("126000", "DCM", "Imaging Measurement Report")])
    ds.ContinuityOfContent = "SEPARATE"
    tpl = Dataset()
    tpl.MappingResource, tpl.TemplateIdentifier = "DCMR", "1500"
    ds.ContentTemplateSequence = Seq([tpl])
    library = _item("CONTAINS", "CONTAINER", _code("111028", "DCM", "Image Library"), children=[
        _item("CONTAINS", "CONTAINER", _code("126200", "DCM", "Image Library Group"), children=[
            _item("CONTAINS", "IMAGE", None, sop_class=ct_class, sop_uid=u) for u in ct_meta["sop_uids"]])])
    segnum = {(kind, value): number for number, _l, kind, value in segments_of(report["vertebrae"])}
    groups = []
    for v in report["vertebrae"]:
        name = v["name"] or f"#{v['index']}"
        site = _code(name if v["level_known"] else f"V{v['index']}", PRIVATE, f"{name} vertebra")
        for kind in ("body", "roi"):
            number = segnum.get((kind, int(v["mask_value"])))
            if number is None:
                continue
            what = "vertebral body" if kind == "body" else "trabecular ROI"
            children = [
                _item("CONTAINS", "TEXT", _code("112039", "DCM", "Tracking Identifier"), text=f"{name} {what}"),
                _item("CONTAINS", "UIDREF", _code("112040", "DCM", "Tracking Unique Identifier"),
                      uid=_uid(sop_uid, name, kind)),
                _item("CONTAINS", "CODE", _code("121071", "DCM", "Finding"),
                      code=_code("VB", PRIVATE, "Vertebral body") if kind == "body"
                      else _code("VB-TROI", PRIVATE, "Vertebral body trabecular ROI")),
                _item("HAS CONCEPT MOD", "CODE", _code("363698007", "SCT", "Finding Site"), code=site),
                _item("CONTAINS", "IMAGE", _code("121191", "DCM", "Referenced Segment"), sop_class=SEG_SOP_CLASS,
                      sop_uid=seg.SOPInstanceUID, segment=number),
                _item("CONTAINS", "UIDREF", _code("121232", "DCM", "Source series for segmentation"),
                      uid=ct_meta["series_uid"]),
            ]
            if kind == "body":
                h = v.get("heights_mm") or {}
                if v.get("body_volume_ml") is not None:
                    children.append(_num(_code("118565006", "SCT", "Volume"), v["body_volume_ml"], ("mL", "UCUM", "milliliter")))
                for col in ("anterior", "middle", "posterior"):
                    if h.get(col) is not None:
                        children.append(_num(_code(f"VB-H-{col[:3].upper()}", PRIVATE, f"{col.capitalize()} vertebral body height"),
                                             h[col], _MM))
                if v.get("height_loss") is not None:
                    children.append(_num(_code("VB-HLOSS", PRIVATE, "Vertebral height loss"), 100.0 * v["height_loss"],
                                         ("%", "UCUM", "percent")))
                    g = int(v["genant_grade"])
                    children.append(_item("CONTAINS", "CODE", _code("GENANT", PRIVATE, "Genant semiquantitative grade"),
                                          code=_code(f"GENANT-{g}", PRIVATE, _GENANT[g])))
                if v.get("fracture_probability") is not None:
                    children.append(_num(_code("P-FRACTURE", PRIVATE, "Fracture probability (osteonet classifier)"),
                                         v["fracture_probability"], ("1", "UCUM", "no units")))
            else:
                att = _code("112031", "DCM", "Attenuation Coefficient")
                children += [_num(att, v["hu_mean"], _HU, _code("373098007", "SCT", "Mean")),
                             _num(att, v["hu_median"], _HU, _code("373099004", "SCT", "Median")),
                             _num(att, v["hu_sd"], _HU, _code("386136009", "SCT", "Standard Deviation")),
                             _num(_code("ROI-VOXELS", PRIVATE, "Number of voxels in ROI"), v["roi_voxels"],
                                  ("{voxels}", "UCUM", "voxels")),
                             _num(_code("BMD-CT", PRIVATE, "Bone mineral density (CT, calibrated)"), v["bmd_mg_cm3"],
                                  ("mg/cm3", "UCUM", "milligram per cubic centimeter"))]
                if v.get("acr_class_name") is not None:
                    value, meaning = _ACR_CODES[v["acr_class_name"]]
                    children.append(_item("CONTAINS", "CODE", _code("ACR-CLASS", PRIVATE, "ACR QCT BMD category"),
                                          code=_code(value, PRIVATE, meaning)))
                l1 = report["l1_screen"]
                if v["name"] == "L1" and l1["available"]:
                    children.append(_item("CONTAINS", "CODE", _code("PICKHARDT-L1", PRIVATE, "L1 attenuation profile (Pickhardt 2013)"),
                                          code=_code(_PICKHARDT[l1["profile"]][0], PRIVATE, _PICKHARDT[l1["profile"]][1])))
            groups.append(_item("CONTAINS", "CONTAINER", _code("125007", "DCM", "Measurement Group"), children=children))
    content = [
        _item("HAS CONCEPT MOD", "CODE", _code("121049", "DCM", "Language of Content Item and Descendants"),
              code=_code("en-US", "RFC5646", "English (United States)")),
        _item("HAS OBS CONTEXT", "CODE", _code("121005", "DCM", "Observer Type"), code=_code("121007", "DCM", "Device")),
        _item("HAS OBS CONTEXT", "UIDREF", _code("121012", "DCM", "Device Observer UID"), uid=_uid("osteonet-device", version)),
        _item("HAS OBS CONTEXT", "TEXT", _code("121013", "DCM", "Device Observer Name"), text="osteonet screen"),
        _item("HAS CONCEPT MOD", "CODE", _code("121058", "DCM", "Procedure reported"),
              code=_code("77477000", "SCT", "Computerized axial tomography")),
        library,
        _item("CONTAINS", "CONTAINER", _code("126010", "DCM", "Imaging Measurements"), children=groups),
    ]
    ds.ContentSequence = Seq(content)
    return ds


def to_bytes(ds) -> bytes:
    import pydicom

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()
