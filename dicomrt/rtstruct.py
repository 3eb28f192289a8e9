"""The RT Structure Set we write: a pydicom ``Dataset`` built and validated in its constructor (highdicom style).

Why pydicom and not rt-utils: rt-utils (1.2.7) was measured against this project's bars and misses several.
It references exactly one series per object (the combined mode needs several); it leaves RTROIInterpretedType empty;
its contours (OpenCV ``findContours``) run through the centres of boundary voxels, so centre-inclusion rasterisers
(plastimatch, planning systems) lose a ring (a 1 cm³ cube comes back at Dice 0.895); it drops or mangles contours
of one or two voxels; it takes colours from its own list; it needs the CT files on disk and reads their pixel data.
Writing the few modules of the IOD with pydicom gives full control of every header and of the contour placement
(``dicomrt.contours``), and is several times faster (``bench/bench_write.py``): ContourData is formatted once as a
DS string, never as millions of Python ``DSfloat`` objects.

Modules written: Patient, General Study, RT Series, General Equipment, Frame of Reference, Structure Set, ROI Contour,
RT ROI Observations, SOP Common. Every contour has a ContourImageSequence naming its CT slice; the
ReferencedFrameOfReferenceSequence lists every image of every referenced series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, RTStructureSetStorage

from dicomrt.contours import mask_contours
from dicomrt.identifiers import new_uid
from dicomrt.instances import StudyAttributes
from dicomrt.provenance import MAX_LO, MAX_SH, Provenance, add_equipment, add_patient_and_study, check_text, now
from dicomrt.rt_errors import MaskShapeError, RTError
from dicomrt.structures import MAX_NAME_LENGTH, RoiType
from dicomrt.study import SeriesInfo

# The (retired, but universally expected) SOP class that RTReferencedStudySequence items name.
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
_CONTOUR_DATA = Tag("ContourData")
_CONTOUR_NUMBER = Tag("ContourNumber")
_CONTOUR_GEOMETRIC_TYPE = Tag("ContourGeometricType")
_NUMBER_OF_CONTOUR_POINTS = Tag("NumberOfContourPoints")
_REFERENCED_SOP_CLASS = Tag("ReferencedSOPClassUID")
_REFERENCED_SOP_INSTANCE = Tag("ReferencedSOPInstanceUID")
MAX_ST = 1024


@dataclass(frozen=True, eq=False)
class RoiMask:
    """One ROI to write: its header values and its (z, y, x) bool mask on the grid of ``series[series_index]``.

    ``name``: at most 16 characters (Eclipse's limit). ``colour``: RGB 0-255.
    """

    name: str
    colour: tuple[int, int, int]
    interpreted_type: RoiType
    mask: np.ndarray
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
        self.ReferencedFrameOfReferenceSequence = [_referenced_frame(attributes, series)]
        roi_items, contour_items, observations = [], [], []
        for number, roi in enumerate(rois, start=1):
            roi_items.append(_structure_set_roi(number, roi.name, frame_of_reference, provenance))
            contour_items.append(_roi_contour(number, roi, series[roi.series_index]))
            observations.append(_observation(number, roi.interpreted_type))
        self.StructureSetROISequence = roi_items
        self.ROIContourSequence = contour_items
        self.RTROIObservationsSequence = observations

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
        mask = np.asarray(roi.mask)
        if mask.shape != expected:
            raise MaskShapeError(f"{where}: mask shape (z, y, x) must be {expected} (its series' grid), got "
                                 f"{mask.shape}")
        if mask.dtype != bool:
            raise MaskShapeError(f"{where}: mask must be boolean, got dtype {mask.dtype}")


def _image_item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _referenced_frame(attributes: StudyAttributes, series: tuple[SeriesInfo, ...]) -> Dataset:
    """ReferencedFrameOfReferenceSequence item: the study, and per series UID every image of its volume(s)."""
    images: dict[str, dict[str, str]] = {}  # series UID → SOPInstanceUID → SOPClassUID, in z order
    for volume in series:
        listing = images.setdefault(volume.series_instance_uid, {})
        for header in volume.instances:
            listing[header.sop_instance_uid] = header.sop_class_uid
    series_items = []
    for series_uid, listing in images.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ContourImageSequence = [_image_item(cls, uid) for uid, cls in listing.items()]
        series_items.append(item)
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = attributes.study_instance_uid
    study.RTReferencedSeriesSequence = series_items
    frame = Dataset()
    frame.FrameOfReferenceUID = series[0].geometry.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    return frame


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


def _roi_contour(number: int, roi: RoiMask, series: SeriesInfo) -> Dataset:
    item = Dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = [int(c) for c in roi.colour]
    contours = []
    for k, contour in enumerate(mask_contours(np.asarray(roi.mask), series.geometry), start=1):
        header = series.instances[contour.slice_index]
        image = _raw_item((_REFERENCED_SOP_CLASS, "UI", header.sop_class_uid),
                          (_REFERENCED_SOP_INSTANCE, "UI", header.sop_instance_uid))
        contour_item = _raw_item((_CONTOUR_NUMBER, "IS", str(k)),
                                 (_CONTOUR_GEOMETRIC_TYPE, "CS", "CLOSED_PLANAR"),
                                 (_NUMBER_OF_CONTOUR_POINTS, "IS", str(len(contour.points))))
        contour_item[_CONTOUR_DATA] = _contour_data(contour.points)
        contour_item.ContourImageSequence = [image]
        contours.append(contour_item)
    if contours:
        item.ContourSequence = DicomSequence(contours)
    return item


def _raw_item(*elements: tuple[BaseTag, str, str]) -> Dataset:
    """A sequence item of (tag, VR, text) values stored as encoded bytes (explicit VR little endian, ASCII): written
    as they are, without pydicom's per-element conversion and validation. Values are checked by the caller."""
    item = Dataset()
    for tag, vr, text in elements:
        value = text.encode("ascii")
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
        item[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True, True, False)
    item.set_original_encoding(False, True, item._character_set)
    return item


def _contour_data(points: np.ndarray) -> RawDataElement:
    """ContourData as one DS string (x\\y\\z in LPS mm, 4 decimals; each value well within DS's 16 characters),
    formatted once instead of through per-value ``DSfloat`` objects."""
    flat = np.round(np.asarray(points, dtype=np.float64).ravel(), 4) + 0.0  # + 0.0 turns -0.0 into 0.0
    text = "\\".join(["%.4f"] * flat.size) % tuple(flat.tolist())
    if len(text) % 2:
        text += " "
    value = text.encode("ascii")
    return RawDataElement(_CONTOUR_DATA, "DS", len(value), value, 0, False, True, True, False)
