"""Helpers for the model tests: synthetic grids and moving targets."""

from __future__ import annotations

import numpy as np
import pytest

from dicomrt.geometry import Geometry


def make_geometry(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> Geometry:
    """An axial grid (z, y, x) with LPS axes and the given spacing (dz, dy, dx) mm, origin at 0."""
    affine = np.eye(4)
    affine[:3, 0] = (0.0, 0.0, spacing_mm[0])
    affine[:3, 1] = (0.0, spacing_mm[1], 0.0)
    affine[:3, 2] = (spacing_mm[2], 0.0, 0.0)
    return Geometry(affine, shape, "1.2.826.0.1.3680043.8.498.1", tuple(f"1.2.3.{k}" for k in range(shape[0])))


def ellipsoid(geometry: Geometry, centre_mm: tuple[float, float, float], radii_mm: tuple[float, float, float]
              ) -> np.ndarray:
    """(z, y, x) bool: voxels whose centre lies in the axis-aligned ellipsoid (centre, radii in (x, y, z) LPS mm)."""
    zz, yy, xx = np.indices(geometry.shape, dtype=np.float64)
    points = geometry.index_to_patient(np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1))
    inside = sum(((points[:, k] - centre_mm[k]) / radii_mm[k]) ** 2 for k in range(3)) <= 1.0
    return inside.reshape(geometry.shape)


def moving_tumour(geometry: Geometry, n_phases: int = 10, radius_mm: float = 9.0, amplitude_mm: float = 12.0,
                  centre_mm: tuple[float, float, float] = (40.0, 40.0, 40.0)) -> tuple[np.ndarray, np.ndarray]:
    """A sphere moving along z (cos² breathing, peak-to-peak ``amplitude_mm``) and 1/4 of that along y.

    Returns (phase, z, y, x) bool truth and the (phase, 3) LPS centres.
    """
    t = np.arange(n_phases) / n_phases
    offset = amplitude_mm * (np.cos(np.pi * t) ** 2 - 0.5)
    centres = np.array([[centre_mm[0], centre_mm[1] + offset_k / 4, centre_mm[2] + offset_k] for offset_k in offset])
    truth = np.stack([ellipsoid(geometry, tuple(c), (radius_mm,) * 3) for c in centres])
    return truth, centres


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread) -> None:
    """Every model test runs on one torch thread (see ``tests/conftest.py``)."""
