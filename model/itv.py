"""The ITV and the motion of a target over the phases. Pure numpy/scipy (no torch).

The ITV is the union over phases of the refined target masks, optionally expanded by a margin in mm. A margin is
isotropic (one number) or anisotropic, given along the patient axes ``(x: right→left, y: anterior→posterior,
z: inferior→superior)`` in mm; it is applied with a Euclidean distance transform using the voxel spacing, so the
expansion is an ellipsoid whatever the voxel size. Voxel axes are matched to patient axes through the affine.

Motion: per phase the volume (ml) and the centroid (LPS mm, through ``Geometry.index_to_patient``); the amplitude per
axis is the peak-to-peak range of the centroid over the phases that hold the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dicomrt.geometry import Geometry

# A voxel axis counts as aligned with a patient axis when their direction cosine exceeds this.
ALIGNED_COSINE = 0.999


def margin_per_voxel_axis(geometry: Geometry, margin_mm: float | Sequence[float]) -> tuple[float, float, float]:
    """A margin (one number, or ``(x, y, z)`` along the patient LPS axes, mm) as ``(z, y, x)`` voxel-axis margins.

    Anisotropic margins need voxel axes aligned with the patient axes; an in-plane rotated grid is accepted only when
    the x and y margins are equal.
    """
    if np.isscalar(margin_mm):
        m = float(margin_mm)
        if m < 0:
            raise ValueError(f"margin_mm must be ≥ 0, got {margin_mm}")
        return m, m, m
    patient = [float(v) for v in margin_mm]
    if len(patient) != 3 or min(patient) < 0:
        raise ValueError(f"margin_mm must be one number or (x, y, z) mm ≥ 0 along the patient axes, got {margin_mm}")
    directions = geometry.affine[:3, :3] / np.linalg.norm(geometry.affine[:3, :3], axis=0)  # columns: z, y, x axes
    out = []
    for axis in range(3):
        cosines = np.abs(directions[:, axis])
        main = int(np.argmax(cosines))
        if cosines[main] < ALIGNED_COSINE and not (main in (0, 1) and patient[0] == patient[1]):
            raise ValueError(f"voxel axis {'zyx'[axis]} is not aligned with a patient axis (direction "
                             f"{directions[:, axis].round(3).tolist()}): give equal x and y margins, got {patient}")
        out.append(patient[main])
    return out[0], out[1], out[2]


def expand(mask: np.ndarray, geometry: Geometry, margin_mm: float | Sequence[float]) -> np.ndarray:
    """Expand a (z, y, x) bool mask by an ellipsoidal margin (see ``margin_per_voxel_axis``); exact to voxel centres.

    A voxel joins when its centre lies within the ellipsoid of semi-axes ``margin`` around some mask voxel centre.
    An axis with a zero margin is not expanded along.
    """
    mask = np.asarray(mask, dtype=bool)
    margins = margin_per_voxel_axis(geometry, margin_mm)
    if not mask.any() or max(margins) == 0:
        return mask.copy()
    spacing = geometry.spacing_mm
    pad = [int(np.floor(m / s)) + 1 for m, s in zip(margins, spacing, strict=True)]
    coords = np.nonzero(mask)
    box = tuple(slice(max(0, int(c.min()) - p), min(n, int(c.max()) + p + 1))
                for c, p, n in zip(coords, pad, mask.shape, strict=True))
    # In units of the margin, the ellipsoid is the unit ball; a zero margin makes that axis infinitely long.
    sampling = [s / m if m > 0 else 1e9 for s, m in zip(spacing, margins, strict=True)]
    distance = ndimage.distance_transform_edt(~mask[box], sampling=sampling)
    out = mask.copy()
    out[box] |= distance <= 1.0 + 1e-9
    return out


def build_itv(target: np.ndarray, geometry: Geometry, margin_mm: float | Sequence[float] = 0.0) -> np.ndarray:
    """ITV from (phase, z, y, x) bool target masks: their union over phases, expanded by ``margin_mm``; (z, y, x)."""
    target = np.asarray(target, dtype=bool)
    if target.ndim != 4 or tuple(target.shape[1:]) != tuple(geometry.shape):
        raise ValueError(f"target must be (phase, z, y, x) on the grid {geometry.shape}, got {target.shape}")
    return expand(target.any(axis=0), geometry, margin_mm)


@dataclass(frozen=True)
class Motion:
    """Per phase: ``volumes_ml`` (phase,), ``centroids_lps_mm`` (phase, 3) (NaN where the phase is empty);
    ``amplitude_mm`` (3,): peak-to-peak centroid range along LPS x, y, z over the non-empty phases."""

    volumes_ml: np.ndarray
    centroids_lps_mm: np.ndarray
    amplitude_mm: np.ndarray

    def to_dict(self) -> dict[str, list]:
        return {
            "volumes_ml": [round(float(v), 4) for v in self.volumes_ml],
            "centroids_lps_mm": [[None if np.isnan(v) else round(float(v), 3) for v in c]
                                 for c in self.centroids_lps_mm],
            "amplitude_mm": {axis: round(float(v), 3) for axis, v in zip("xyz", self.amplitude_mm, strict=True)},
        }


def motion(masks: np.ndarray, geometry: Geometry) -> Motion:
    """Volume and centroid per phase of (phase, z, y, x) bool masks, and the motion amplitude per patient axis."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 4 or tuple(masks.shape[1:]) != tuple(geometry.shape):
        raise ValueError(f"masks must be (phase, z, y, x) on the grid {geometry.shape}, got {masks.shape}")
    volumes = np.zeros(len(masks))
    centroids = np.full((len(masks), 3), np.nan)
    for p, mask in enumerate(masks):
        boxes = ndimage.find_objects(mask.astype(np.uint8))
        if boxes:
            crop = mask[boxes[0]]
            volumes[p] = np.count_nonzero(crop) * geometry.voxel_volume_ml
            centre = np.array(ndimage.center_of_mass(crop)) + [s.start for s in boxes[0]]
            centroids[p] = geometry.index_to_patient(centre[None])[0]
    present = ~np.isnan(centroids[:, 0])
    amplitude = np.ptp(centroids[present], axis=0) if present.any() else np.full(3, np.nan)
    return Motion(volumes_ml=volumes.astype(np.float64), centroids_lps_mm=centroids, amplitude_mm=amplitude)
