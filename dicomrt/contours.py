"""Polygons from boolean masks, placed so that a centre-inclusion rasteriser gives back exactly the same voxels.

Placement: per slice, scikit-image's ``find_contours`` traces the iso-line at level 0.5 of the (zero-padded) mask.
Between a voxel inside and one outside, that line crosses the straight segment joining their centres at its middle,
i.e. on the shared voxel edge, and at a corner it cuts diagonally between the voxel centres. So every centre of a
mask voxel is strictly inside a polygon, every other centre strictly outside (at least 0.35 voxel from the line), and
a rasteriser that includes a voxel when its centre is inside (plastimatch, planning systems, ``dicomrt.raster``)
gives back the mask. Contours through the centres of boundary voxels (rt-utils, OpenCV's ``findContours``) put those
centres on the polygon and lose a ring to such rasterisers.

Topology: ``fully_connected="low"`` joins background diagonally, so two mask voxels touching only at a corner get
two separate polygons (no self-touching polygon). A hole gives an inner polygon, an island in a hole another one
inside it: under the even-odd rule (DICOM planning systems) nested polygons give back holes and islands. Polygons
never cross. Exactly collinear points are dropped (a lossless simplification); no polygon has fewer than 3 points
(a single voxel gives a 4-point diamond) and none repeats its first point at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import find_contours

from dicomrt.geometry import Geometry
from dicomrt.rt_errors import MaskShapeError


@dataclass(frozen=True, eq=False)
class SliceContour:
    """One closed planar polygon: ``slice_index`` (z index on the grid) and ``points`` (N, 3) LPS mm, N >= 3."""

    slice_index: int
    points: np.ndarray


def slice_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Polygons of one slice: ``mask`` (y, x) bool → list of (N, 2) float64 ``(y, x)`` fractional voxel indices.

    Each polygon is closed implicitly (its last point is not its first) and has at least 3 points.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise MaskShapeError(f"a slice mask must be 2D (y, x), got shape {mask.shape}")
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    y0, x0 = int(rows[0]), int(columns[0])
    crop = mask[y0:int(rows[-1]) + 1, x0:int(columns[-1]) + 1]
    padded = np.pad(crop, 1).astype(np.float32)  # zero border: every contour closes inside the array
    offset = np.array([y0 - 1, x0 - 1], dtype=np.float64)
    polygons = []
    for line in find_contours(padded, 0.5, fully_connected="low"):
        if len(line) > 1 and np.array_equal(line[0], line[-1]):
            line = line[:-1]
        line = _drop_collinear(line)
        if len(line) >= 3:
            polygons.append(line + offset)
    return polygons


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """``points`` (N, 2) of a closed polygon without those lying exactly on the segment between their neighbours."""
    if len(points) < 4:
        return points
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = np.abs(cross) > 1e-9
    return points[keep] if keep.sum() >= 3 else points


def mask_contours(mask: np.ndarray, geometry: Geometry) -> list[SliceContour]:
    """Polygons of a (z, y, x) bool mask on ``geometry``, slice by slice in z order, in patient LPS mm."""
    mask = np.asarray(mask)
    if mask.shape != geometry.shape:
        raise MaskShapeError(f"mask shape (z, y, x) must be {geometry.shape} (the series grid), got {mask.shape}")
    if mask.dtype != bool:
        raise MaskShapeError(f"mask must be boolean, got dtype {mask.dtype}")
    contours = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for polygon in slice_polygons(mask[k]):
            zyx = np.column_stack([np.full(len(polygon), float(k)), polygon])
            contours.append(SliceContour(int(k), geometry.index_to_patient(zyx)))
    return contours
