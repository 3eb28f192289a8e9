"""Polygons from boolean masks, placed so that a centre-inclusion rasteriser gives back exactly the same voxels.

Placement: per slice, the iso-line at level 0.5 of the (zero-padded) mask, as scikit-image's ``find_contours``
traces it (marching squares, ``fully_connected="low"``). Between a voxel inside and one outside, that line crosses
the straight segment joining their centres at its middle, i.e. on the shared voxel edge, and at a corner it cuts
diagonally between the voxel centres. So every centre of a mask voxel is strictly inside a polygon, every other
centre strictly outside (at least 0.35 voxel from the line), and a rasteriser that includes a voxel when its centre
is inside (plastimatch, planning systems, ``dicomrt.raster``) gives back the mask. Contours through the centres of
boundary voxels (rt-utils, OpenCV's ``findContours``) put those centres on the polygon and lose a ring to such
rasterisers.

Topology: ``fully_connected="low"`` joins background diagonally, so two mask voxels touching only at a corner get
two separate polygons (no self-touching polygon). A hole gives an inner polygon, an island in a hole another one
inside it: under the even-odd rule (DICOM planning systems) nested polygons give back holes and islands. Polygons
never cross. Exactly collinear points are dropped (a lossless simplification); no polygon has fewer than 3 points
(a single voxel gives a 4-point diamond) and none repeats its first point at the end.

Tracing (``MaskPolygons.trace``) is vectorised over the whole volume instead of calling ``find_contours`` per slice,
whose segment assembly is a Python loop (most of the writing time of a full-size study). It gives the very polygons
``find_contours`` gives, in its order, from its start point and direction (tests/unit/dicomrt/test_contours.py
compares them): per slice, polygons in the order of their first segment in the row-major scan, each starting where
the last of its segments scanned ends. A mask is traced once in voxel indices and then placed on any series of its
grid (``MaskPolygons.place``), so the RTSTRUCTs of one job share the tracing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from dicomrt.geometry import Geometry
from dicomrt.rt_errors import MaskShapeError

# Marching squares as find_contours draws them (fully_connected="low"). A square's case: its corners inside the mask
# (upper-left 1, upper-right 2, lower-left 4, lower-right 8); its segments, oriented with the mask on the right, go
# from the midpoint of one of its edges to another's: "RT" from the right edge to the top one. Saddles have two.
_EDGES = "TBLR"
_SEGMENTS = ("", "TL", "RT", "RL", "LB", "TB", "RT LB", "RB", "BR", "TL BR", "BT", "BL", "LR", "TR", "LT", "")
_SADDLES = (6, 9)
_EDGE_MIDPOINT = np.array([(0, 1), (2, 1), (1, 0), (1, 2)])  # doubled (y, x) offsets from the upper-left corner
_OPPOSITE = np.array([1, 0, 3, 2])  # an edge as the square across it sees it


def _edge_table(end: int) -> np.ndarray:
    """(case, k) → the edge (index in ``_EDGES``) where the square's k-th segment starts (``end`` 0) or ends (1)."""
    return np.array([[_EDGES.index(pair[end]) for pair in pairs.split()] + [-1] * (2 - len(pairs.split()))
                     for pairs in _SEGMENTS])


_FROM, _TO = _edge_table(0), _edge_table(1)


