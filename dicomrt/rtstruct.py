"""The RT Structure Set we write: a pydicom ``Dataset`` built and validated in its constructor (highdicom style).

Why pydicom and not rt-utils: rt-utils (1.2.7) was measured against this project's bars and misses several.
It references exactly one series per object (the combined mode needs several); it leaves RTROIInterpretedType empty;
its contours (OpenCV ``findContours``) run through the centres of boundary voxels, so centre-inclusion rasterisers
(plastimatch, planning systems) lose a ring (a 1 cm³ cube comes back at Dice 0.895); it drops or mangles contours
of one or two voxels; it takes colours from its own list; it needs the CT files on disk and reads their pixel data.
Writing the few modules of the IOD with pydicom gives full control of every header and of the contour placement
(``dicomrt.contours``), and is faster: ``bench/bench_write.py`` (per-phase objects of a full-size 4DCT, headers read
included) measures rt-utils over 5 times slower. Where the time went, and what was done about it: the tracing is
vectorised over the whole volume (``dicomrt.contours``), and a job traces each mask once for all its objects
(``RoiMask.mask`` may be the traced ``MaskPolygons``); ContourData is composed with numpy for a whole ROI at once,
never as millions of Python ``DSfloat`` objects; the two large sequences (ROI contours, and the image references
of the frame of reference) are encoded straight to bytes (``dicomrt.raw_elements``) instead of thousands of
``Dataset`` items, and written as they are.

Modules written: Patient, General Study, RT Series, General Equipment, Frame of Reference, Structure Set, ROI Contour,
RT ROI Observations, SOP Common. Every contour has a ContourImageSequence naming its CT slice; the
ReferencedFrameOfReferenceSequence lists every image of every referenced series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, RTStructureSetStorage

from dicomrt.contours import MaskPolygons
from dicomrt.identifiers import new_uid
from dicomrt.instances import StudyAttributes
from dicomrt.provenance import MAX_LO, MAX_SH, Provenance, add_equipment, add_patient_and_study, check_text, now
from dicomrt.raw_elements import element, item, raw_sequence, sequence
from dicomrt.rt_errors import MaskShapeError, RTError
from dicomrt.structures import MAX_NAME_LENGTH, RoiType
from dicomrt.study import SeriesInfo

# The (retired, but universally expected) SOP class that RTReferencedStudySequence items name.
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
# The tags of the sequences encoded here (``dicomrt.raw_elements``), and of their elements.
_REFERENCED_FRAME_OF_REFERENCE_SEQUENCE = Tag("ReferencedFrameOfReferenceSequence")
_FRAME_OF_REFERENCE = Tag("FrameOfReferenceUID")
_RT_REFERENCED_STUDY_SEQUENCE = Tag("RTReferencedStudySequence")
_RT_REFERENCED_SERIES_SEQUENCE = Tag("RTReferencedSeriesSequence")
_SERIES_INSTANCE = Tag("SeriesInstanceUID")
_REFERENCED_SOP_CLASS = Tag("ReferencedSOPClassUID")
_REFERENCED_SOP_INSTANCE = Tag("ReferencedSOPInstanceUID")
_ROI_CONTOUR_SEQUENCE = Tag("ROIContourSequence")
_ROI_DISPLAY_COLOR = Tag("ROIDisplayColor")
_CONTOUR_SEQUENCE = Tag("ContourSequence")
_REFERENCED_ROI_NUMBER = Tag("ReferencedROINumber")
_CONTOUR_IMAGE_SEQUENCE = Tag("ContourImageSequence")
_CONTOUR_GEOMETRIC_TYPE = Tag("ContourGeometricType")
_NUMBER_OF_CONTOUR_POINTS = Tag("NumberOfContourPoints")
_CONTOUR_NUMBER = Tag("ContourNumber")
_CONTOUR_DATA = Tag("ContourData")
MAX_ST = 1024


@dataclass(frozen=True, eq=False)
class RoiMask:
    """One ROI to write: its header values and its (z, y, x) bool mask on the grid of ``series[series_index]``, or
    the mask's polygons traced already (``MaskPolygons``: several objects of a job share one tracing of a mask).

    ``name``: at most 16 characters (Eclipse's limit). ``colour``: RGB 0-255.
    """

    name: str
    colour: tuple[int, int, int]
    interpreted_type: RoiType
    mask: np.ndarray | MaskPolygons
    series_index: int = 0


class RTStructureSet(Dataset):
    """An RT Structure Set Storage object; if it exists, it is valid.

    ``attributes``: patient and study attributes of the input study (copied). ``series``: the CT volumes the contours
    are drawn on (one for a per-phase or reference object; several for a combined object, all in one frame of
    reference). ``rois``: the ROIs in order; ROINumber k + 1 for ``rois[k]``. ``label``: StructureSetLabel (at most
    16 characters). ``description``: SeriesDescription (at most 64). The model identity from ``provenance`` goes
    into every ROI's ROIGenerationDescription and the StructureSetDescription.

    A combined object (several series) is valid DICOM, but some planning systems (e.g. Eclipse import) accept only
    structure sets that reference a single image series: the per-phase and reference objects are the safe choice.
    """

    def __init__(
        self,
        attributes: StudyAttributes,
        series: Sequence[SeriesInfo],
        rois: Sequence[RoiMask],
        *,
        label: str,
        description: str,
        provenance: Provenance,
        series_number: int = 900,
        instance_number: int = 1,
    ) -> None:
        super().__init__()
        series = tuple(series)
        rois = tuple(rois)
        _check_inputs(attributes, series, rois, label, description, provenance, series_number)
        date, time = now()
        self.file_meta = FileMetaDataset()
        self.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
        self.SOPInstanceUID = new_uid()
        self.file_meta.MediaStorageSOPInstanceUID = self.SOPInstanceUID
        self.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        self.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        add_patient_and_study(self, attributes)
        self.SOPClassUID = RTStructureSetStorage
        self.InstanceCreationDate, self.InstanceCreationTime = date, time
        # RT Series
        self.Modality = "RTSTRUCT"
        self.SeriesInstanceUID = new_uid()
        self.SeriesNumber = series_number
        self.SeriesDescription = description
        self.SeriesDate, self.SeriesTime = date, time
        self.OperatorsName = ""
        add_equipment(self, provenance)
        # Frame of Reference (required by recent editions of the IOD)
        self.FrameOfReferenceUID = series[0].geometry.frame_of_reference_uid
        self.PositionReferenceIndicator = ""
        # Structure Set
        self.StructureSetLabel = label
        self.StructureSetName = label
        self.StructureSetDescription = (f"{description}; made by itvsam {provenance.software_version}; "
                                        f"model {provenance.model_identity}")[:MAX_ST]
        self.InstanceNumber = instance_number
        self.StructureSetDate, self.StructureSetTime = date, time
        frame_of_reference = self.FrameOfReferenceUID
        self[_REFERENCED_FRAME_OF_REFERENCE_SEQUENCE] = raw_sequence(_REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
                                                                     [_referenced_frame(attributes, series)])
        self.StructureSetROISequence = [_structure_set_roi(number, roi.name, frame_of_reference, provenance)
                                        for number, roi in enumerate(rois, start=1)]
        self[_ROI_CONTOUR_SEQUENCE] = raw_sequence(_ROI_CONTOUR_SEQUENCE, [
            _roi_contour(number, roi, series[roi.series_index]) for number, roi in enumerate(rois, start=1)])
        self.RTROIObservationsSequence = [_observation(number, roi.interpreted_type)
                                          for number, roi in enumerate(rois, start=1)]
        # Marked as encoded the way it is written, so that pydicom writes the encoded sequences as they are instead
        # of parsing them to correct ambiguous VRs (there are none in this IOD).
        self.set_original_encoding(False, True, self._character_set)

    @property
    def roi_names(self) -> list[str]:
        return [str(item.ROIName) for item in self.StructureSetROISequence]

    def save(self, path: Path) -> Path:
        """Write the object as a DICOM Part 10 file at ``path`` (parents created); returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save_as(path, enforce_file_format=True)
        return path


def _check_inputs(attributes: StudyAttributes, series: tuple[SeriesInfo, ...], rois: tuple[RoiMask, ...],
                  label: str, description: str, provenance: Provenance, series_number: int) -> None:
    if not isinstance(attributes, StudyAttributes):
        raise RTError(f"attributes must be StudyAttributes, got {type(attributes).__name__}")
    if not attributes.study_instance_uid:
        raise RTError("attributes.study_instance_uid must not be empty")
    if not isinstance(provenance, Provenance):
        raise RTError(f"provenance must be Provenance, got {type(provenance).__name__}")
    if not series or not all(isinstance(s, SeriesInfo) for s in series):
        raise RTError(f"series must be one or more SeriesInfo, got {[type(s).__name__ for s in series]}")
    frames = {s.geometry.frame_of_reference_uid for s in series}
    if len(frames) != 1:
        raise RTError(f"series must share one FrameOfReferenceUID, got {len(frames)} different ones")
    check_text("label", label, MAX_SH)
    if not label.strip():
        raise RTError("label (StructureSetLabel) must not be empty")
    check_text("description", description, MAX_LO)
    if not 0 <= series_number <= 2**31 - 1:
        raise RTError(f"series_number must fit an IS (0 to 2**31 - 1), got {series_number}")
    seen: set[str] = set()
    for k, roi in enumerate(rois):
        where = f"rois[{k}] ({roi.name!r})"
        check_text(f"{where}.name", roi.name, MAX_NAME_LENGTH)
        if not roi.name.strip():
            raise RTError(f"{where}: name must not be empty")
        if roi.name.upper() in seen:
            raise RTError(f"{where}: ROI names must be unique, got {roi.name!r} twice")
        seen.add(roi.name.upper())
        if len(roi.colour) != 3 or not all(isinstance(c, int | np.integer) and 0 <= c <= 255 for c in roi.colour):
            raise RTError(f"{where}: colour must be three integers 0-255, got {roi.colour!r}")
        if not isinstance(roi.interpreted_type, RoiType):
            raise RTError(f"{where}: interpreted_type must be a RoiType, got {roi.interpreted_type!r}")
        if not 0 <= roi.series_index < len(series):
            raise RTError(f"{where}: series_index must be in 0..{len(series) - 1}, got {roi.series_index}")
        expected = series[roi.series_index].geometry.shape
        mask = roi.mask if isinstance(roi.mask, MaskPolygons) else np.asarray(roi.mask)
        if tuple(mask.shape) != expected:
            raise MaskShapeError(f"{where}: mask shape (z, y, x) must be {expected} (its series' grid), got "
                                 f"{tuple(mask.shape)}")
        if isinstance(mask, np.ndarray) and mask.dtype != bool:
            raise MaskShapeError(f"{where}: mask must be boolean, got dtype {mask.dtype}")


def _image(sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """An encoded ContourImageSequence item: the image, by its SOP class and instance."""
    return item(element(_REFERENCED_SOP_CLASS, "UI", sop_class_uid), element(_REFERENCED_SOP_INSTANCE, "UI",
                                                                               sop_instance_uid))


def _referenced_frame(attributes: StudyAttributes, series: tuple[SeriesInfo, ...]) -> bytes:
    """The encoded ReferencedFrameOfReferenceSequence item: the study, and per series UID every image of its
    volume(s)."""
    images: dict[str, dict[str, str]] = {}  # series UID → SOPInstanceUID → SOPClassUID, in z order
    for volume in series:
        listing = images.setdefault(volume.series_instance_uid, {})
        for header in volume.instances:
            listing[header.sop_instance_uid] = header.sop_class_uid
    series_items = [item(element(_SERIES_INSTANCE, "UI", series_uid),
                         sequence(_CONTOUR_IMAGE_SEQUENCE, [_image(cls, uid) for uid, cls in listing.items()]))
                    for series_uid, listing in images.items()]
    study = item(element(_REFERENCED_SOP_CLASS, "UI", DETACHED_STUDY_MANAGEMENT),
                 element(_REFERENCED_SOP_INSTANCE, "UI", attributes.study_instance_uid),
                 sequence(_RT_REFERENCED_SERIES_SEQUENCE, series_items))
    return item(element(_FRAME_OF_REFERENCE, "UI", series[0].geometry.frame_of_reference_uid),
                sequence(_RT_REFERENCED_STUDY_SEQUENCE, [study]))


def _structure_set_roi(number: int, name: str, frame_of_reference: str, provenance: Provenance) -> Dataset:
    item = Dataset()
    item.ROINumber = number
    item.ReferencedFrameOfReferenceUID = frame_of_reference
    item.ROIName = name
    item.ROIGenerationAlgorithm = "AUTOMATIC"
    item.ROIGenerationDescription = provenance.model_identity
    return item


def _observation(number: int, interpreted_type: RoiType) -> Dataset:
    item = Dataset()
    item.ObservationNumber = number
    item.ReferencedROINumber = number
    item.RTROIInterpretedType = interpreted_type.value
    item.ROIInterpreter = ""
    return item


def _roi_contour(number: int, roi: RoiMask, series: SeriesInfo) -> bytes:
    """The encoded ROIContourSequence item of ROI ``number``: its colour and its contours on ``series``."""
    polygons = roi.mask if isinstance(roi.mask, MaskPolygons) else MaskPolygons.trace(roi.mask)
    contours = _contours(polygons, series)
    return item(element(_ROI_DISPLAY_COLOR, "IS", "\\".join(str(int(c)) for c in roi.colour)),
                *([sequence(_CONTOUR_SEQUENCE, contours)] if contours else []),
                element(_REFERENCED_ROI_NUMBER, "IS", str(number)))


def _contours(polygons: MaskPolygons, series: SeriesInfo) -> list[bytes]:
    """The encoded ContourSequence items: one CLOSED_PLANAR contour per polygon, naming its CT slice,
    ContourNumber 1, 2, …"""
    images: dict[int, bytes] = {}  # slice index → its ContourImageSequence element
    items = []
    texts = _contour_data(polygons.place(series.geometry), polygons.bounds)
    counts = np.diff(polygons.bounds).tolist()
    for number, (k, count, text) in enumerate(zip(polygons.slice_indices.tolist(), counts, texts, strict=True),
                                              start=1):
        if k not in images:
            header = series.instances[k]
            images[k] = sequence(_CONTOUR_IMAGE_SEQUENCE, [_image(header.sop_class_uid, header.sop_instance_uid)])
        items.append(item(images[k],
                          element(_CONTOUR_GEOMETRIC_TYPE, "CS", "CLOSED_PLANAR"),
                          element(_NUMBER_OF_CONTOUR_POINTS, "IS", str(count)),
                          element(_CONTOUR_NUMBER, "IS", str(number)),
                          element(_CONTOUR_DATA, "DS", text)))
    return items


def _contour_data(points: np.ndarray, bounds: np.ndarray) -> list[bytes]:
    """The ContourData of each polygon (``points`` (N, 3) LPS mm, polygon p in rows ``bounds[p]:bounds[p + 1]``):
    x\\y\\z… with 4 decimals, each value well within DS's 16 characters.

    The text ``"%.4f" % (round(v, 4) + 0.0)`` gives (no "-0.0000"), composed with numpy for every value at once
    rather than formatted value by value (a third of the writing time before). ``rint(v * 1e4)`` is how numpy rounds
    to 4 decimals; the digits of that integer are the ones ``%.4f`` prints.
    """
    scaled = np.rint(np.asarray(points, dtype=np.float64).ravel() * 1e4)
    whole, fraction = np.divmod(np.abs(scaled).astype(np.int64), 10_000)
    width = len(str(int(whole.max(initial=0))))
    # A row of characters per value: sign, integer digits (right-aligned), point, 4 decimals, separator; 0: none.
    chars = np.zeros((len(scaled), width + 7), dtype=np.uint8)
    chars[scaled < 0, 0] = ord("-")
    for j in range(width):  # the digit of 10**j; no leading zeros but for the units
        chars[:, width - j] = np.where((whole >= 10**j) | (j == 0), whole // 10**j % 10 + ord("0"), 0)
    chars[:, width + 1] = ord(".")
    for j in range(4):
        chars[:, width + 2 + j] = fraction // 10 ** (3 - j) % 10 + ord("0")
    chars[:, width + 6] = ord("\\")
    chars[3 * bounds[1:] - 1, width + 6] = 0  # no separator after a polygon's last value
    offsets = np.concatenate([[0], np.cumsum(np.count_nonzero(chars, axis=1))])[3 * bounds]
    text = chars[chars != 0].tobytes()
    return [text[a:b] for a, b in pairwise(offsets.tolist())]
