"""One DICOM file's header, read without its pixel data: the unit the study reader groups and checks."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
CT_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE})



_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


class Skip(StrEnum):
    """Why a file is not part of the study; skipped files are counted, never fatal."""

    NOT_DICOM = "not DICOM"
    UNREADABLE = "unreadable"
    NOT_CT = "not a CT image"


@dataclass(frozen=True)
class StudyAttributes:
    """Patient and study attributes copied into the objects we write. Identifying: never logged, never in repr."""

    study_instance_uid: str = field(repr=False)
    patient_name: str = field(repr=False)
    patient_id: str = field(repr=False)
    patient_birth_date: str = field(repr=False)
    patient_sex: str = field(repr=False)
    study_date: str = field(repr=False)
    study_time: str = field(repr=False)
    study_id: str = field(repr=False)
    accession_number: str = field(repr=False)
    referring_physician_name: str = field(repr=False)
    study_description: str = field(repr=False)
    specific_character_set: str = field(repr=False)


@dataclass(frozen=True)
class InstanceHeader:
    """The header of one CT image file. Positions and spacings in mm (LPS); absent values are None."""

    path: Path
    file_size: int
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    acquisition_time: str
    image_type: tuple[str, ...]
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    number_of_frames: int
    samples_per_pixel: int
    bits_allocated: int
    pixel_representation: int
    native_pixels: tuple[int, int] | None  # (file offset, length) of uncompressed little-endian pixel data
    photometric_interpretation: str
    rescale_slope: float
    rescale_intercept: float
    nominal_percent: float | None
    temporal_position: int | None
    number_of_temporal_positions: int | None
    study: StudyAttributes = field(repr=False)

    @property
    def study_instance_uid(self) -> str:
        return self.study.study_instance_uid


def read_header(path: Path) -> InstanceHeader | Skip:
    """The CT header of ``path``, or why it is skipped. Raises nothing for a bad file: a bad file is a ``Skip``."""
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            native_pixels = _native_pixel_data(fp, ds)
    except InvalidDicomError:
        return Skip.NOT_DICOM
    except Exception as exc:  # a corrupt file of any kind is skipped and counted, never fatal
        logger.debug("unreadable file skipped: %s", type(exc).__name__)
        return Skip.UNREADABLE
    try:
        return _header(path, ds, native_pixels)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:  # malformed values in a header element
        logger.debug("unreadable header skipped: %s", type(exc).__name__)
        return Skip.UNREADABLE


def _native_pixel_data(fp: BinaryIO, ds: pydicom.Dataset) -> tuple[int, int] | None:
    """(file offset, length) of uncompressed little-endian PixelData, read from its element header where
    ``dcmread(stop_before_pixels=True)`` left ``fp``; None for any other encoding (pydicom decodes those)."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian) or fp.read(4) != _PIXEL_DATA_TAG:
        return None
    if syntax == ExplicitVRLittleEndian:
        if fp.read(2) not in (b"OW", b"OB"):
            return None
        fp.read(2)  # reserved
    length = int.from_bytes(fp.read(4), "little")
    return None if length == 0xFFFFFFFF else (fp.tell(), length)


def _header(path: Path, ds: pydicom.Dataset, native_pixels: tuple[int, int] | None) -> InstanceHeader | Skip:
    meta = getattr(ds, "file_meta", None)
    if "SOPClassUID" not in ds and "Modality" not in ds:
        # nothing identifies the object: a header cut short (the file meta may still name an image class)
        return Skip.UNREADABLE if str(getattr(meta, "MediaStorageSOPClassUID", "")) in CT_SOP_CLASSES else Skip.NOT_CT
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "")
    if sop_class not in CT_SOP_CLASSES and not (sop_class == "" and modality == "CT"):
        # an empty SOPClassUID on a CT is kept, so that the reader refuses it by name instead of ignoring it
        return Skip.NOT_CT
    if "PixelData" not in ds and ds.get("Rows") is None:
        return Skip.NOT_CT
    # Temporal position: classic images carry TemporalPositionIdentifier; some exports put TemporalPositionIndex
    # (an enhanced-CT attribute) at the top level.
    temporal = _int(ds, "TemporalPositionIdentifier")
    if temporal is None:
        temporal = _int(ds, "TemporalPositionIndex")
    return InstanceHeader(
        path=path,
        file_size=os.path.getsize(path),
        transfer_syntax_uid=str(getattr(meta, "TransferSyntaxUID", "") or ""),
        sop_class_uid=sop_class,
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        series_instance_uid=_str(ds, "SeriesInstanceUID"),
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        modality=modality,
        series_description=_str(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        acquisition_time=_str(ds, "AcquisitionTime") or _str(ds, "ContentTime"),
        image_type=tuple(str(v).upper() for v in _multi(ds, "ImageType")),
        position=_floats(ds, "ImagePositionPatient", 3),
        orientation=_floats(ds, "ImageOrientationPatient", 6),
        pixel_spacing=_floats(ds, "PixelSpacing", 2),
        rows=_int(ds, "Rows") or 0,
        columns=_int(ds, "Columns") or 0,
        number_of_frames=_int(ds, "NumberOfFrames") or 1,
        samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
        bits_allocated=_int(ds, "BitsAllocated") or 0,
        pixel_representation=_int(ds, "PixelRepresentation") or 0,
        native_pixels=native_pixels,
        photometric_interpretation=_str(ds, "PhotometricInterpretation"),
        rescale_slope=float(ds.get("RescaleSlope", 1) or 1),
        rescale_intercept=float(ds.get("RescaleIntercept", 0) or 0),
        nominal_percent=_float(ds, "NominalPercentageOfRespiratoryPhase"),
        temporal_position=temporal,
        number_of_temporal_positions=_int(ds, "NumberOfTemporalPositions"),
        study=StudyAttributes(
            study_instance_uid=_str(ds, "StudyInstanceUID"),
            patient_name=_str(ds, "PatientName"),
            patient_id=_str(ds, "PatientID"),
            patient_birth_date=_str(ds, "PatientBirthDate"),
            patient_sex=_str(ds, "PatientSex"),
            study_date=_str(ds, "StudyDate"),
            study_time=_str(ds, "StudyTime"),
            study_id=_str(ds, "StudyID"),
            accession_number=_str(ds, "AccessionNumber"),
            referring_physician_name=_str(ds, "ReferringPhysicianName"),
            study_description=_str(ds, "StudyDescription"),
            specific_character_set="\\".join(_multi(ds, "SpecificCharacterSet")),
        ),
    )


def _str(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _multi(ds: pydicom.Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, pydicom.multival.MultiValue | list | tuple) else [str(value)]


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    return None if value is None or value == "" else int(value)


def _float(ds: pydicom.Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    return None if value is None or value == "" else float(value)


def _floats(ds: pydicom.Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    values = _multi(ds, keyword)
    if len(values) != n:
        return None
    return tuple(float(v) for v in values)


def transfer_syntax_name(uid: str) -> str:
    return UID(uid).name if uid else "unknown transfer syntax"
