"""The ITV: the union over phases of a target's (phase, z, y, x) masks, optionally expanded by a margin in mm.

One definition, used by the writers (``dicomrt.rt_outputs``: the ITV and expanded-ITV ROIs), the pipeline (volumes,
QA picture) and evaluation. Pure numpy/scipy. A margin is isotropic (one number) or anisotropic, given along the
patient axes ``(x: right→left, y: anterior→posterior, z: inferior→superior)`` in mm; it is applied with a Euclidean
distance transform using the voxel spacing, so the expansion is an ellipsoid whatever the voxel size. Voxel axes are
matched to patient axes through the affine.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def has_margin(margin_mm: float | Sequence[float]) -> bool:
    """Whether a margin (one number, or (x, y, z) mm) expands anything."""
    return bool(np.any(np.asarray(margin_mm, dtype=float) > 0))


def build_itv(target: np.ndarray, geometry: Geometry, margin_mm: float | Sequence[float] = 0.0) -> np.ndarray:
    """ITV from (phase, z, y, x) bool target masks: their union over phases, expanded by ``margin_mm``; (z, y, x)."""
    target = np.asarray(target, dtype=bool)
    if target.ndim != 4 or tuple(target.shape[1:]) != tuple(geometry.shape):
        raise ValueError(f"target must be (phase, z, y, x) on the grid {geometry.shape}, got {target.shape}")
    return expand(target.any(axis=0), geometry, margin_mm)
