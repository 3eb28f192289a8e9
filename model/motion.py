"""The motion of a structure over the phases: per phase its volume (ml) and centroid (LPS mm, through
``Geometry.index_to_patient``); the amplitude per axis is the peak-to-peak range of the centroid over the phases that
hold it. Pure numpy/scipy (no torch). The ITV itself is ``dicomrt.itv`` (the writers draw it too)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dicomrt.geometry import Geometry
from model.refine import bounding_box


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
        box = bounding_box(mask)
        if box is not None:
            crop = mask[box]
            volumes[p] = np.count_nonzero(crop) * geometry.voxel_volume_ml
            centre = np.array(ndimage.center_of_mass(crop)) + [s.start for s in box]
            centroids[p] = geometry.index_to_patient(centre[None])[0]
    present = ~np.isnan(centroids[:, 0])
    amplitude = np.ptp(centroids[present], axis=0) if present.any() else np.full(3, np.nan)
    return Motion(volumes_ml=volumes.astype(np.float64), centroids_lps_mm=centroids, amplitude_mm=amplitude)
