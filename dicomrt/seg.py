"""DICOM Segmentation (binary, highdicom) per phase: one segment per structure, with a coded concept per structure.

For research tools and PACS viewers; planning systems get the RTSTRUCTs. The source images highdicom needs are
built from the series headers we already hold (``SeriesInfo``: UIDs, grid) and the study attributes, so no CT file is
read again. Segments keep the structure's TG-263 name as label, its colour (as CIELab) and a SNOMED CT
category/type pair (``segment_codes``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicomrt.identifiers import new_uid
from dicomrt.instances import StudyAttributes
from dicomrt.layout import OutputLayout
from dicomrt.provenance import MANUFACTURER, Provenance, add_patient_and_study
from dicomrt.rt_errors import MaskShapeError
from dicomrt.rt_outputs import StudyMasks
from dicomrt.structures import RoiType, StructureSpec
from dicomrt.study import SeriesInfo, StudyIndex

logger = logging.getLogger(__name__)

SERIES_NUMBER_SEG = 971
_ORGANS: dict[str, Code] = {
    "lung": codes.SCT.Lung, "heart": codes.SCT.Heart, "liver": codes.SCT.Liver, "spleen": codes.SCT.Spleen,
    "stomach": codes.SCT.Stomach, "esophagus": codes.SCT.Esophagus, "spinalcord": codes.SCT.SpinalCord,
}
_STRUCTURES: dict[str, Code] = {"aorta": codes.SCT.Aorta}
_TARGETS = (RoiType.GTV, RoiType.CTV, RoiType.PTV)


def segment_codes(spec: StructureSpec) -> tuple[Code, Code]:
    """(SegmentedPropertyCategory, SegmentedPropertyType) of a structure: targets are a tumour (morphologically
    abnormal structure), known organs by their TG-263 stem (Lung_L → lung), others an anatomical structure."""
    if spec.interpreted_type in _TARGETS:
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Tumor
    stem = spec.name.split("_")[-1 if spec.name.startswith(("A_", "V_")) else 0].lower()
    if stem in _ORGANS:
        return codes.SCT.Organ, _ORGANS[stem]
    if stem in _STRUCTURES:
        return codes.SCT.AnatomicalStructure, _STRUCTURES[stem]
    return codes.SCT.AnatomicalStructure, codes.SCT.AnatomicalStructure


def source_images(series: SeriesInfo, attributes: StudyAttributes) -> list[Dataset]:
    """Header-only datasets of ``series``' images (z order), as highdicom needs them to reference the source."""
    geometry = series.geometry
    dz, dy, dx = geometry.spacing_mm
    positions = geometry.slice_positions
    images = []
    for k, header in enumerate(series.instances):
        ds = Dataset()
        add_patient_and_study(ds, attributes)
        ds.SOPClassUID = header.sop_class_uid
        ds.SOPInstanceUID = header.sop_instance_uid
        ds.SeriesInstanceUID = series.series_instance_uid
        ds.FrameOfReferenceUID = geometry.frame_of_reference_uid
        ds.Modality = "CT"
        ds.Rows, ds.Columns = geometry.shape[1:]
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.ImageOrientationPatient = list(geometry.orientation)
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        images.append(ds)
    return images


def segmentation(series: SeriesInfo, attributes: StudyAttributes,
                 structures: Sequence[tuple[StructureSpec, np.ndarray]], provenance: Provenance,
                 series_number: int = SERIES_NUMBER_SEG, sources: Sequence[Dataset] | None = None
                 ) -> hd.seg.Segmentation:
    """A binary SEG on ``series`` with one segment per (spec, (z, y, x) bool mask) pair, in the order given.
    ``sources``: ``source_images(series, attributes)`` when already made."""
    if not structures:
        raise MaskShapeError("structures: expected at least one (spec, mask) pair, got none")
    for spec, mask in structures:
        if mask.shape != series.geometry.shape or mask.dtype != bool:
            raise MaskShapeError(f"mask {spec.name!r}: expected a bool (z, y, x) array of shape "
                                 f"{series.geometry.shape}, got {mask.dtype} {mask.shape}")
    algorithm = hd.AlgorithmIdentificationSequence(name=provenance.model_identity,
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   version=provenance.software_version)
    descriptions = []
    for number, (spec, _) in enumerate(structures, start=1):
        category, kind = segment_codes(spec)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=spec.name, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*spec.colour)))
    # (z, y, x, segment) as a view of (segment, z, y, x): highdicom sums over the segment axis to find overlaps and
    # takes each segment's frames, both ~3x faster on this layout than on a contiguous last axis (full size)
    pixels = np.moveaxis(np.stack([mask for _, mask in structures]), 0, -1)
    return hd.seg.Segmentation(
        source_images=sources if sources is not None else source_images(series, attributes), pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=new_uid(), series_number=series_number, sop_instance_uid=new_uid(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MANUFACTURER,
        software_versions=provenance.software_version, device_serial_number="none",
        content_description=f"itvsam {series.label} model {provenance.model_identity}"[:64],
        content_label="ITVSAM", series_description=f"itvsam segmentation, phase {series.label}",
        omit_empty_frames=False)


def phase_sources(index: StudyIndex) -> list[list[Dataset]]:
    """Per phase of ``index`` its ``source_images``: the SEGs' header work, which needs no masks (a job makes them
    while the model runs)."""
    return [source_images(phase, index.attributes) for phase in index.phases]


def write_segs(masks: StudyMasks, out_dir: Path, provenance: Provenance,
               sources: Sequence[Sequence[Dataset]] | None = None) -> list[Path]:
    """One SEG per phase of the study with the per-phase structures of ``masks``, in the output folder ``out_dir``
    (``dicomrt.layout``: ``seg/SEG_phaseNN.dcm``); returns the files written. ``sources``: ``phase_sources`` of the
    study when already made."""
    specs = [s for s in masks.specs if s.name in masks.per_phase]
    if not specs:
        return []
    written = []
    for k, phase in enumerate(masks.index.phases):
        seg = segmentation(phase, masks.index.attributes, [(s, masks.per_phase[s.name][k]) for s in specs],
                           provenance, SERIES_NUMBER_SEG + k, None if sources is None else sources[k])
        path = OutputLayout(Path(out_dir)).seg(k)
        path.parent.mkdir(parents=True, exist_ok=True)
        seg.save_as(path)
        written.append(path)
    logger.info("study %s: wrote %d SEG(s)", masks.index.study_hash, len(written))
    return written
