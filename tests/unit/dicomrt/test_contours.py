"""Contours from masks and the even-odd centre rasteriser: exact round trips, holes, islands, tiny masks; the
vectorised tracing gives exactly scikit-image's ``find_contours`` polygons (order, start, direction)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import find_contours

from dicomrt.contours import MaskPolygons
from dicomrt.geometry import Geometry
from dicomrt.raster import rasterise_contours, rasterise_polygons
from dicomrt.rt_errors import ContourError, MaskShapeError


def slice_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """One (y, x) slice's polygons, (N, 2) (y, x) fractional voxel indices each: a one-slice volume traced."""
    traced = MaskPolygons.trace(mask[None])
    return [traced.points[a:b] for a, b in pairwise(traced.bounds.tolist())]


def round_trip(mask: np.ndarray) -> np.ndarray:
    return rasterise_polygons(slice_polygons(mask), mask.shape)


def test_random_masks_round_trip_exactly():
    rng = np.random.default_rng(3)
    for k in range(120):
        mask = rng.random((30, 41)) < rng.uniform(0.05, 0.8)
        if k % 2:
            mask = ndimage.binary_opening(mask)
        polygons = slice_polygons(mask)
        assert all(len(p) >= 3 for p in polygons)
        assert not any(np.array_equal(p[0], p[-1]) for p in polygons)
        np.testing.assert_array_equal(round_trip(mask), mask)


def find_contours_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """The polygons as the tracing was first written: find_contours on the zero-padded slice, without the repeated
    last point and exactly collinear points."""
    polygons = []
    for line in find_contours(np.pad(mask, 1).astype(np.float64), 0.5, fully_connected="low"):
        line = line[:-1]
        before, after = line - np.roll(line, 1, axis=0), np.roll(line, -1, axis=0) - line
        polygons.append(line[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]] - 1)
    return polygons


def test_polygons_are_find_contours_ones_point_for_point():
    rng = np.random.default_rng(7)
    for k in range(600):
        mask = rng.random(tuple(rng.integers(1, 30, 2))) < rng.uniform(0.02, 0.95)
        if k % 3 == 1:
            mask = ndimage.binary_opening(mask)
        elif k % 3 == 2:  # rings, saddles and holes within holes
            mask = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask)
        ours, reference = slice_polygons(mask), find_contours_polygons(mask)
        assert len(ours) == len(reference)
        for polygon, expected in zip(ours, reference, strict=True):
            np.testing.assert_array_equal(polygon, expected)


def test_a_volume_is_traced_slice_by_slice_in_z_order():
    rng = np.random.default_rng(8)
    mask = ndimage.binary_opening(rng.random((9, 25, 31)) < 0.55)
    mask[4] = False
    traced = MaskPolygons.trace(mask)
    expected = [(k, p) for k in range(mask.shape[0]) for p in find_contours_polygons(mask[k])]
    assert traced.slice_indices.tolist() == [k for k, _ in expected] and 4 not in traced.slice_indices
    spans = zip(traced.bounds[:-1], traced.bounds[1:], strict=True)
    for (a, b), (_, polygon) in zip(spans, expected, strict=True):
        np.testing.assert_array_equal(traced.points[a:b], polygon)
    empty = MaskPolygons.trace(np.zeros((3, 4, 5), bool))
    assert empty.slice_indices.size == 0 and empty.bounds.tolist() == [0] and empty.points.shape == (0, 2)


def test_ring_gives_outer_and_inner_polygon_and_keeps_the_hole():
    yy, xx = np.mgrid[:40, :40]
    radius = np.hypot(yy - 20, xx - 20)
    ring = (radius < 15) & (radius >= 7)
    assert len(slice_polygons(ring)) == 2
    np.testing.assert_array_equal(round_trip(ring), ring)
    island = ring | (radius < 3)  # an island inside the hole: three nested polygons
    assert len(slice_polygons(island)) == 3
    np.testing.assert_array_equal(round_trip(island), island)


def test_two_islands_on_one_slice():
    mask = np.zeros((30, 30), bool)
    mask[3:8, 3:9] = True
    mask[15:25, 12:20] = True
    assert len(slice_polygons(mask)) == 2
    np.testing.assert_array_equal(round_trip(mask), mask)


def test_diagonal_neighbours_give_separate_polygons():
    mask = np.zeros((6, 6), bool)
    mask[2, 2] = mask[3, 3] = True
    assert len(slice_polygons(mask)) == 2
    np.testing.assert_array_equal(round_trip(mask), mask)


def test_one_voxel_gives_a_valid_diamond_around_its_centre():
    mask = np.zeros((8, 8), bool)
    mask[5, 2] = True
    (polygon,) = slice_polygons(mask)
    assert len(polygon) == 4
    np.testing.assert_allclose(polygon.mean(axis=0), [5, 2])
    np.testing.assert_array_equal(round_trip(mask), mask)


def test_mask_on_the_array_border_round_trips():
    mask = np.zeros((10, 12), bool)
    mask[0:4, 8:12] = True
    mask[9, 0] = True
    np.testing.assert_array_equal(round_trip(mask), mask)


def oblique_geometry(shape=(4, 20, 24)) -> Geometry:
    """Rows along -x (feet-first-like flip), columns along +y, slices along +z, non-zero origin."""
    affine = np.eye(4)
    affine[:3, 0] = (0, 0, 2.5)
    affine[:3, 1] = (0, 0.8, 0)
    affine[:3, 2] = (-0.7, 0, 0)
    affine[:3, 3] = (100.0, -50.0, -300.0)
    return Geometry(affine, shape, "1.2.3", tuple(f"1.2.3.{k}" for k in range(shape[0])))


def test_contours_in_patient_mm_round_trip_through_the_affine():
    geometry = oblique_geometry()
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random(geometry.shape) < 0.6)
    traced = MaskPolygons.trace(mask)
    lps = traced.place(geometry)
    contours = [(k, lps[a:b]) for k, (a, b) in zip(traced.slice_indices.tolist(), pairwise(traced.bounds.tolist()),
                                                   strict=True)]
    for k, points in contours:
        assert points.shape[1] == 3
        np.testing.assert_allclose(points[:, 2], -300 + 2.5 * k)
    back, skipped = rasterise_contours([points for _, points in contours], geometry)
    assert skipped == 0
    np.testing.assert_array_equal(back, mask)


def test_contours_off_the_grid_are_counted_not_drawn():
    geometry = oblique_geometry()
    contour = np.array([[95.0, -45, -275.0], [90, -45, -275.0], [90, -40, -275.0]])
    mask, skipped = rasterise_contours([contour], geometry)
    assert skipped == 1 and not mask.any()


def test_refusals():
    geometry = oblique_geometry()
    with pytest.raises(MaskShapeError, match="boolean"):
        MaskPolygons.trace(np.zeros((4, 20, 24), np.uint8))
    with pytest.raises(MaskShapeError, match=r"must be 3D \(z, y, x\), got shape \(20, 24\)"):
        MaskPolygons.trace(np.zeros((20, 24), bool))
    with pytest.raises(MaskShapeError, match=r"must be \(4, 20, 24\).*got \(4, 20, 23\)"):
        MaskPolygons.trace(np.zeros((4, 20, 23), bool)).place(geometry)
    with pytest.raises(ContourError, match="one slice plane"):
        rasterise_contours([np.array([[100, -50, -300], [99, -50, -300], [99, -49, -295]])], geometry)
    with pytest.raises(ContourError, match="N >= 3"):
        rasterise_polygons([np.zeros((2, 2))], (4, 4))
