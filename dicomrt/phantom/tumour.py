"""The tumour: an irregular lobulated shape, its site in one lung and its looped motion."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dicomrt.phantom.anatomy import Anatomy
from dicomrt.phantom.breathing import BreathingTrace
from dicomrt.phantom.config import Breathing

Array = np.ndarray

# Clearance (mm) kept between the tumour's bounding sphere and the lung surface at every phase: more than the largest
# voxel step of any grid, so every voxel next to the tumour is lung.
LUNG_CLEARANCE_MM = 6.0
PLACEMENT_ATTEMPTS = 400


@dataclass(frozen=True)
class TumourShape:
    """A sphere of ``radius_mm`` whose radius is modulated by a few cosine modes over direction, united with smaller
    satellite spheres; centred at the origin (LPS mm offsets).

    ``modes``: (amplitude, frequency, phase, unit vector x, y, z): the radius is multiplied by
    ``1 + sum amplitude * cos(pi * frequency * (u . v) + phase)`` for the direction ``u``. ``satellites``:
    (offset x, y, z, radius), mm. ``bound_mm``: radius of a sphere holding the whole tumour.
    """

    radius_mm: float
    modes: tuple[tuple[float, float, float, float, float, float], ...]
    satellites: tuple[tuple[float, float, float, float], ...]
    bound_mm: float

    def sdf(self, dx: Array, dy: Array, dz: Array) -> Array:
        """Signed distance-like value (mm) at offsets from the tumour centre; broadcasts."""
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        safe = np.maximum(r, 1e-6)
        modulation = 1.0
        for amplitude, frequency, phase, vx, vy, vz in self.modes:
            cosine = (dx * vx + dy * vy + dz * vz) / safe
            modulation = modulation + amplitude * np.cos(np.pi * frequency * cosine + phase)
        f = r - self.radius_mm * modulation
        for sx, sy, sz, radius in self.satellites:
            f = np.minimum(f, np.sqrt((dx - sx) ** 2 + (dy - sy) ** 2 + (dz - sz) ** 2) - radius)
        return f

    def scaled(self, factor: float) -> TumourShape:
        return TumourShape(self.radius_mm * factor, self.modes,
                           tuple((x * factor, y * factor, z * factor, r * factor) for x, y, z, r in self.satellites),
                           self.bound_mm * factor)

    def volume_mm3(self, samples: int = 72) -> float:
        """Volume by counting the centres of a ``samples``^3 grid over the bounding cube."""
        axis = (np.arange(samples) + 0.5) / samples * 2 * self.bound_mm - self.bound_mm
        inside = self.sdf(axis[:, None, None], axis[None, :, None], axis[None, None, :]) < 0
        return float(inside.sum()) * (2 * self.bound_mm / samples) ** 3


def draw_tumour_shape(rng: np.random.Generator, diameter_mm: float) -> TumourShape:
    """An irregular tumour whose volume is that of a sphere of ``diameter_mm``."""
    modes = []
    for _ in range(4):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        modes.append((rng.uniform(0.03, 0.08), float(rng.integers(1, 4)), rng.uniform(0, 2 * np.pi), *map(float, v)))
    satellites = []
    for _ in range(int(rng.integers(0, 4))):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        distance, radius = rng.uniform(0.45, 0.75), rng.uniform(0.35, 0.6)
        satellites.append((*(float(c) for c in v * distance), radius))
    bound = max([1.0 + sum(m[0] for m in modes)] + [distance_plus_radius(s) for s in satellites])
    unit = TumourShape(1.0, tuple(modes), tuple(satellites), bound * 1.02)
    equivalent_radius = (3 * unit.volume_mm3() / (4 * np.pi)) ** (1 / 3)
    return unit.scaled(diameter_mm / 2 / equivalent_radius)


def distance_plus_radius(satellite: tuple[float, float, float, float]) -> float:
    x, y, z, r = satellite
    return float(np.sqrt(x * x + y * y + z * z)) + r


@dataclass(frozen=True)
class TumourSite:
    """Where the tumour is at end-exhale: ``side`` ("left"/"right", the patient's), ``lobe`` ("upper"/"lower"),
    ``centre_mm`` LPS."""

    side: str
    lobe: str
    centre_mm: tuple[float, float, float]

    @property
    def name(self) -> str:
        return f"{self.side} {self.lobe} lobe"


def _sphere_points(n: int) -> np.ndarray:
    """(n, 3) nearly uniform unit vectors (Fibonacci sphere)."""
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = np.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def fits(anatomy: Anatomy, shape: TumourShape, centre: np.ndarray, phases: tuple[float, ...],
         z_limits_mm: tuple[float, float]) -> bool:
    """Whether the tumour's bounding sphere, grown by ``LUNG_CLEARANCE_MM``, lies inside one lung at every phase
    (``phases`` in cycles) and within ``z_limits_mm`` (LPS z)."""
    points = _sphere_points(160) * (shape.bound_mm + LUNG_CLEARANCE_MM)
    for t in phases:
        moved = points + centre + anatomy.motion.tumour_displacement(t)
        if moved[:, 2].min() < z_limits_mm[0] or moved[:, 2].max() > z_limits_mm[1]:
            return False
        x, y, z = moved.T
        z_ref = anatomy.motion.to_reference_z(z, t)
        if np.any(anatomy.lungs_sdf(x, y, z, z_ref, t) >= 0) or np.ptp(np.sign(x)) > 0:
            return False
    return True


def place_tumour(rng: np.random.Generator, anatomy: Anatomy, shape: TumourShape, phases: tuple[float, ...],
                 z_limits_mm: tuple[float, float]) -> TumourSite:
    """Draw the side and lobe, then a centre where the moving tumour stays inside that lung (``fits``); falls back to
    the other lobes and sides, in a fixed order, when none of ``PLACEMENT_ATTEMPTS`` candidates fits."""
    side_first, lobe_first = ("left", "right")[int(rng.integers(2))], ("upper", "lower")[int(rng.integers(2))]
    other = {"left": "right", "right": "left", "upper": "lower", "lower": "upper"}
    cavity_a = anatomy.body_a - anatomy.fat_mm - anatomy.wall_mm
    cavity_b_ant = anatomy.body_b_ant - anatomy.fat_mm - anatomy.wall_mm
    cavity_b_post = anatomy.body_b_post - anatomy.fat_mm - anatomy.wall_post_mm
    z_carina = anatomy.trachea[0].b[2]
    for side, lobe in ((side_first, lobe_first), (side_first, other[lobe_first]), (other[side_first], lobe_first),
                       (other[side_first], other[lobe_first])):
        index = 0 if side == "right" else 1
        sign = -1.0 if side == "right" else 1.0
        if lobe == "upper":
            z_range = (z_carina - 5.0, anatomy.apex[index][0] - 25.0)
            y_range = (anatomy.body_y - cavity_b_ant + 15.0, anatomy.body_y + cavity_b_post - 15.0)
        else:
            z_range = (anatomy.dome[index][0] + 10.0, z_carina - 25.0)
            y_range = (anatomy.body_y - 20.0, anatomy.body_y + cavity_b_post - 10.0)
        x_range = (sum(anatomy.mediastinum_half_width[:2]) + 10.0, cavity_a - 15.0)
        for _ in range(PLACEMENT_ATTEMPTS):
            centre = np.array([sign * rng.uniform(*x_range), rng.uniform(*y_range), rng.uniform(*z_range)])
            if fits(anatomy, shape, centre, phases, z_limits_mm):
                return TumourSite(side, lobe, tuple(float(c) for c in centre))
    raise ValueError(f"cannot place a tumour of {2 * shape.bound_mm:.0f} mm (bounding diameter) moving "
                     f"{anatomy.motion.tumour_mm} mm (SI, AP, LR) inside a lung of this anatomy; ask for a smaller "
                     f"tumour_diameter_mm or amplitude")


def draw_motion(rng: np.random.Generator, anatomy: Anatomy, amplitudes_mm: tuple[float, float, float],
                breathing: Breathing) -> Anatomy:
    """The anatomy with the tumour's motion filled in: the configured (SI, AP, LR) amplitudes, AP and LR lagging the
    SI component by a drawn fraction of the cycle, LR towards a drawn side; for ``Breathing.IRREGULAR`` also the
    thorax's ``BreathingTrace`` (plateau ``warp``, inhale ``skew`` and end-inhale ``shift_cycles``, of either sign).
    Only an irregular phantom draws the trace, so a regular one's later draws (site, HU) do not depend on it."""
    motion = dataclasses.replace(anatomy.motion, tumour_mm=tuple(float(a) for a in amplitudes_mm),
                                 tumour_lag_cycles=(rng.uniform(0.06, 0.12), rng.uniform(0.03, 0.10)),
                                 lr_sign=float(rng.choice([-1.0, 1.0])))
    if breathing is Breathing.IRREGULAR:
        trace = BreathingTrace(warp=float(rng.uniform(0.15, 0.35)), skew=float(rng.uniform(-0.45, -0.25)),
                               shift_cycles=float(rng.uniform(0.015, 0.04) * rng.choice([-1.0, 1.0])))
        motion = dataclasses.replace(motion, trace=trace)
    return dataclasses.replace(anatomy, motion=motion)
