"""Rendering the implicit anatomy on the voxel grid: partial-volume images and centre-inside truth masks.

Partial volume: a voxel's share of a structure is estimated by linearising ``F`` (the structure's implicit function)
over the voxel box: with ``span`` the change of ``F`` across the box (the sum over axes of the absolute central
differences of ``F`` on the grid), the share is ``clip(0.5 - F / span, 0, 1)``. This is exact for a plane crossing the
box along an axis, gives a soft edge about one voxel wide whatever the slice thickness, and is above one half exactly
when the voxel centre is inside (``F < 0``), the rule of the truth masks. Tissues are blended in painter's order:
``hu += share * (tissue_hu - hu)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dicomrt.geometry import Geometry
from dicomrt.phantom import anatomy as an
from dicomrt.phantom.anatomy import Anatomy, Capsule
from dicomrt.phantom.breathing import MotionModel
from dicomrt.phantom.tumour import TumourShape
from dicomrt.phantom.vessels import VesselField

Array = np.ndarray
Box = tuple[slice, slice, slice]

# Distance (mm) at which the mediastinal organs' implicit functions are clamped when carving the lungs.
ORGAN_REACH_MM = 4.0
# Grain of the image noise (mm, Gaussian sigma in-plane): finer than a small-grid pixel, so only the full grid sees it.
NOISE_GRAIN_MM = 0.6
HU_MIN, HU_MAX = -1024, 3071


@dataclass(frozen=True, eq=False)
class GridAxes:
    """The LPS coordinate (mm) of each grid plane: ``z`` (nz,), ``y`` (ny,), ``x`` (nx,), float64.

    Read off the geometry's affine, which must map the index axes z, y, x onto the patient axes z, y, x, each
    increasing with its index (the head-first-supine axial grid of ``config.GridSpec``)."""

    z: Array
    y: Array
    x: Array

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> GridAxes:
        linear = geometry.affine[:3, :3]
        steps = np.array([linear[2, 0], linear[1, 1], linear[0, 2]])  # patient z per z index, y per y, x per x
        off_axis = linear.copy()
        off_axis[2, 0] = off_axis[1, 1] = off_axis[0, 2] = 0.0
        if np.abs(off_axis).max() > 1e-9 or np.any(steps <= 0):
            raise ValueError(f"the phantom renders on standard axial grids only, got affine columns "
                             f"{linear.T.tolist()}")
        nz, ny, nx = geometry.shape
        zs = geometry.index_to_patient(np.stack([np.arange(nz), np.zeros(nz), np.zeros(nz)], axis=1))[:, 2]
        ys = geometry.index_to_patient(np.stack([np.zeros(ny), np.arange(ny), np.zeros(ny)], axis=1))[:, 1]
        xs = geometry.index_to_patient(np.stack([np.zeros(nx), np.zeros(nx), np.arange(nx)], axis=1))[:, 0]
        return cls(zs, ys, xs)

    def box(self, lower_mm: Array, upper_mm: Array, pad: int = 2) -> Box | None:
        """Index slices (z, y, x) of the voxels whose centres fall in the LPS box, grown by ``pad`` voxels; None when
        the box misses the grid."""
        slices = []
        for coords, low, high in ((self.z, lower_mm[2], upper_mm[2]), (self.y, lower_mm[1], upper_mm[1]),
                                  (self.x, lower_mm[0], upper_mm[0])):
            inside = np.nonzero((coords >= low) & (coords <= high))[0]
            if len(inside) == 0:
                return None
            slices.append(slice(max(int(inside[0]) - pad, 0), min(int(inside[-1]) + 1 + pad, len(coords))))
        return slices[0], slices[1], slices[2]

    def mesh(self, box: Box, dtype: type = np.float32) -> tuple[Array, Array, Array]:
        """Broadcastable coordinates of a box: x (1, 1, nx), y (1, ny, 1), z (nz, 1, 1)."""
        return (self.x[box[2]].astype(dtype)[None, None, :], self.y[box[1]].astype(dtype)[None, :, None],
                self.z[box[0]].astype(dtype)[:, None, None])


def occupancy(f: Array) -> Array:
    """Share (0..1, float32) of each voxel inside ``F < 0``, from ``F`` sampled at the voxel centres (any ndim; axes of
    length 1 count as constant)."""
    f = np.asarray(f, dtype=np.float32)
    span = np.full(f.shape, 1e-6, dtype=np.float32)
    for axis in range(f.ndim):
        if f.shape[axis] < 2:
            continue
        # mean of the absolute one-sided differences (robust at the kinks of max/min combinations); one-sided at ends
        diff = np.moveaxis(np.abs(np.diff(f, axis=axis)), axis, 0)
        view = np.moveaxis(span, axis, 0)
        view[:-1] += 0.5 * diff
        view[1:] += 0.5 * diff
        view[0] += 0.5 * diff[0]
        view[-1] += 0.5 * diff[-1]
    share = 0.5 - f / span
    np.clip(share, 0.0, 1.0, out=share)
    return share


def paint(volume: Array, share: Array, hu: float | Array) -> None:
    """Blend ``hu`` into ``volume`` (in place) with ``share``; all broadcast to ``volume``'s shape."""
    volume += share * (hu - volume)


