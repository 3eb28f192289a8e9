"""Rasterising closed planar polygons onto a voxel grid: even-odd rule, a voxel is in when its centre is inside.

This is the rule of plastimatch and of the planning systems we write for. A voxel centre exactly on a polygon edge
counts as inside on a left edge and outside on a right edge (half-open scanlines), so that polygons sharing an edge
never both claim its voxels. Every polygon of a structure on a slice toggles the voxels it encloses: nested polygons
make holes, and islands within holes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dicomrt.geometry import Geometry
from dicomrt.rt_errors import ContourError

# A contour belongs to a slice when its points lie within this fraction of the slice spacing of the slice's plane.
SLICE_TOLERANCE = 0.1


def rasterise_polygons(polygons: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(y, x) bool mask of ``shape``: voxels whose centre is inside an odd number of ``polygons``.

    Each polygon: (N, 2) float ``(y, x)`` fractional voxel indices, implicitly closed (a repeated first point is
    harmless).
    """
    height, width = shape
    toggles = np.zeros((height, width + 1), dtype=np.int32)
    for polygon in polygons:
        polygon = np.asarray(polygon, dtype=np.float64)
        if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
            raise ContourError(f"a polygon needs (N >= 3, 2) points (y, x), got shape {polygon.shape}")
        y0, x0 = polygon[:, 0], polygon[:, 1]
        y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
        low, high = np.minimum(y0, y1), np.maximum(y0, y1)
        first = np.clip(np.ceil(low), 0, height).astype(np.int64)  # rows r with low <= r < high
        last = np.clip(np.ceil(high), 0, height).astype(np.int64)
        counts = np.maximum(last - first, 0)
        if counts.sum() == 0:
            continue
        edge = np.repeat(np.arange(len(polygon)), counts)
        rows = first[edge] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        t = (rows - y0[edge]) / (y1[edge] - y0[edge])
        xs = x0[edge] + t * (x1[edge] - x0[edge])
        columns = np.clip(np.ceil(xs), 0, width).astype(np.int64)  # first centre at or right of the crossing
        np.add.at(toggles, (rows, columns), 1)
    return (np.cumsum(toggles[:, :width], axis=1) % 2).astype(bool)


def rasterise_contours(contours: Sequence[np.ndarray], geometry: Geometry) -> tuple[np.ndarray, int]:
    """(z, y, x) bool mask on ``geometry`` from closed planar contours of one structure, each (N, 3) LPS mm.

    Returns the mask and the number of contours that lie on no slice of the grid (skipped: e.g. an RTSTRUCT drawn
    on more slices than the CT series at hand). Refuses a contour that is not in one slice plane.
    """
    by_slice: dict[int, list[np.ndarray]] = {}
    skipped = 0
    for points in contours:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 3:
            raise ContourError(f"a contour needs (N >= 3, 3) points in LPS mm, got shape {points.shape}")
        zyx = geometry.patient_to_index(points)
        z = zyx[:, 0]
        k = int(np.round(z.mean()))
        if np.ptp(z) > 2 * SLICE_TOLERANCE:
            raise ContourError(f"a contour must lie in one slice plane, got points spanning {np.ptp(z):.2f} slices")
        if abs(z.mean() - k) > SLICE_TOLERANCE or not 0 <= k < geometry.shape[0]:
            skipped += 1
            continue
        by_slice.setdefault(k, []).append(zyx[:, 1:])
    mask = np.zeros(geometry.shape, dtype=bool)
    for k, polygons in by_slice.items():
        mask[k] = rasterise_polygons(polygons, geometry.shape[1:])
    return mask, skipped