@dataclass(frozen=True, eq=False)
class MaskPolygons:
    """The polygons of one (z, y, x) bool mask in voxel indices: traced once (``trace``), placed on a series later.

    ``shape``: the mask's (z, y, x). ``slice_indices``: (P,) int64, the z index of each polygon, ascending.
    ``bounds``: (P + 1,) int64, polygon p is ``points[bounds[p]:bounds[p + 1]]``. ``points``: (N, 2) float64
    ``(y, x)`` fractional voxel indices; each polygon implicitly closed, with at least 3 points.
    """

    shape: tuple[int, int, int]
    slice_indices: np.ndarray
    bounds: np.ndarray
    points: np.ndarray

    @classmethod
    def trace(cls, mask: np.ndarray) -> MaskPolygons:
        """The polygons of a (z, y, x) bool ``mask``, slice by slice in z order (see the module docstring)."""
        mask = np.asarray(mask)
        if mask.ndim != 3:
            raise MaskShapeError(f"mask must be 3D (z, y, x), got shape {mask.shape}")
        if mask.dtype != bool:
            raise MaskShapeError(f"mask must be boolean, got dtype {mask.dtype}")
        shape = (int(mask.shape[0]), int(mask.shape[1]), int(mask.shape[2]))
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        if slices.size == 0:
            return cls(shape, np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((0, 2)))
        z0, z1 = int(slices[0]), int(slices[-1]) + 1
        plane = mask[z0:z1].any(axis=0)
        rows, columns = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        y0, x0 = int(rows[0]), int(columns[0])
        # The mask's box with a zero border in-plane: every line closes inside it.
        box = np.pad(mask[z0:z1, y0:int(rows[-1]) + 1, x0:int(columns[-1]) + 1], ((0, 0), (1, 1), (1, 1)))
        box = box.view(np.uint8)
        pairs = box[:, :, :-1] | box[:, :, 1:] << 1
        case = (pairs[:, :-1] | pairs[:, 1:] << 2).ravel()  # squares (z, r, c) of the box, in row-major scan order
        crossed = np.flatnonzero((case != 0) & (case != 15))
        # Segments in scan order (each standing for the point it starts at): a saddle's second right after its first.
        square = np.repeat(crossed, np.where(np.isin(case[crossed], _SADDLES), 2, 1))
        k = np.zeros(len(square), np.int64)
        k[1:] = square[1:] == square[:-1]
        cases = case[square]
        start, end = _FROM[cases, k], _TO[cases, k]
        row_step = box.shape[2] - 1
        z, within = np.divmod(square, (box.shape[1] - 1) * row_step)
        # The next segment along the line: in the square across the edge where this one ends, the one starting there.
        successor = np.searchsorted(square, square + np.array([-row_step, row_step, -1, 1])[end])
        successor += start[successor] != _OPPOSITE[end]
        n = len(successor)
        links = csr_array((np.ones(n, np.int8), (np.arange(n), successor)), shape=(n, n))
        order, bounds, first = _in_find_contours_order(successor, connected_components(links, connection="weak")[1])
        r, c = np.divmod(within[order], row_step)
        doubled = np.stack([2 * r, 2 * c], axis=1) + _EDGE_MIDPOINT[start[order]]
        kept, bounds = _without_collinear(doubled, bounds)
        yx = kept / 2.0 + np.array([y0 - 1, x0 - 1], dtype=np.float64)
        return cls(shape, z[first] + z0, bounds, yx)

    def place(self, geometry: Geometry) -> np.ndarray:
        """The points on ``geometry`` (a series of the mask's grid): (N, 3) patient LPS mm, polygon p in rows
        ``bounds[p]:bounds[p + 1]``."""
        if self.shape != geometry.shape:
            raise MaskShapeError(f"mask shape (z, y, x) must be {geometry.shape} (the series grid), got "
                                 f"{self.shape}")
        z = np.repeat(self.slice_indices, np.diff(self.bounds)).astype(np.float64)
        return geometry.index_to_patient(np.column_stack([z, self.points]))


def _in_find_contours_order(successor: np.ndarray, cycle: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """find_contours' polygons from the segments in scan order: ``successor`` (S,) the next segment along the line,
    ``cycle`` (S,) the label of its closed line. Its assembly keeps the polygon created first, so polygons come in
    the order of their first scanned segment; each closes when its last segment is scanned, and so starts where that
    one ends. Returns ``order`` (S,) the segments polygon by polygon, ``bounds`` (P + 1,) polygon p is
    ``order[bounds[p]:bounds[p + 1]]``, and ``first`` (P,) each polygon's first segment in scan order."""
    n = len(successor)
    index = np.arange(n)
    count = int(cycle.max()) + 1
    first, last = np.full(count, n), np.zeros(count, np.int64)
    np.minimum.at(first, cycle, index)
    np.maximum.at(last, cycle, index)
    rank = np.empty(count, np.int64)
    rank[np.argsort(first)] = np.arange(count)
    polygon = rank[cycle]
    sizes = np.bincount(polygon, minlength=count)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    # Steps from each segment to its polygon's last scanned one (pointer jumping): that one goes last.
    ahead = successor.copy()
    ahead[last] = last
    steps = np.ones(n, np.int64)
    steps[last] = 0
    for _ in range(int(sizes.max()).bit_length()):
        steps += steps[ahead]
        ahead = ahead[ahead]
    order = np.empty(n, np.int64)
    order[bounds[polygon] + sizes[polygon] - 1 - steps] = index
    return order, bounds, np.sort(first)


def _without_collinear(points: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``points`` (N, 2) int64 of closed polygons (polygon p is ``points[bounds[p]:bounds[p + 1]]``) without those
    lying exactly on the segment between their neighbours, and the new bounds. Exact: integer arithmetic."""
    sizes = np.diff(bounds)
    polygon = np.repeat(np.arange(len(sizes)), sizes)
    index, begin, end = np.arange(len(points)), bounds[polygon], bounds[polygon + 1] - 1
    before = points - points[np.where(index == begin, end, index - 1)]
    after = points[np.where(index == end, begin, index + 1)] - points
    keep = before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]
    return points[keep], np.concatenate([[0], np.cumsum(np.bincount(polygon[keep], minlength=len(sizes)))])
