"""Voxel grid geometry: the one place where voxel indices meet patient coordinates.

Convention everywhere in itvsam: volumes are ``(z, y, x)`` arrays; ``x`` runs along a row (the first direction
cosine of ImageOrientationPatient), ``y`` down the columns (the second), ``z`` across slices, sorted so that the
patient z coordinate (LPS, towards the head) increases with the index. ``Geometry.affine`` maps a homogeneous index
``(z, y, x, 1)`` to patient LPS millimetres; nothing else may flip or transpose axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dicomrt.errors import (
    GantryTiltError,
    InconsistentSeriesError,
    MissingSlicesError,
    NonUniformSpacingError,
    ObliqueSlicesError,
)

# Largest angle between the slice normal and the patient z axis still accepted as an axial slice.
MAX_OBLIQUE_DEG = 0.1
# Largest angle between the slice-to-slice step and the slice normal (gantry tilt) still accepted.
MAX_TILT_DEG = 0.1
# Slice steps may differ from their median by this fraction.
SPACING_TOLERANCE = 0.01
# Two grids are the same when every corner voxel centre agrees within this distance.
GRID_TOLERANCE_MM = 0.05


@dataclass(frozen=True, eq=False)
class Geometry:
    """A voxel grid in patient space.

    ``affine``: (4, 4) float64, homogeneous ``(z, y, x, 1)`` index → LPS mm. ``shape``: ``(z, y, x)``.
    ``sop_instance_uids``: the image instance of each z slice, in z order.
    """

    affine: np.ndarray = field(repr=False)
    shape: tuple[int, int, int]
    frame_of_reference_uid: str = field(repr=False)
    sop_instance_uids: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {affine.shape}")
        if len(self.sop_instance_uids) != self.shape[0]:
            raise ValueError(f"need one SOPInstanceUID per slice: {self.shape[0]} slices, "
                             f"{len(self.sop_instance_uids)} UIDs")
        affine.setflags(write=False)
        object.__setattr__(self, "affine", affine)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel spacing ``(dz, dy, dx)`` in mm."""
        dz, dy, dx = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(dz), float(dy), float(dx)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in ml (cm³): ``|det(affine[:3, :3])| / 1000``."""
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def orientation(self) -> tuple[float, ...]:
        """ImageOrientationPatient: row (x) then column (y) direction cosines."""
        _, dy, dx = self.spacing_mm
        return tuple(float(v) for v in (*self.affine[:3, 2] / dx, *self.affine[:3, 1] / dy))

    @property
    def slice_positions(self) -> np.ndarray:
        """ImagePositionPatient of each slice, (z, 3) LPS mm."""
        return self.index_to_patient(np.stack([np.arange(self.shape[0]), np.zeros(self.shape[0]),
                                               np.zeros(self.shape[0])], axis=1))

    def index_to_patient(self, zyx: np.ndarray) -> np.ndarray:
        """(N, 3) voxel indices ``(z, y, x)`` (fractional allowed) → (N, 3) LPS mm."""
        zyx = np.asarray(zyx, dtype=np.float64)
        return zyx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def patient_to_index(self, lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS mm → (N, 3) fractional voxel indices ``(z, y, x)``."""
        lps = np.asarray(lps, dtype=np.float64)
        return np.linalg.solve(self.affine[:3, :3], (lps - self.affine[:3, 3]).T).T

    def mismatch(self, other: Geometry, tolerance_mm: float = GRID_TOLERANCE_MM) -> str | None:
        """Why ``other`` is not the same grid (frame of reference, shape, voxel positions), or None if it is."""
        if self.frame_of_reference_uid != other.frame_of_reference_uid:
            return "different FrameOfReferenceUID"
        if self.shape != other.shape:
            return f"shape (z, y, x) {self.shape} vs {other.shape}"
        corners = np.array([[z, y, x] for z in (0, self.shape[0] - 1) for y in (0, self.shape[1] - 1)
                            for x in (0, self.shape[2] - 1)], dtype=np.float64)
        distance = float(np.max(np.linalg.norm(self.index_to_patient(corners) - other.index_to_patient(corners),
                                               axis=1)))
        if distance > tolerance_mm:
            return f"voxel positions differ by up to {distance:.2f} mm"
        return None


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (row × column) of an ImageOrientationPatient; refuses a non-orthonormal or non-axial one."""
    iop = np.asarray(orientation, dtype=np.float64)
    if iop.shape != (6,):
        raise InconsistentSeriesError(f"ImageOrientationPatient must have 6 values, got {list(orientation)}")
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InconsistentSeriesError(f"ImageOrientationPatient is not two orthonormal directions: {list(orientation)}")
    normal = np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))
    angle = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    if angle > MAX_OBLIQUE_DEG:
        raise ObliqueSlicesError(f"slices are not axial: their normal is {angle:.2f} degrees from the patient z axis "
                                 f"(ImageOrientationPatient {list(orientation)}; at most {MAX_OBLIQUE_DEG} accepted)")
    return normal


def slice_order(positions: np.ndarray, orientation: Sequence[float]) -> np.ndarray:
    """Indices that sort slices along their normal, towards increasing patient z. ``positions``: (n, 3) LPS mm."""
    normal = slice_normal(orientation)
    return np.argsort(np.asarray(positions, dtype=np.float64) @ normal * np.sign(normal[2]), kind="stable")


def geometry_from_slices(
    positions: np.ndarray,
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    rows_columns: tuple[int, int],
    frame_of_reference_uid: str,
    sop_instance_uids: Sequence[str],
    what: str,
) -> Geometry:
    """The grid of a stack of axial slices given in z order (see ``slice_order``).

    ``positions``: (n, 3) ImagePositionPatient in LPS mm. ``pixel_spacing``: DICOM PixelSpacing (row spacing, i.e. the
    step along y, then column spacing, the step along x). ``what`` names the series in error messages. Refuses oblique
    slices, gantry tilt, missing slices and non-uniform spacing.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    if n < 2:
        raise InconsistentSeriesError(f"{what}: a volume needs at least 2 slices, got {n}")
    normal = slice_normal(orientation)
    normal = normal * np.sign(normal[2])  # towards the head: the direction of increasing z index
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    lateral = np.linalg.norm(steps - along[:, None] * normal, axis=1)
    if np.any(along <= 1e-3):
        k = int(np.argmax(along <= 1e-3))
        raise InconsistentSeriesError(f"{what}: two slices at the same position (z = {positions[k, 2]:.2f} mm)")
    tilt = float(np.degrees(np.max(np.arctan2(lateral, along))))
    if tilt > MAX_TILT_DEG:
        raise GantryTiltError(f"{what}: slices are offset in-plane from one to the next (gantry tilt of {tilt:.2f} "
                              f"degrees; at most {MAX_TILT_DEG} accepted)")
    spacing = float(np.median(along))
    off = np.abs(along - spacing) > SPACING_TOLERANCE * spacing
    if np.any(off):
        ratios = along[off] / spacing
        if np.all(np.abs(ratios - np.round(ratios)) < 0.1) and np.all(np.round(ratios) >= 2):
            missing = int(np.sum(np.round(ratios) - 1))
            k = int(np.argmax(off))
            raise MissingSlicesError(f"{what}: {missing} slice(s) missing (first gap between z = "
                                     f"{positions[k, 2]:.2f} and {positions[k + 1, 2]:.2f} mm; spacing "
                                     f"{spacing:.3g} mm)")
        values = sorted({round(float(s), 3) for s in along})
        raise NonUniformSpacingError(f"{what}: slice spacing must be uniform within {SPACING_TOLERANCE:.0%}, got "
                                     f"{values[:8]}{' ...' if len(values) > 8 else ''} mm")
    iop = np.asarray(orientation, dtype=np.float64)
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    if row_spacing <= 0 or column_spacing <= 0:
        raise InconsistentSeriesError(f"{what}: PixelSpacing must be positive, got {list(pixel_spacing)}")
    affine = np.eye(4)
    affine[:3, 0] = normal * spacing
    affine[:3, 1] = iop[3:] / np.linalg.norm(iop[3:]) * row_spacing
    affine[:3, 2] = iop[:3] / np.linalg.norm(iop[:3]) * column_spacing
    affine[:3, 3] = positions[0]
    geometry = Geometry(affine, (n, int(rows_columns[0]), int(rows_columns[1])), frame_of_reference_uid,
                        tuple(sop_instance_uids))
    drift = float(np.max(np.linalg.norm(geometry.slice_positions - positions, axis=1)))
    if drift > GRID_TOLERANCE_MM:  # small per-step variations can add up along the stack
        raise NonUniformSpacingError(f"{what}: slice positions drift up to {drift:.2f} mm from a uniform grid of "
                                     f"{spacing:.3g} mm")
    return geometry
