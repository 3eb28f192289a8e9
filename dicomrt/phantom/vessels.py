"""Lung vessels: a branching tree from each hilum, and a finer network of vessel-like tubes.

Both live in end-exhale coordinates and are seen through the thoracic warp (``z_ref``). The fine network is the
intersection of the zero sets of two smooth random fields: curves that wander through the lung like small vessels in
cross-section (dots and short segments), thick near the hila and thin in the periphery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dicomrt.phantom.anatomy import Anatomy, Capsule

Array = np.ndarray

TREE_DEPTH = 3  # generations per primary branch
FIELD_SPACING_MM = 2.5  # spacing of the grid on which the random fields are drawn, whatever the phantom's grid


def draw_vessel_tree(rng: np.random.Generator, anatomy: Anatomy) -> tuple[Capsule, ...]:
    """Branching vessels, end-exhale LPS mm: four primary branches per hilum (towards the apex, the posterior and
    anterior base and the side), each splitting in two, ``TREE_DEPTH`` generations, radius shrinking by 0.72."""
    segments: list[Capsule] = []
    cavity_a = anatomy.body_a - anatomy.fat_mm - anatomy.wall_mm
    cavity_b_ant = anatomy.body_b_ant - anatomy.fat_mm - anatomy.wall_mm
    for side, hilum in enumerate(anatomy.hila):
        sign = -1.0 if side == 0 else 1.0
        apex_z, apex_x, apex_y, _, _ = anatomy.apex[side]
        dome_z, dome_x, dome_y, _, _ = anatomy.dome[side]
        targets = ((apex_x, apex_y, apex_z - 35.0), (dome_x, dome_y + 50.0, dome_z + 15.0),
                   (dome_x, anatomy.body_y - 0.6 * cavity_b_ant, dome_z + 25.0),
                   (sign * 0.8 * cavity_a, anatomy.body_y, hilum[2] - 10.0))
        start = np.array(hilum)
        for target in targets:
            step = 0.5 * (np.array(target) - start)
            _grow(rng, segments, start, step, rng.uniform(4.0, 6.0), TREE_DEPTH)
    return tuple(segments)


def _grow(rng: np.random.Generator, segments: list[Capsule], start: np.ndarray, step: np.ndarray, radius: float,
          depth: int) -> None:
    end = start + step
    segments.append(Capsule(tuple(float(v) for v in start), tuple(float(v) for v in end), float(radius)))
    if depth <= 1:
        return
    length = float(np.linalg.norm(step))
    direction = step / length
    for turn in (1.0, -1.0):
        normal = np.cross(direction, rng.normal(size=3))
        normal /= np.linalg.norm(normal)
        angle = turn * np.radians(rng.uniform(20.0, 40.0))
        new_direction = np.cos(angle) * direction + np.sin(angle) * normal
        _grow(rng, segments, end, new_direction * 0.75 * length, 0.72 * radius, depth - 1)


@dataclass(frozen=True, eq=False)
class VesselField:
    """Two smooth random fields of unit variance on a regular end-exhale grid; their common zero set is the network.

    ``origin_mm``: LPS (x, y, z) of element [0, 0, 0]; arrays are (z, y, x) with ``FIELD_SPACING_MM`` steps.
    ``correlation_mm``: standard deviation of the Gaussian that smoothed the white noise.
    ``radius_mm``: (periphery, hilum, decay length) of the tube radius ``r = r0 + (r1 - r0) exp(-d / L)``, ``d`` the
    distance to the nearer hilum.
    """

    origin_mm: tuple[float, float, float]
    first: Array
    second: Array
    correlation_mm: float
    radius_mm: tuple[float, float, float]
    hila: tuple[tuple[float, float, float], ...]

    def resample_xy(self, x_mm: Array, y_mm: Array) -> tuple[Array, Array]:
        """Both fields linearly interpolated at the grid columns ``x_mm`` (nx,) and rows ``y_mm`` (ny,), every field
        slice kept: two (field z, ny, nx) float32 arrays."""
        (y0, y1, wy), (x0, x1, wx) = (_linear_indices(y_mm, self.origin_mm[1], self.first.shape[1]),
                                      _linear_indices(x_mm, self.origin_mm[0], self.first.shape[2]))
        results = []
        for field in (self.first, self.second):
            rows = field[:, y0, :] + wy[None, :, None] * (field[:, y1, :] - field[:, y0, :])
            results.append((rows[:, :, x0] + wx * (rows[:, :, x1] - rows[:, :, x0])).astype(np.float32))
        return results[0], results[1]

    def z_weights(self, z_ref: Array) -> tuple[Array, Array, Array]:
        """Indices (below, above) into the field slices and the weight of ``above`` for each end-exhale z."""
        return _linear_indices(z_ref, self.origin_mm[2], self.first.shape[0])

    def network_sdf(self, first: Array, second: Array, x: Array, y: Array, z_ref: Array) -> Array:
        """Signed distance-like value (mm) to the fine vessels, from the two fields sampled at the points."""
        distance = np.sqrt(first * first + second * second) * np.float32(np.sqrt(2.0) * self.correlation_mm)
        periphery, hilum, decay = self.radius_mm
        nearest = None
        for hx, hy, hz in self.hila:
            d2 = (x - hx) ** 2 + (y - hy) ** 2 + (z_ref - hz) ** 2
            nearest = d2 if nearest is None else np.minimum(nearest, d2)
        radius = periphery + (hilum - periphery) * np.exp(-np.sqrt(nearest) / decay)
        return distance - radius


def _linear_indices(coords_mm: Array, origin_mm: float, n: int) -> tuple[Array, Array, Array]:
    """Indices (below, above) into a grid of ``n`` samples at ``FIELD_SPACING_MM`` and the weight of ``above``."""
    position = np.clip((np.asarray(coords_mm, dtype=np.float64) - origin_mm) / FIELD_SPACING_MM, 0, n - 1.001)
    below = np.floor(position).astype(np.intp)
    return below, below + 1, (position - below).astype(np.float32)


def draw_vessel_field(rng: np.random.Generator, anatomy: Anatomy) -> VesselField:
    """The random fields over the lungs' end-exhale extent (independent of the phantom's grid)."""
    cavity_a = anatomy.body_a * 1.05 - anatomy.fat_mm - anatomy.wall_mm
    y_low = anatomy.body_y - anatomy.body_b_ant * 1.05 + anatomy.fat_mm + anatomy.wall_mm
    y_high = anatomy.body_y + anatomy.body_b_post * 1.05 - anatomy.fat_mm - anatomy.wall_post_mm
    z_low = min(d[0] for d in anatomy.dome) - 90.0
    z_high = max(a[0] for a in anatomy.apex) + 10.0
    origin = (-cavity_a - 5.0, y_low - 5.0, z_low)
    shape = tuple(int(np.ceil((high - low + 10.0) / FIELD_SPACING_MM)) + 1
                  for low, high in ((z_low, z_high), (y_low, y_high), (-cavity_a, cavity_a)))
    correlation = rng.uniform(3.5, 5.0)
    fields = []
    for _ in range(2):
        noise = rng.standard_normal(shape, dtype=np.float32)
        smooth = ndimage.gaussian_filter(noise, correlation / FIELD_SPACING_MM, mode="wrap")
        fields.append(smooth / smooth.std())
    radius = (rng.uniform(0.4, 0.6), rng.uniform(1.2, 1.8), rng.uniform(40.0, 70.0))
    return VesselField(origin, fields[0], fields[1], correlation, radius, anatomy.hila)
