"""One DICOM file's header, read without its pixel data: the unit the study reader groups and checks."""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import pydicom
from pydicom.charset import default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
# CT images the reader recognises: their headers are read, so that a study is refused by name (not ignored).
CT_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE})
# The image SOP classes the reader reads into volumes. Every other class in ``CT_SOP_CLASSES`` (Enhanced CT:
# multi-frame, geometry in functional groups) is refused by ``scan_study`` (``unsupported_image``): a receiver should
# refuse at storage time what is not in this set, rather than accept an instance the reader will refuse later.
READABLE_IMAGE_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE})

# What pydicom raises on a malformed file or a malformed value, when it parses the file and when it converts an
# element's value (lazily, on first access): an unknown VR (NotImplementedError), a length that does not fit its VR
# (BytesLengthException), an unparsable number (ValueError, OverflowError), a tag where none can be (OSError), a file
# cut short (EOFError, struct.error), bytes its character set cannot decode (UnicodeError), nesting without end
# (RecursionError), a deflated dataset that does not inflate (zlib.error). Caught around pydicom's calls and our
# conversions of their values only, never around our own logic: a bug of ours must still surface.
MALFORMED_DICOM_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError, BytesLengthException, NotImplementedError, KeyError, IndexError, ValueError, TypeError,
    AttributeError, OverflowError, struct.error, EOFError, OSError, RecursionError, zlib.error,
)
PREAMBLE_LENGTH = 128
# pydicom inflates a Deflated Explicit VR Little Endian dataset whole, pixel data included, in memory: a few
# megabytes can inflate to gigabytes. Such a file is inflated once in bounded chunks first and skipped when it holds
# more than this (a 4096 x 4096 16-bit image, the reader's largest, with its header fits).
MAX_INFLATED_BYTES = 64 * 2**20
_INFLATE_CHUNK = 2**20

T = TypeVar("T")

_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_SPECIFIC_CHARACTER_SET = Tag("SpecificCharacterSet")


class Skip(StrEnum):
    """Why a file is not part of the study; skipped files are counted, never fatal."""

    NOT_DICOM = "not DICOM"
    UNREADABLE = "unreadable"
    NOT_CT = "not a CT image"


@dataclass(frozen=True)
class Skipped:
    """Why a file is skipped, with the detail: the file's name, the element and what was wrong with it (never the
    value itself: it may be patient data)."""

    reason: Skip
    detail: str


class MalformedValueError(ValueError):
    """A header element whose value cannot be interpreted (raised inside this module, returned as ``Skipped``)."""


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
    result = read_header_or_skipped(path)
    return result.reason if isinstance(result, Skipped) else result


def read_header_or_skipped(path: Path) -> InstanceHeader | Skipped:
    """``read_header`` with the detail of a skip (``Skipped.detail``: file, element, what was wrong).

    A file that is not Part-10 DICOM is ``NOT_DICOM``; one that pydicom cannot parse, or whose header holds a value
    that cannot be interpreted (an unknown VR, a length that does not fit its VR, a number that is not one or not
    finite, several values where one is expected), is ``UNREADABLE``; a readable object that is not a CT image is
    ``NOT_CT``. UIDs are checked by the study reader (``dicomrt.reader``), which refuses a study with invalid ones.
    """
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below; the open itself may fail like a read
    except OSError as exc:
        return _skipped(Skip.UNREADABLE, path, f"cannot be opened ({type(exc).__name__})")
    with fp:
        try:
            too_large = _inflates_too_large(fp, path)
            if too_large:
                return _skipped(Skip.UNREADABLE, path, too_large)
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError:
            return _skipped(Skip.NOT_DICOM, path, "no DICOM File Meta Information")
        except MALFORMED_DICOM_ERRORS as exc:
            return _skipped(Skip.UNREADABLE, path, f"cannot be parsed ({type(exc).__name__}: {_clip(str(exc))})")
        native_pixels = _native_pixel_data(fp, ds)
    try:
        return _header(path, ds, native_pixels)
    except MalformedValueError as exc:
        return _skipped(Skip.UNREADABLE, path, str(exc))


