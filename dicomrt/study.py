"""The typed result of reading a 4DCT study: series headers and geometry first, HU volumes on demand."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dicomrt.geometry import Geometry
from dicomrt.identifiers import short_hash
from dicomrt.instances import InstanceHeader, Skip, StudyAttributes
from dicomrt.phases import SeriesKind, phase_label


@dataclass(frozen=True)
class SeriesInfo:
    """One CT volume of the study (a phase, a projection, or a plain CT), headers only.

    A single DICOM series holding all phases gives one ``SeriesInfo`` per phase, sharing ``series_instance_uid``.
    ``instances`` are in z order (increasing patient z), matching ``geometry.sop_instance_uids``.
    ``phase_source`` says where the phase percent came from (a tag, the description, or an inference).
    """

    series_instance_uid: str = field(repr=False)
    series_number: int | None
    description: str
    kind: SeriesKind
    percent: float | None
    phase_source: str
    geometry: Geometry
    instances: tuple[InstanceHeader, ...] = field(repr=False)

    @property
    def label(self) -> str:
        return phase_label(self.percent) if self.kind in (SeriesKind.PHASE, SeriesKind.CT) else self.kind.value.upper()

    @property
    def uid_hash(self) -> str:
        return short_hash(self.series_instance_uid)


@dataclass(frozen=True)
class ScanSummary:
    """What a scan of the input files found, including what it skipped (by reason) and ignored."""

    files: int
    ct_instances: int
    skipped: dict[Skip, int]


@dataclass(frozen=True)
class StudyIndex:
    """A validated 4DCT study, headers only: phases sorted by percent, projections found, the reference series.

    A study without respiratory phases (a 3D CT) has one phase with ``percent`` None and kind ``CT``.
    """

    attributes: StudyAttributes = field(repr=False)
    phases: tuple[SeriesInfo, ...]
    derived: tuple[SeriesInfo, ...]
    reference: SeriesInfo
    warnings: tuple[str, ...]
    scan: ScanSummary

    @property
    def frame_of_reference_uid(self) -> str:
        return self.reference.geometry.frame_of_reference_uid

    @property
    def study_hash(self) -> str:
        return short_hash(self.attributes.study_instance_uid)

    @property
    def is_4d(self) -> bool:
        return self.phases[0].kind is SeriesKind.PHASE


@dataclass(frozen=True, eq=False)
class Phase:
    """One respiratory phase with its HU volume: (z, y, x), int16 or float32 Hounsfield units, on ``geometry``."""

    series: SeriesInfo
    volume: np.ndarray = field(repr=False)

    @property
    def percent(self) -> float | None:
        return self.series.percent

    @property
    def label(self) -> str:
        return self.series.label

    @property
    def series_instance_uid(self) -> str:
        return self.series.series_instance_uid

    @property
    def geometry(self) -> Geometry:
        return self.series.geometry


@dataclass(frozen=True, eq=False)
class Study4D:
    """A study with the HU volumes of its phases loaded; projections and the reference stay headers-only."""

    index: StudyIndex
    phases: tuple[Phase, ...]

    @property
    def attributes(self) -> StudyAttributes:
        return self.index.attributes

    @property
    def reference(self) -> SeriesInfo:
        return self.index.reference

    @property
    def derived(self) -> tuple[SeriesInfo, ...]:
        return self.index.derived


def series_summary(series: SeriesInfo) -> dict:
    """A JSON-ready description of one volume (hashed UIDs, no patient data)."""
    z = series.geometry.slice_positions[:, 2]
    return {
        "label": series.label,
        "kind": series.kind.value,
        "percent": series.percent,
        "phase_source": series.phase_source,
        "series_number": series.series_number,
        "description": series.description,
        "series_uid_hash": series.uid_hash,
        "slices": series.geometry.shape[0],
        "z_range_mm": [round(float(z.min()), 3), round(float(z.max()), 3)],
    }


def index_summary(index: StudyIndex) -> dict:
    """A JSON-ready description of a study: phases, projections, reference, geometry, warnings (no patient data)."""
    geometry = index.reference.geometry
    return {
        "study_uid_hash": index.study_hash,
        "study_date": index.attributes.study_date,
        "study_description": index.attributes.study_description,
        "is_4d": index.is_4d,
        "phases": [series_summary(p) for p in index.phases],
        "derived": [series_summary(d) for d in index.derived],
        "reference": series_summary(index.reference),
        "geometry": {
            "shape_zyx": list(geometry.shape),
            "spacing_mm_zyx": [round(s, 6) for s in geometry.spacing_mm],
            "orientation": [round(v, 6) for v in geometry.orientation],
            "origin_mm": [round(float(v), 4) for v in geometry.affine[:3, 3]],
            "affine": geometry.affine.round(6).tolist(),
            "frame_of_reference_uid_hash": short_hash(geometry.frame_of_reference_uid),
        },
        "warnings": list(index.warnings),
        "files": {"total": index.scan.files, "ct_instances": index.scan.ct_instances,
                  "skipped": {reason.value: n for reason, n in index.scan.skipped.items()}},
    }
