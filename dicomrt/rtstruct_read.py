"""Reading RT Structure Sets (ours and planning systems' exports): structures, their contours, and masks on the CT.

``read_rtstruct`` parses the file; ``match_series`` finds the CT series it was drawn on and refuses a mismatch;
``rasterise_roi`` turns a structure into a (z, y, x) bool mask on that series' grid (``dicomrt.raster``: even-odd,
voxel centres).

Matching rules (``match_series``):

1. the structure set must name its image series (ReferencedFrameOfReferenceSequence > RTReferencedStudySequence >
   RTReferencedSeriesSequence); one that names none is refused;
2. one of the given CT series must be a named series;
3. every image a contour references (its ContourImageSequence) must be an image of that series: a contour on an
   image that is not there is refused, unless ``allow_missing_images`` (a partial export: contours off the series'
   slices are then skipped and counted);
4. FrameOfReferenceUID: the structure set's must be the series'. Exports exist (MIM, rt-utils' test files) whose
   ReferencedFrameOfReferenceSequence names another frame of reference while every contour references an image
   of the series; there the images decide (their positions are in the series' frame) and a warning is returned.
   Without image references a different frame of reference is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomrt.geometry import Geometry
from dicomrt.identifiers import short_hash
from dicomrt.raster import rasterise_contours
from dicomrt.rt_errors import ContourError, ReferenceMismatchError, RTError
from dicomrt.study import SeriesInfo

logger = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass(frozen=True, eq=False)
class RoiContours:
    """One structure of a structure set. ``contours``: its CLOSED_PLANAR polygons, each (N, 3) LPS mm;
    ``images``: per contour the SOPInstanceUID it references ("" when none); ``other_contours``: contours of other
    geometric types (POINT, OPEN_PLANAR, …), not areas, so never rasterised. ``colour`` None when absent;
    ``interpreted_type`` as written ("" when empty)."""

    number: int
    name: str
    colour: tuple[int, int, int] | None
    interpreted_type: str
    contours: tuple[np.ndarray, ...] = field(repr=False)
    images: tuple[str, ...] = field(repr=False)
    other_contours: int = 0


@dataclass(frozen=True, eq=False)
class StructureSetContent:
    """What an RT Structure Set holds. ``referenced_series``: series UID → SOPInstanceUIDs listed for it."""

    sop_instance_uid: str = field(repr=False)
    study_instance_uid: str = field(repr=False)
    label: str
    frame_of_reference_uids: tuple[str, ...] = field(repr=False)
    referenced_series: dict[str, tuple[str, ...]] = field(repr=False)
    rois: tuple[RoiContours, ...]

    @property
    def names(self) -> list[str]:
        return [roi.name for roi in self.rois]

    def roi(self, name: str) -> RoiContours:
        """The structure called ``name`` (exact, else case-insensitive)."""
        for roi in self.rois:
            if roi.name == name:
                return roi
        for roi in self.rois:
            if roi.name.lower() == name.lower():
                return roi
        raise KeyError(f"no structure {name!r}; the structure set holds {self.names}")

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StructureSetContent:
        """Parse an RT Structure Set dataset; refuses another SOP class or ROIs without number."""
        if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
            raise RTError(f"expected an RT Structure Set (SOPClassUID {RT_STRUCTURE_SET_STORAGE}), got SOPClassUID "
                          f"{ds.get('SOPClassUID', '(none)')!s} / Modality {ds.get('Modality', '(none)')!s}")
        frames, series = [], {}
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
            frames.append(str(frame.get("FrameOfReferenceUID", "")))
            for study in frame.get("RTReferencedStudySequence", []):
                for item in study.get("RTReferencedSeriesSequence", []):
                    series[str(item.SeriesInstanceUID)] = tuple(
                        str(i.ReferencedSOPInstanceUID) for i in item.get("ContourImageSequence", []))
        names = {int(i.ROINumber): (str(i.get("ROIName", "")), str(i.get("ReferencedFrameOfReferenceUID", "")))
                 for i in ds.get("StructureSetROISequence", [])}
        frames += [f for _, f in names.values() if f and f not in frames]
        types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "")
                 for o in ds.get("RTROIObservationsSequence", [])}
        contours = {int(i.ReferencedROINumber): i for i in ds.get("ROIContourSequence", [])}
        rois = []
        for number, (name, _) in names.items():
            item = contours.get(number, Dataset())
            colour = item.get("ROIDisplayColor")
            polygons, images, other = [], [], 0
            for contour in item.get("ContourSequence", []):
                if str(contour.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                    other += 1
                    continue
                points = np.asarray(contour.ContourData, dtype=np.float64)
                if points.size % 3 or points.size < 9:
                    raise ContourError(f"ROI {number} {name!r}: a CLOSED_PLANAR contour needs at least 3 points "
                                       f"(x, y, z triplets), got {points.size} values")
                polygons.append(points.reshape(-1, 3))
                refs = contour.get("ContourImageSequence", [])
                images.append(str(refs[0].ReferencedSOPInstanceUID) if refs else "")
            rois.append(RoiContours(number, name, None if colour is None else tuple(int(c) for c in colour),
                                    types.get(number, ""), tuple(polygons), tuple(images), other))
        return cls(str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", "")),
                   str(ds.get("StructureSetLabel", "")), tuple(f for f in frames if f), series, tuple(rois))


def read_rtstruct(path: Path) -> StructureSetContent:
    """Parse the RT Structure Set file at ``path`` (a file without the Part 10 preamble is read too)."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # whatever the parser trips on, the file is not DICOM
            raise RTError(f"{Path(path).name} is not a DICOM file ({type(exc).__name__})") from exc
    return StructureSetContent.from_dataset(ds)


