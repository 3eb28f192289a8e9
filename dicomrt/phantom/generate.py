"""``generate_phantom``: a synthetic 4DCT of the thorax with exact ground truth, in memory."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dicomrt.geometry import Geometry
from dicomrt.phantom.anatomy import Anatomy, draw_anatomy
from dicomrt.phantom.artifacts import ArtifactRecord, apply_artifacts, plan_artifacts
from dicomrt.phantom.breathing import MotionModel
from dicomrt.phantom.config import GRIDS, TUMOUR_DIAMETER_DRAWN_MM, Breathing, PhantomConfig, phantom_geometry
from dicomrt.phantom.render import GridAxes, add_noise, render_phase, render_static, thorax_cache
from dicomrt.phantom.tumour import draw_motion, draw_tumour_shape, place_tumour
from dicomrt.phantom.vessels import draw_vessel_field, draw_vessel_tree

logger = logging.getLogger(__name__)

# Truth structures (TG-263 names). GTV voxels are not part of the lung masks; the four masks are disjoint.
STRUCTURES = ("GTV", "Lung_L", "Lung_R", "Heart")
# Independent random streams, so that changing one part (e.g. the grid size) leaves the others as they were.
_ANATOMY, _TREE, _FIELD, _TUMOUR, _ARTIFACTS, _NOISE = 1, 2, 3, 4, 5, 100
# The tumour stays within the z range common to every grid size, so a seed gives the same tumour at any size.
_Z_LIMITS_MM = (max(g.z_centre_mm - (g.shape[0] - 1) / 2 * g.spacing_mm[0] for g in GRIDS.values()),
                min(g.z_centre_mm + (g.shape[0] - 1) / 2 * g.spacing_mm[0] for g in GRIDS.values()))


@dataclass(frozen=True)
class TumourInfo:
    """The tumour as drawn: ``site`` (e.g. "left lower lobe"), the equivalent-sphere ``diameter_mm`` it was built to
    and the one ``measured_diameter_mm`` from the end-exhale mask, ``centre_mm`` (LPS, at end-exhale, before
    motion), mean ``hu``."""

    site: str
    side: str
    lobe: str
    diameter_mm: float
    measured_diameter_mm: float
    centre_mm: tuple[float, float, float]
    hu: float


@dataclass(frozen=True, eq=False)
class Phantom4D:
    """A synthetic 4DCT and its ground truth; arrays are read-only.

    ``percents``: phase percents, 0 % = end-inhale, 50 % = end-exhale. ``hu``: (phase, z, y, x) int16 Hounsfield
    units. ``truth``: structure name (``STRUCTURES``) → (phase, z, y, x) bool, the voxels whose centre is inside the
    structure in the image of that phase (GTV voxels are excluded from the lungs). ``geometry``: the grid shared by
    every phase (index (z, y, x) → LPS mm). ``itv``: (z, y, x) bool, the union over phases of ``truth["GTV"]``.
    ``tumour_centroids_mm``: (phase, 3) LPS mm (x, y, z), the centroid of each phase's GTV mask. ``motion``: the
    breathing model's amplitudes. ``artifacts``: the artefacts injected (already in ``hu`` and ``truth``).
    """

    config: PhantomConfig
    percents: tuple[float, ...]
    hu: np.ndarray
    truth: dict[str, np.ndarray]
    geometry: Geometry
    itv: np.ndarray
    tumour_centroids_mm: np.ndarray
    tumour: TumourInfo
    motion: MotionModel
    artifacts: tuple[ArtifactRecord, ...]

    def measured_amplitude_mm(self) -> tuple[float, float, float]:
        """Peak-to-peak excursion (x, y, z) LPS mm of the GTV centroid over the phases."""
        return tuple(float(v) for v in np.ptp(self.tumour_centroids_mm, axis=0))

    def describe(self) -> dict[str, Any]:
        """The ground truth as plain JSON values (what ``truth.json`` holds, less the file-writing details)."""
        si, ap, lr = self.motion.tumour_mm
        measured = self.measured_amplitude_mm()
        return {
            "statement": "synthetic phantom, not patient data",
            "generator": "itvsam dicomrt.phantom",
            "seed": self.config.seed,
            "config": self.config.to_json(),
            "coordinates": "DICOM patient coordinates (LPS): x towards the patient's left, y posterior, z superior; mm",
            "breathing": self._breathing(),
            "grid": {
                "shape_zyx": list(self.geometry.shape),
                "spacing_mm_zyx": list(self.geometry.spacing_mm),
                "affine": self.geometry.affine.tolist(),
                "frame_of_reference_uid": self.geometry.frame_of_reference_uid,
            },
            "tumour": {
                "site": self.tumour.site,
                "side": self.tumour.side,
                "lobe": self.tumour.lobe,
                "diameter_mm": self.tumour.diameter_mm,
                "diameter_definition": "diameter of the sphere of equal volume",
                "measured_diameter_mm": self.tumour.measured_diameter_mm,
                "centre_end_exhale_mm": list(self.tumour.centre_mm),
                "hu": self.tumour.hu,
                "centroid_per_phase_mm": {f"{p:g}": [round(float(v), 3) for v in c]
                                          for p, c in zip(self.percents, self.tumour_centroids_mm, strict=True)},
            },
            "motion_amplitude_mm": {
                "definition": "peak-to-peak of the breathing curve (configured); measured: range of the GTV centroid",
                "superior_inferior": si, "anterior_posterior": ap, "left_right": lr,
                "measured": {"left_right_x": measured[0], "anterior_posterior_y": measured[1],
                             "superior_inferior_z": measured[2]},
                "hysteresis_lag_cycles": {"anterior_posterior": self.motion.tumour_lag_cycles[0],
                                          "left_right": self.motion.tumour_lag_cycles[1]},
                "diaphragm_superior_inferior": self.motion.diaphragm_mm,
                "heart_superior_inferior": self.motion.heart_mm[0],
                "heart_anterior_posterior": self.motion.heart_mm[1],
            },
            "structures": {
                "names": list(STRUCTURES),
                "rule": "voxels whose centre is inside the structure in that phase's image; GTV voxels are not part "
                        "of Lung_L/Lung_R; the masks are disjoint; Lung_L is the patient's left (+x)",
                "itv": "union over phases of GTV",
            },
            "artifacts": [a.to_json() for a in self.artifacts] or "none",
        }

    def _breathing(self) -> dict[str, Any]:
        """The "breathing" entry of ``describe``: the pattern, its trace and the curve formula actually used."""
        described: dict[str, Any] = {"pattern": self.config.breathing.value,
                                     "convention": "0% = end-inhale, 50% = end-exhale"}
        if self.config.breathing is Breathing.REGULAR:
            described["curve"] = ("c(t) = cos^4(pi t), t = percent / 100; inhale moves the tumour inferiorly and "
                                  "anteriorly")
        else:
            trace = self.motion.trace
            described["trace"] = {"warp": trace.warp, "skew": trace.skew, "shift_cycles": trace.shift_cycles}
            described["curve"] = ("c(t) = cos^4(pi w(t - shift_cycles)), w(s) = s + warp sin(2 pi s) / (2 pi) + "
                                  "skew (1 - cos(2 pi s)) / (2 pi), t = percent / 100; warp > 0: end-exhale plateau, "
                                  "skew < 0: inhale faster than exhale, shift_cycles: end-inhale off phase 0; "
                                  "inhale moves the tumour inferiorly and anteriorly")
        described["percents"] = list(self.percents)
        return described


def _rng(config: PhantomConfig, stream: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream])


def generate_phantom(config: PhantomConfig) -> Phantom4D:
    """Build the phantom of ``config``: the same config always gives identical arrays.

    The phases are rendered in parallel threads (numpy releases the GIL), at most one per CPU.
    """
    percents = config.percents
    cycles = tuple(p / 100.0 for p in percents)
    anatomy = draw_anatomy(_rng(config, _ANATOMY), config.amplitude_si_mm)
    tumour_rng = _rng(config, _TUMOUR)
    diameter = config.tumour_diameter_mm
    if diameter is None:
        diameter = float(tumour_rng.uniform(*TUMOUR_DIAMETER_DRAWN_MM))
    shape = draw_tumour_shape(tumour_rng, diameter)
    anatomy = draw_motion(tumour_rng, anatomy, (config.amplitude_si_mm, config.amplitude_ap_mm,
                                                config.amplitude_lr_mm), config.breathing)
    site = place_tumour(tumour_rng, anatomy, shape, cycles, _Z_LIMITS_MM)
    tumour_hu = float(tumour_rng.uniform(20.0, 40.0))
    tree = draw_vessel_tree(_rng(config, _TREE), anatomy)
    field = draw_vessel_field(_rng(config, _FIELD), anatomy)

    geometry = phantom_geometry(config)
    axes = GridAxes.from_geometry(geometry)
    static = render_static(anatomy, axes)
    cache = thorax_cache(anatomy, field, axes)
    shape_zyx = (config.n_phases, *geometry.shape)
    hu = np.empty(shape_zyx, dtype=np.int16)
    truth = {name: np.zeros(shape_zyx, dtype=bool) for name in STRUCTURES}
    centre = np.array(site.centre_mm)
    pixel_mm = float(min(geometry.spacing_mm[1:]))

    def one_phase(index: int) -> None:
        image = render_phase(anatomy, shape, centre, tumour_hu, tree, field, static, cache, axes, cycles[index])
        volume = static.copy()
        volume[cache.box] = image.hu
        hu[index] = add_noise(volume, _rng(config, _NOISE + index), anatomy.hu.noise_sd, pixel_mm)
        for name in STRUCTURES:
            truth[name][index][cache.box] = image.masks[name]

    workers = max(1, min(os.cpu_count() or 1, config.n_phases, 4))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one_phase, range(config.n_phases)))

    artifacts = ()
    if config.artifacts:
        artifacts = plan_artifacts(_rng(config, _ARTIFACTS), config.artifacts, percents, truth["GTV"],
                                   GridAxes.from_geometry(geometry).z)
        apply_artifacts(artifacts, [hu, *truth.values()])

    gtv = truth["GTV"]
    centroids = np.array([_centroid(geometry, gtv[i]) for i in range(config.n_phases)])
    reference = int(np.argmin([abs(p - 50.0) for p in percents]))
    voxel_mm3 = float(np.prod(geometry.spacing_mm))
    measured = float((6.0 * gtv[reference].sum() * voxel_mm3 / np.pi) ** (1.0 / 3.0))
    info = TumourInfo(site.name, site.side, site.lobe, float(diameter), measured, site.centre_mm, tumour_hu)
    itv = gtv.any(axis=0)
    for array in (hu, itv, centroids, *truth.values()):
        array.setflags(write=False)
    logger.info("phantom seed %d (%s): tumour %s, %.0f mm", config.seed, config.size.value, site.name, diameter)
    return Phantom4D(config, percents, hu, truth, geometry, itv, centroids, info, anatomy.motion, artifacts)


def slab(phantom: Phantom4D, slices: int, step: int = 1) -> Phantom4D:
    """A thin phantom for the full-size model on a CPU: ``slices`` axial slices through the tumour's mean centre,
    every ``step``-th voxel in-plane, in the same patient space (the affine moved to the first kept voxel and scaled
    by ``step``) with the truth and the ITV cropped alike; ``tumour_centroids_mm`` and the motion stay those of the
    whole tumour."""
    if not 1 <= slices <= phantom.hu.shape[1] or step < 1:
        raise ValueError(f"slices must be 1..{phantom.hu.shape[1]} and step at least 1, got {slices} and {step}")
    z_centre = int(np.round(np.nonzero(phantom.itv.any(axis=(1, 2)))[0].mean()))
    z0 = max(0, min(phantom.hu.shape[1] - slices, z_centre - slices // 2))
    keep = (slice(None), slice(z0, z0 + slices), slice(None, None, step), slice(None, None, step))
    affine = np.array(phantom.geometry.affine)
    affine[:3, 3] += z0 * affine[:3, 0]
    affine[:3, 1:3] *= step
    hu = np.ascontiguousarray(phantom.hu[keep])
    geometry = Geometry(affine, hu.shape[1:], phantom.geometry.frame_of_reference_uid,
                        phantom.geometry.sop_instance_uids[z0:z0 + slices])
    truth = {name: np.ascontiguousarray(mask[keep]) for name, mask in phantom.truth.items()}
    for array in (hu, *truth.values()):
        array.setflags(write=False)
    itv = truth["GTV"].any(axis=0)
    itv.setflags(write=False)
    return replace(phantom, hu=hu, truth=truth, geometry=geometry, itv=itv)


def _centroid(geometry: Geometry, mask: np.ndarray) -> np.ndarray:
    """LPS (x, y, z) mm of the mean voxel centre of ``mask``; NaN when it is empty."""
    indices = np.argwhere(mask)
    if len(indices) == 0:
        return np.full(3, np.nan)
    return geometry.index_to_patient(indices.mean(axis=0, keepdims=True))[0]


def anatomy_of(config: PhantomConfig) -> Anatomy:
    """The anatomy (without the tumour's motion) that ``generate_phantom`` draws for ``config``; for inspection."""
    return draw_anatomy(_rng(config, _ANATOMY), config.amplitude_si_mm)