def _inflates_too_large(fp: io.BufferedReader, path: Path) -> str | None:
    """Why a deflated dataset is not read (it inflates past ``MAX_INFLATED_BYTES``), or None; ``fp`` is left at the
    start of the file. Other files cost a look at their first 2 kB in the read buffer."""
    if DeflatedExplicitVRLittleEndian.encode() not in fp.peek(2048)[:2048]:
        return None
    meta = read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    group_length = meta.get("FileMetaInformationGroupLength")
    if not isinstance(group_length, int):
        return "a deflated dataset without FileMetaInformationGroupLength"
    fp.seek(PREAMBLE_LENGTH + 4 + 12 + group_length)  # after (0002,0000) UL: tag, VR, length, 4-byte value
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    data = fp.read(_INFLATE_CHUNK)
    while data and not inflater.eof:
        inflated += len(inflater.decompress(data, _INFLATE_CHUNK))
        if inflated > MAX_INFLATED_BYTES:
            return f"the deflated dataset inflates to more than {MAX_INFLATED_BYTES // 2**20} MiB"
        data = inflater.unconsumed_tail or fp.read(_INFLATE_CHUNK)
    fp.seek(0)
    return None


def _skipped(reason: Skip, path: Path, what: str) -> Skipped:
    """The skip of ``path``; the log line leaves out the file name (an export may name files after the patient)."""
    logger.debug("file skipped (%s): %s", reason.value, what)
    return Skipped(reason, f"{path.name}: {what}")


def _clip(text: str, length: int = 120) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= length else text[: length - 1] + "…"


def zero_preamble(path: Path) -> bool:
    """Zero the 128-byte preamble of the Part-10 file at ``path`` in place when it is not all zeros; True when the
    file was changed.

    The preamble is free for applications, so it can hold an executable or archive header (a file that is both DICOM
    and ELF, or DICOM and ZIP): stored input must not keep one. Only the preamble changes: the ``DICM`` prefix and
    every later byte stay byte-identical. A file without ``DICM`` at offset 128 (not Part 10, or shorter than 132
    bytes) is left alone (False).
    """
    with open(path, "r+b") as fp:
        head = fp.read(PREAMBLE_LENGTH + 4)
        if len(head) < PREAMBLE_LENGTH + 4 or head[PREAMBLE_LENGTH:] != b"DICM":
            return False
        if not any(head[:PREAMBLE_LENGTH]):
            return False
        fp.seek(0)
        fp.write(bytes(PREAMBLE_LENGTH))
        fp.flush()
    return True


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