def _into(target: Array, box: Box, values: Array, combine: Callable[[Array, Array], Array]) -> None:
    target[box] = combine(target[box], values)


def _sub(outer: Box, inner: Box) -> Box:
    """``inner`` (grid indices) relative to ``outer``."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for o, i in zip(outer, inner, strict=True))


def _intersect(a: Box, b: Box) -> Box | None:
    result = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b, strict=True))
    return None if any(s.stop <= s.start for s in result) else result


def body_box(anatomy: Anatomy, axes: GridAxes) -> Box:
    """The voxels that may hold the body (and the table top under it)."""
    reach_x = anatomy.body_a * 1.2
    lower = np.array([-reach_x, anatomy.body_y - anatomy.body_b_ant * 1.2, -1e4])
    upper = np.array([reach_x, anatomy.couch_y, 1e4])
    return _required(axes.box(lower, upper), "body")


def cavity_box(anatomy: Anatomy, axes: GridAxes) -> Box:
    """The voxels that may hold the thoracic cavity: the region redrawn per phase."""
    scale = 1.1
    reach_x = anatomy.body_a * scale - anatomy.fat_mm - anatomy.wall_mm
    lower = np.array([-reach_x, anatomy.body_y - anatomy.body_b_ant * scale + anatomy.fat_mm + anatomy.wall_mm, -1e4])
    upper = np.array([reach_x, anatomy.body_y + anatomy.body_b_post * scale - anatomy.fat_mm, 1e4])
    return _required(axes.box(lower, upper), "thoracic cavity")


def _required(box: Box | None, what: str) -> Box:
    if box is None:
        raise ValueError(f"the {what} lies outside the grid")
    return box


def render_static(anatomy: Anatomy, axes: GridAxes) -> Array:
    """HU (z, y, x) float32 of everything that does not move: air, couch, body wall, ribs, sternum, spine, aorta,
    airways, and the cavity filled with mediastinal tissue (the moving organs are painted over it per phase)."""
    hu = anatomy.hu
    volume = np.full((len(axes.z), len(axes.y), len(axes.x)), an.HU_AIR, dtype=np.float32)
    y_all = axes.y.astype(np.float32)[None, :, None]
    paint(volume, occupancy(anatomy.couch_sdf(y_all)), an.HU_COUCH)

    box = body_box(anatomy, axes)
    x, y, z = axes.mesh(box)
    region = volume[box]
    paint(region, occupancy(anatomy.body_sdf(x, y, z)), hu.fat)
    paint(region, occupancy(anatomy.muscle_sdf(x, y, z)), hu.muscle)
    paint(region, occupancy(anatomy.cavity_sdf(x, y, z)), hu.mediastinum)
    rib, cartilage = anatomy.rib_sdf(x, y, z)
    paint(region, occupancy(rib), np.where(cartilage, an.HU_CARTILAGE, hu.rib).astype(np.float32))
    paint(region, occupancy(anatomy.sternum_sdf(x, y, z)), an.HU_STERNUM)
    # spine: posterior arch and canal, then vertebral bodies (cortex, cancellous bone) interrupted by discs
    paint(region, occupancy(anatomy.neural_arch_sdf(x, y)), 0.9 * hu.bone_cortex)
    paint(region, occupancy(anatomy.canal_sdf(x, y)), an.HU_CANAL)
    vertebra = occupancy(anatomy.vertebral_body_sdf(x, y))
    paint(region, vertebra, hu.bone_cortex)
    paint(region, occupancy(anatomy.vertebral_body_sdf(x, y, shrink=2.0)), hu.bone_cancellous)
    paint(region, vertebra * occupancy(anatomy.disc_sdf(z)), an.HU_DISC)
    volume[box] = region
    for capsule in anatomy.aorta:
        _paint_capsule(volume, axes, capsule, 0.0, hu.heart)
    for capsule in anatomy.trachea:
        _paint_capsule(volume, axes, capsule, 0.0, hu.muscle)
    for capsule in anatomy.trachea:
        _paint_capsule(volume, axes, capsule, anatomy.airway_wall_mm, an.HU_AIR)
    return volume


def _paint_capsule(volume: Array, axes: GridAxes, capsule: Capsule, narrow_mm: float, value: float) -> None:
    box = axes.box(*capsule.bounds())
    if box is None:
        return
    x, y, z = axes.mesh(box)
    region = volume[box]
    paint(region, occupancy(capsule.sdf(x, y, z) + narrow_mm), value)
    volume[box] = region


@dataclass(frozen=True, eq=False)
class ThoraxCache:
    """Phase-independent arrays over the cavity box, computed once per phantom (all float32, box-relative).

    ``free``: (z, y, x) ``free_cavity_sdf``. ``mediastinum``, ``apex``, ``diaphragm``, ``parenchyma``, ``abdomen``:
    (1, y, x) maps: mediastinum implicit, lung-top and diaphragm heights (end-exhale z, mm), lung HU before breathing
    and vessels, abdominal organ HU. ``first``, ``second``: the vessel fields resampled in-plane, (field z, y, x).
    """

    box: Box
    free: Array
    mediastinum: Array
    apex: Array
    diaphragm: Array
    parenchyma: Array
    abdomen: Array
    first: Array
    second: Array


def thorax_cache(anatomy: Anatomy, vessels: VesselField, axes: GridAxes) -> ThoraxCache:
    box = cavity_box(anatomy, axes)
    x, y, z = axes.mesh(box)
    # the static organs near the lungs, grown by the margins, their distance clamped at ORGAN_REACH_MM: so each
    # capsule need only be evaluated in its own box (bounds grown by the margin and the reach) and the result is
    # continuous (the partial-volume estimate differentiates it)
    organs = np.full(np.broadcast_shapes(x.shape, y.shape, z.shape), ORGAN_REACH_MM, dtype=np.float32)
    spine = np.minimum(anatomy.vertebral_body_sdf(x, y), anatomy.neural_arch_sdf(x, y)) - an.LUNG_GAP_SPINE_MM
    np.minimum(organs, spine, out=organs)
    for capsules, gap in ((anatomy.aorta, an.LUNG_GAP_AORTA_MM), (anatomy.trachea, an.LUNG_GAP_AIRWAY_MM)):
        for capsule in capsules:
            inner = axes.box(*capsule.bounds(gap + ORGAN_REACH_MM))
            inner = None if inner is None else _intersect(inner, box)
            if inner is None:
                continue
            xs, ys, zs = axes.mesh(inner)
            _into(organs, _sub(box, inner), capsule.sdf(xs, ys, zs) - gap, np.minimum)
    free = np.maximum(anatomy.cavity_sdf(x, y, z), -organs)
    y2, x2 = y[0], x[0]  # (y, 1), (1, x)
    mediastinum = anatomy.mediastinum_sdf(x2, y2)[None]
    apex = anatomy.apex_height(x2, y2)[None]
    diaphragm = anatomy.diaphragm_height(x2, y2)[None]
    hu = anatomy.hu
    cavity_b = anatomy.body_b_ant - anatomy.fat_mm - anatomy.wall_mm
    parenchyma = (hu.lung + hu.lung_gravity * 0.5 * (y2 - anatomy.body_y) / cavity_b + 0.0 * x2)[None]
    liver_share = np.clip(0.5 - (x2 - anatomy.liver_split_x) / 10.0, 0.0, 1.0) + 0.0 * y2
    abdomen = (hu.spleen + liver_share * (hu.liver - hu.spleen))[None]
    first, second = vessels.resample_xy(axes.x[box[2]], axes.y[box[1]])
    return ThoraxCache(box, free.astype(np.float32), mediastinum.astype(np.float32), apex.astype(np.float32),
                       diaphragm.astype(np.float32), parenchyma.astype(np.float32), abdomen.astype(np.float32),
                       first, second)


@dataclass(frozen=True, eq=False)
class PhaseImage:
    """One rendered phase before noise: ``hu`` (z, y, x) float32 and truth masks (z, y, x) bool."""

    hu: Array
    masks: dict[str, Array]


def render_phase(anatomy: Anatomy, tumour: TumourShape, tumour_centre: np.ndarray, tumour_hu: float,
                 tree: tuple[Capsule, ...], vessels: VesselField, static: Array, cache: ThoraxCache, axes: GridAxes,
                 t: float) -> PhaseImage:
    """The phase at ``t`` (cycles, 0 = end-inhale): moving organs painted over the static image, and the masks.

    Masks: ``Lung_R``/``Lung_L`` (patient's right: x < 0 in LPS) are the lungs without the tumour; ``Heart``;
    ``GTV``. They are disjoint.
    """
    motion = anatomy.motion
    box = cache.box
    x, y, _ = axes.mesh(box)
    z_ref = motion.to_reference_z(axes.z[box[0]], t).astype(np.float32)[:, None, None]
    # lungs and abdomen, split by the diaphragm
    below_dome = z_ref - cache.diaphragm  # negative above the diaphragm
    lungs = np.maximum(cache.free, cache.mediastinum)
    np.maximum(lungs, z_ref - cache.apex, out=lungs)
    np.maximum(lungs, -below_dome, out=lungs)
    abdomen = np.maximum(cache.free, below_dome)
    del below_dome
    # heart (and its fat) at this phase
    heart_box = _moved_box(axes, box, *anatomy.heart.bounds(anatomy.heart_fat_mm + 2.0),
                           motion.heart_displacement(t))
    heart = heart_fat = None
    if heart_box is not None:
        hx, hy, hz = axes.mesh(heart_box)
        hz_ref = motion.to_reference_z(axes.z[heart_box[0]], t).astype(np.float32)[:, None, None]
        heart = anatomy.heart_sdf(hx, hy, hz, hz_ref, t)
        heart_fat = anatomy.heart_sdf(hx, hy, hz, hz_ref, t, anatomy.heart_fat_mm)
        _into(lungs, _sub(box, heart_box), -heart_fat, np.maximum)
    # tumour
    centre = tumour_centre + motion.tumour_displacement(t)
    tumour_box = axes.box(centre - tumour.bound_mm, centre + tumour.bound_mm)
    tumour_f = None
    if tumour_box is not None:
        tx, ty, tz = axes.mesh(tumour_box, np.float64)
        tumour_f = tumour.sdf(tx - centre[0], ty - centre[1], tz - centre[2]).astype(np.float32)

    image = static[box].copy()
    paint(image, occupancy(abdomen), cache.abdomen)
    del abdomen
    if anatomy.gastric_bubble is not None:
        shift = (0.0, 0.0, motion.diaphragm_shift(t))
        bubble_box = _moved_box(axes, box, *anatomy.gastric_bubble.bounds(2.0), np.array(shift))
        if bubble_box is not None:
            bx, by, bz = axes.mesh(bubble_box)
            local = image[_sub(box, bubble_box)]
            paint(local, occupancy(anatomy.gastric_bubble.sdf(bx, by, bz, shift)), an.HU_AIR)
            image[_sub(box, bubble_box)] = local
    lung_hu = cache.parenchyma + np.float32(motion.lung_density_shift_hu(t))
    vessel_share = occupancy(_vessel_sdf(vessels, tree, cache, axes, motion, x, y, z_ref, t))
    lung_hu = lung_hu + vessel_share * (np.float32(anatomy.hu.heart) - lung_hu)
    del vessel_share
    paint(image, occupancy(lungs), lung_hu)
    del lung_hu
    masks = {"GTV": np.zeros(image.shape, dtype=bool), "Heart": np.zeros(image.shape, dtype=bool)}
    if heart_box is not None:
        local = image[_sub(box, heart_box)]
        paint(local, occupancy(heart_fat), anatomy.hu.heart_fat)
        paint(local, occupancy(heart), anatomy.hu.heart)
        image[_sub(box, heart_box)] = local
        masks["Heart"][_sub(box, heart_box)] = heart < 0
    if tumour_box is not None:
        local_box = _sub(box, tumour_box)
        local = image[local_box]
        paint(local, occupancy(tumour_f), tumour_hu)
        image[local_box] = local
        masks["GTV"][local_box] = tumour_f < 0
    inside = lungs < 0
    inside &= ~masks["GTV"]
    masks["Lung_R"] = inside & (x < 0)
    masks["Lung_L"] = inside & (x > 0)
    return PhaseImage(image, masks)


def _moved_box(axes: GridAxes, outer: Box, lower: np.ndarray, upper: np.ndarray, shift: np.ndarray) -> Box | None:
    box = axes.box(lower + shift, upper + shift)
    return None if box is None else _intersect(box, outer)


def _vessel_sdf(vessels: VesselField, tree: tuple[Capsule, ...], cache: ThoraxCache, axes: GridAxes,
                motion: MotionModel, x: Array, y: Array, z_ref: Array, t: float) -> Array:
    """Implicit function of all lung vessels over the cavity box at phase ``t`` (the fine network and the tree, both
    seen through the thoracic warp)."""
    below, above, weight = vessels.z_weights(z_ref[:, 0, 0])
    weight = weight[:, None, None]
    first = cache.first[below]
    first += weight * (cache.first[above] - first)
    second = cache.second[below]
    second += weight * (cache.second[above] - second)
    f = vessels.network_sdf(first, second, x, y, z_ref)
    del first, second
    box = cache.box
    for capsule in tree:
        lower, upper = capsule.bounds(4.0)
        z_low, z_high = motion.from_reference_z(np.array([lower[2], upper[2]]), t)
        inner = axes.box(np.array([lower[0], lower[1], z_low]), np.array([upper[0], upper[1], z_high]))
        inner = None if inner is None else _intersect(inner, box)
        if inner is None:
            continue
        local = _sub(box, inner)
        xs, ys = x[:, :, local[2]], y[:, local[1], :]
        _into(f, local, capsule.sdf(xs, ys, z_ref[local[0]]), np.minimum)
    return f


def add_noise(volume: Array, rng: np.random.Generator, sd_hu: float, pixel_mm: float) -> Array:
    """``volume`` plus Gaussian noise of ``sd_hu`` with an in-plane grain of ``NOISE_GRAIN_MM``, rounded and clipped to
    the CT range, as int16 HU."""
    noise = rng.standard_normal(volume.shape, dtype=np.float32)
    sigma = NOISE_GRAIN_MM / pixel_mm
    if sigma >= 0.3:
        ndimage.gaussian_filter(noise, sigma, axes=(1, 2), output=noise, mode="nearest")
        delta = np.zeros((17, 17), dtype=np.float64)
        delta[8, 8] = 1.0
        noise *= np.float32(1.0 / np.sqrt((ndimage.gaussian_filter(delta, sigma) ** 2).sum()))
    noise *= np.float32(sd_hu)
    noise += volume
    np.rint(noise, out=noise)
    np.clip(noise, HU_MIN, HU_MAX, out=noise)
    return noise.astype(np.int16)
