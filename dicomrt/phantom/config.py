"""What a phantom is made of: the enumerated choices, the typed configuration and the voxel grid of each size."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from dicomrt.geometry import Geometry
from dicomrt.identifiers import new_uid

# Name-based (version 5) UUIDs of the phantom's UIDs live in this namespace, so that they never collide with UIDs made
# from the same numbers by anything else.
# Accepted tumour diameters (equivalent-sphere diameter, mm) and the range drawn from the seed when none is given.
TUMOUR_DIAMETER_LIMITS_MM = (5.0, 60.0)
TUMOUR_DIAMETER_DRAWN_MM = (15.0, 40.0)
MAX_AMPLITUDE_MM = 40.0


class VendorStyle(StrEnum):
    """How the phases of the 4DCT are told apart in the DICOM files (see ``dicomrt.phantom.writer``)."""

    DESC_T = "desc-t"  # one series per phase, SeriesDescription "4D Thorax T=10%"
    DESC_CT = "desc-ct"  # one series per phase, "CT 10.0%"
    DESC_GATED = "desc-gated"  # one series per phase, "Gated 10%"
    DESC_PHASE = "desc-phase"  # one series per phase, "Phase 10%"
    DESC_EXIN = "desc-exin"  # one series per phase, "0% In", "10% Ex", ..., "50% Ex", "60% In", ...
    NOMINAL = "nominal"  # one series per phase, neutral description, NominalPercentageOfRespiratoryPhase per image
    SINGLE_TEMPORAL = "single-temporal"  # one series, TemporalPositionIdentifier 1..n per image
    SINGLE_POSITIONS = "single-positions"  # one series, no phase tag: phases told apart by repeated positions


class Artifact(StrEnum):
    """A 4DCT artefact injected into one phase (see ``dicomrt.phantom.artifacts``)."""

    SORTING = "sorting"  # a slab of slices taken from a distant phase
    DUPLICATE = "duplicate"  # a slab showing a copy of the slab above it


class Compression(StrEnum):
    """Transfer syntax of the written pixel data; all of them are lossless."""

    NONE = "none"  # Explicit VR Little Endian
    RLE = "rle"  # RLE Lossless
    JPEG2000 = "jpeg2000"  # JPEG 2000 Image Compression (Lossless Only)


class Breathing(StrEnum):
    """The breathing pattern of the phantom (see ``dicomrt.phantom.breathing.BreathingTrace``)."""

    REGULAR = "regular"  # the Lujan curve cos^4(pi t): symmetric, turning points at 0 % and 50 %
    IRREGULAR = "irregular"  # a drawn trace: end-exhale plateau, faster inhale, turning points between phases


class PhantomSize(StrEnum):
    """Voxel grid of a phantom: ``small`` for tests (128 x 128 x 44, 3 x 3 x 5 mm), ``medium`` with a clinical 4DCT's
    slices on the same field of view (192 x 192 x 88, 2 x 2 x 2.5 mm: fine enough that a small tumour's voxelisation
    does not dominate what refinement is measured by), ``full`` like a clinical 4DCT (512 x 512 x 120, 0.9 x 0.9 x
    2.5 mm)."""

    SMALL = "small"
    MEDIUM = "medium"
    FULL = "full"


@dataclass(frozen=True)
class GridSpec:
    """An axial head-first-supine grid centred on the patient's midline: ``shape`` (z, y, x), ``spacing_mm``
    (dz, dy, dx), ``z_centre_mm`` the LPS z of the middle of the stack."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    z_centre_mm: float = -20.0

    def affine(self) -> np.ndarray:
        """(4, 4) float64, homogeneous (z, y, x, 1) index → LPS mm, ImageOrientationPatient [1, 0, 0, 0, 1, 0]."""
        nz, ny, nx = self.shape
        dz, dy, dx = self.spacing_mm
        affine = np.eye(4)
        affine[:3, 0] = (0.0, 0.0, dz)  # slices: towards the head
        affine[:3, 1] = (0.0, dy, 0.0)  # rows (down a column): towards the patient's back
        affine[:3, 2] = (dx, 0.0, 0.0)  # columns (along a row): towards the patient's left
        affine[:3, 3] = (-(nx - 1) / 2 * dx, -(ny - 1) / 2 * dy, self.z_centre_mm - (nz - 1) / 2 * dz)
        return affine