def _header(path: Path, ds: pydicom.Dataset, native_pixels: tuple[int, int] | None) -> InstanceHeader | Skipped:
    """The header of a CT image; raises ``MalformedValueError`` naming the element whose value cannot be used."""
    meta = getattr(ds, "file_meta", None) or pydicom.Dataset()
    if "SOPClassUID" not in ds and "Modality" not in ds:
        # nothing identifies the object: a header cut short (the file meta may still name an image class)
        cut_short = _str(meta, "MediaStorageSOPClassUID") in CT_SOP_CLASSES
        return (_skipped(Skip.UNREADABLE, path, "the header of a CT image ends before SOPClassUID")
                if cut_short else _skipped(Skip.NOT_CT, path, "no SOPClassUID or Modality"))
    sop_class = _str(ds, "SOPClassUID")
    modality = _str(ds, "Modality")
    if sop_class not in CT_SOP_CLASSES and not (sop_class == "" and modality == "CT"):
        # an empty SOPClassUID on a CT is kept, so that the reader refuses it by name instead of ignoring it
        return _skipped(Skip.NOT_CT, path, "not a CT image")
    if "PixelData" not in ds and _int(ds, "Rows") is None:
        return _skipped(Skip.NOT_CT, path, "a CT object without an image")
    # Temporal position: classic images carry TemporalPositionIdentifier; some exports put TemporalPositionIndex
    # (an enhanced-CT attribute) at the top level.
    temporal = _int(ds, "TemporalPositionIdentifier")
    if temporal is None:
        temporal = _int(ds, "TemporalPositionIndex")
    return InstanceHeader(
        path=path,
        file_size=os.path.getsize(path),
        transfer_syntax_uid=_str(meta, "TransferSyntaxUID"),
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
        rescale_slope=_rescale_slope(ds),
        rescale_intercept=_or(_float(ds, "RescaleIntercept"), 0.0),
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


def _value(ds: pydicom.Dataset, keyword: str, convert: Callable[[Any], T], expected: str) -> T | None:
    """``convert`` of the value of ``keyword`` (None when absent or empty). pydicom converts a raw element on first
    access, so both its conversion and ours are guarded here: a value that cannot be used raises
    ``MalformedValueError`` naming the element and what was expected, without the value (it may be patient data).

    The raw element is converted here as ``Dataset.__getitem__`` converts it (in the dataset's character set;
    SpecificCharacterSet itself in the default one), but not stored back: ``Dataset.get(keyword)``, which looks the
    keyword up and stores the element before returning its value, took a fifth of the header scan of a study."""
    try:
        element = ds.get_item(_tag(keyword))
        if isinstance(element, RawDataElement):
            encoding = default_encoding if element.tag == _SPECIFIC_CHARACTER_SET else ds.original_character_set
            element = convert_raw_data_element(element, encoding=encoding, ds=ds)
        value = None if element is None else element.value
        if value is None or (isinstance(value, str | bytes) and not value.strip()):
            return None
        return convert(value)
    except MALFORMED_DICOM_ERRORS as exc:
        raise MalformedValueError(f"{keyword} {_tag(keyword)} is not {expected} "
                                  f"({type(exc).__name__})") from exc


@cache
def _tag(keyword: str) -> BaseTag:
    return Tag(tag_for_keyword(keyword))


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, pydicom.multival.MultiValue | list | tuple) else [value]


def _single(value: Any) -> Any:
    values = _values(value)
    if len(values) != 1:
        raise ValueError(f"{len(values)} values where one is expected")
    return values[0]


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _text(value: Any) -> str:
    if isinstance(value, bytes):  # a text element read with a binary VR
        raise TypeError("bytes where text is expected")
    return str(value).strip()


def _str(ds: pydicom.Dataset, keyword: str) -> str:
    return _value(ds, keyword, lambda v: "\\".join(_text(x) for x in _values(v)), "text") or ""


def _multi(ds: pydicom.Dataset, keyword: str) -> list[str]:
    return _value(ds, keyword, lambda v: [_text(x) for x in _values(v)], "text") or []


def _integer(value: Any) -> int:
    single = _single(value)
    if isinstance(single, int):
        return int(single)
    number = _finite(single)
    if not number.is_integer():
        raise ValueError("not an integer")
    return int(number)


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    return _value(ds, keyword, _integer, "one integer")


def _float(ds: pydicom.Dataset, keyword: str) -> float | None:
    return _value(ds, keyword, lambda v: _finite(_single(v)), "one finite number")


def _floats(ds: pydicom.Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    """``n`` finite numbers, or None when the element is absent or holds another count of values (the study reader
    then refuses the missing geometry by name)."""
    values = _value(ds, keyword, lambda v: [_finite(x) for x in _values(v)], f"{n} finite numbers")
    return tuple(values) if values is not None and len(values) == n else None


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _rescale_slope(ds: pydicom.Dataset) -> float:
    slope = _or(_float(ds, "RescaleSlope"), 1.0)
    if slope == 0:
        raise MalformedValueError(f"RescaleSlope {_tag('RescaleSlope')} is 0: every pixel would "
                                  f"have the same value")
    return slope


def transfer_syntax_name(uid: str) -> str:
    return UID(uid).name if uid else "unknown transfer syntax"