def match_series(structure_set: StructureSetContent, candidates: Sequence[SeriesInfo], *,
                 allow_missing_images: bool = False) -> tuple[SeriesInfo, tuple[str, ...]]:
    """The CT series ``structure_set`` was drawn on, among ``candidates`` (series as ``dicomrt.reader.scan_study``
    finds them), and warnings (rules: module docstring)."""
    series = list(candidates)
    if not structure_set.referenced_series:
        raise ReferenceMismatchError(
            "the structure set names no image series (ReferencedFrameOfReferenceSequence > "
            "RTReferencedStudySequence > RTReferencedSeriesSequence is missing or empty): cannot tell which CT it "
            "was drawn on")
    named = [s for s in series if s.series_instance_uid in structure_set.referenced_series]
    if not named:
        raise ReferenceMismatchError(
            f"the structure set references series {[short_hash(u) for u in structure_set.referenced_series]}, none "
            f"of the CT series given ({[short_hash(s.series_instance_uid) for s in series]})")
    match = named[0]
    images = set(match.geometry.sop_instance_uids)
    warnings = []
    for roi in structure_set.rois:
        missing = [uid for uid in roi.images if uid and uid not in images]
        if missing and not allow_missing_images:
            raise ReferenceMismatchError(
                f"ROI {roi.number} {roi.name!r}: {len(missing)} of its {len(roi.images)} contours reference images "
                f"that are not in CT series [{short_hash(match.series_instance_uid)}] ({len(images)} images; e.g. "
                f"image [{short_hash(missing[0])}]): the structure set does not belong to this series, or the "
                f"series is incomplete")
    frame = match.geometry.frame_of_reference_uid
    if structure_set.frame_of_reference_uids and frame not in structure_set.frame_of_reference_uids:
        anchored = all(uid in images for roi in structure_set.rois for uid in roi.images) and any(
            roi.images for roi in structure_set.rois)
        if not anchored:
            raise ReferenceMismatchError(
                f"the structure set's FrameOfReferenceUID [{short_hash(structure_set.frame_of_reference_uids[0])}] "
                f"is not the CT series' [{short_hash(frame)}] and its contours do not all reference the series' "
                f"images: refusing to place them")
        theirs = short_hash(structure_set.frame_of_reference_uids[0])
        warnings.append(f"the structure set's FrameOfReferenceUID [{theirs}] differs from the CT series' "
                        f"[{short_hash(frame)}]; every contour references an image of the series, so the images decide")
    for warning in warnings:
        logger.warning(warning)
    return match, tuple(warnings)


@dataclass(frozen=True, eq=False)
class RasterisedRoi:
    """A structure on a CT grid: ``mask`` (z, y, x) bool; ``skipped``: contours on no slice of the grid."""

    name: str
    mask: np.ndarray = field(repr=False)
    skipped: int


def rasterise_roi(roi: RoiContours, geometry: Geometry, *, allow_missing_images: bool = False) -> RasterisedRoi:
    """``roi`` on ``geometry`` (even-odd, voxel centres). Contours off the grid's slices are refused, or skipped and
    counted with ``allow_missing_images``."""
    mask, skipped = rasterise_contours(roi.contours, geometry)
    if skipped and not allow_missing_images:
        raise ReferenceMismatchError(f"ROI {roi.number} {roi.name!r}: {skipped} of its {len(roi.contours)} contours "
                                     f"lie on no slice of the CT grid")
    return RasterisedRoi(roi.name, mask, skipped)