GRIDS: dict[PhantomSize, GridSpec] = {
    PhantomSize.SMALL: GridSpec(shape=(44, 128, 128), spacing_mm=(5.0, 3.0, 3.0)),
    PhantomSize.MEDIUM: GridSpec(shape=(88, 192, 192), spacing_mm=(2.5, 2.0, 2.0)),
    PhantomSize.FULL: GridSpec(shape=(120, 512, 512), spacing_mm=(2.5, 0.9, 0.9)),
}


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that decides a phantom; the same config always gives the same arrays and UIDs.

    ``seed``: non-negative integer; anatomy, tumour site and size, noise and artefact placement derive from it.
    ``size``: ``"small"`` or ``"full"`` (see ``PhantomSize``). ``n_phases``: respiratory phases, equally spaced in
    percent from 0 % (end-inhale). ``amplitude_*_mm``: peak-to-peak tumour motion along the patient's
    superior-inferior, anterior-posterior and left-right axes (mm). ``tumour_diameter_mm``: diameter of the sphere
    with the tumour's volume (mm), or None to draw it from the seed in 15-40 mm. ``artifacts``: artefacts to inject,
    each in its own phase. ``breathing``: ``"regular"`` or ``"irregular"`` (see ``Breathing``). Strings are accepted
    for the enumerated fields and converted here, once.
    """

    seed: int
    size: PhantomSize = PhantomSize.SMALL
    n_phases: int = 10
    amplitude_si_mm: float = 15.0
    amplitude_ap_mm: float = 4.0
    amplitude_lr_mm: float = 2.0
    tumour_diameter_mm: float | None = None
    artifacts: tuple[Artifact, ...] = field(default=())
    breathing: Breathing = Breathing.REGULAR

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        try:
            object.__setattr__(self, "size", PhantomSize(self.size))
        except ValueError:
            raise ValueError(f"size must be one of {[s.value for s in PhantomSize]}, got {self.size!r}") from None
        if not 2 <= int(self.n_phases) <= 40:
            raise ValueError(f"n_phases must be between 2 and 40, got {self.n_phases}")
        object.__setattr__(self, "n_phases", int(self.n_phases))
        for name in ("amplitude_si_mm", "amplitude_ap_mm", "amplitude_lr_mm"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= MAX_AMPLITUDE_MM:
                raise ValueError(f"{name} must be between 0 and {MAX_AMPLITUDE_MM} mm, got {value}")
            object.__setattr__(self, name, value)
        if self.tumour_diameter_mm is not None:
            diameter = float(self.tumour_diameter_mm)
            low, high = TUMOUR_DIAMETER_LIMITS_MM
            if not low <= diameter <= high:
                raise ValueError(f"tumour_diameter_mm must be between {low} and {high} mm, got {diameter}")
            object.__setattr__(self, "tumour_diameter_mm", diameter)
        try:
            artifacts = tuple(Artifact(a) for a in self.artifacts)
        except ValueError:
            raise ValueError(f"artifacts must be among {[a.value for a in Artifact]}, got {self.artifacts!r}") from None
        if len(set(artifacts)) != len(artifacts):
            raise ValueError(f"each artifact may be asked for once, got {[a.value for a in artifacts]}")
        if len(artifacts) > self.n_phases // 2:
            raise ValueError(f"{len(artifacts)} artifacts need at least {2 * len(artifacts)} phases, "
                             f"got {self.n_phases}")
        object.__setattr__(self, "artifacts", artifacts)
        try:
            object.__setattr__(self, "breathing", Breathing(self.breathing))
        except ValueError:
            raise ValueError(f"breathing must be one of {[b.value for b in Breathing]}, "
                             f"got {self.breathing!r}") from None

    @property
    def grid(self) -> GridSpec:
        return GRIDS[self.size]

    @property
    def percents(self) -> tuple[float, ...]:
        """Phase percents, 0 % = end-inhale, 50 % = end-exhale (for an even number of phases)."""
        return tuple(100.0 * i / self.n_phases for i in range(self.n_phases))

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON values (enums as their strings)."""
        return {
            "seed": self.seed,
            "size": self.size.value,
            "n_phases": self.n_phases,
            "amplitude_si_mm": self.amplitude_si_mm,
            "amplitude_ap_mm": self.amplitude_ap_mm,
            "amplitude_lr_mm": self.amplitude_lr_mm,
            "tumour_diameter_mm": self.tumour_diameter_mm,
            "artifacts": [a.value for a in self.artifacts],
            "breathing": self.breathing.value,
        }

    @property
    def digest(self) -> str:
        """A 16-hex-digit fingerprint of the config: part of every UID, so that two different phantoms made from the
        same seed (other size, amplitude, ...) never share a UID. Regular breathing, the default, is left out: those
        phantoms keep the UIDs (and file names) they had before the field existed, which the fuzz corpus names."""
        fields = self.to_json()
        if self.breathing is Breathing.REGULAR:
            del fields["breathing"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def uid(self, *parts: object) -> str:
        """A deterministic UID for this phantom and ``parts`` (e.g. ``("image", vendor, phase, slice)``)."""
        return new_uid("phantom", self.digest, *parts)


def phantom_geometry(config: PhantomConfig) -> Geometry:
    """The grid shared by every phase of the phantom of ``config``.

    Its FrameOfReferenceUID is the one written into the DICOM files (whatever the vendor style). Its
    ``sop_instance_uids`` name the slices of the in-memory grid only: the written images get their own UIDs (see
    ``PhantomFiles.volumes``, whose geometries carry them).
    """
    spec = config.grid
    uids = tuple(config.uid("grid-slice", k) for k in range(spec.shape[0]))
    return Geometry(spec.affine(), spec.shape, config.uid("frame-of-reference"), uids)
