"""The phantom's anatomy: parameters drawn from the seed, and each structure as an implicit function.

Every structure is an implicit function ``F(x, y, z)`` of LPS millimetres (x towards the patient's left, y towards the
back, z towards the head), negative inside, positive outside, and close to a signed distance in mm near its surface.
The functions broadcast: the renderer passes the grid axes as ``(1, 1, nx)``, ``(1, ny, 1)``, ``(nz, 1, 1)`` float32
arrays, the tumour placement passes ``(n,)`` float64 point lists. A voxel belongs to a structure when ``F`` at its
centre is negative; the image blends the structure in with the fraction of the voxel it covers (see ``render``).

Static parts (body wall, spine, ribs, sternum, aorta, airways, couch) do not move. The lungs' apices and domes, the
abdomen and the vessels are defined at end-exhale and seen through the thoracic warp of ``breathing.MotionModel``
(they take ``z_ref``, the end-exhale z). The heart and the tumour move rigidly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicomrt.phantom.breathing import MotionModel

Array = np.ndarray

# Hounsfield units that are not drawn from the seed.
HU_AIR = -1000.0
HU_DISC = 90.0
HU_CANAL = 25.0
HU_BLOOD = 40.0
HU_CARTILAGE = 150.0
HU_STERNUM = 450.0
HU_COUCH = 150.0
# Rib angles, measured from the patient's back around the body axis (0 = posterior midline, pi = anterior midline).
RIB_START_RAD = 0.12 * np.pi
RIB_CARTILAGE_RAD = 0.72 * np.pi
RIB_END_RAD = 0.9 * np.pi
N_RIBS = 10
# Margins (mm) by which the lungs keep away from the mediastinal organs.
LUNG_GAP_SPINE_MM = 4.0
LUNG_GAP_AORTA_MM = 3.0
LUNG_GAP_AIRWAY_MM = 2.0
# Margin (mm) between the heart and the inside of the chest wall.
HEART_WALL_GAP_MM = 3.0


@dataclass(frozen=True)
class HUTable:
    """Hounsfield units of the tissues drawn from the seed."""

    fat: float
    muscle: float
    mediastinum: float
    lung: float
    lung_gravity: float  # extra HU of the most posterior (dependent) lung over the most anterior
    bone_cortex: float
    bone_cancellous: float
    rib: float
    heart: float
    heart_fat: float
    liver: float
    spleen: float
    noise_sd: float  # standard deviation of the image noise


@dataclass(frozen=True)
class Capsule:
    """A segment from ``a`` to ``b`` (LPS mm) swept by a ball of ``radius_mm``."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius_mm: float

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Exact signed distance (mm) to the capsule; broadcasts."""
        ax, ay, az = self.a
        ux, uy, uz = (self.b[0] - ax, self.b[1] - ay, self.b[2] - az)
        length2 = ux * ux + uy * uy + uz * uz
        px, py, pz = x - ax, y - ay, z - az
        t = np.clip((px * ux + py * uy + pz * uz) / length2, 0.0, 1.0)
        return np.sqrt((px - t * ux) ** 2 + (py - t * uy) ** 2 + (pz - t * uz) ** 2) - self.radius_mm

    def bounds(self, pad_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) LPS mm corners of a box holding the capsule dilated by ``pad_mm``."""
        ends = np.array([self.a, self.b])
        reach = self.radius_mm + pad_mm
        return ends.min(axis=0) - reach, ends.max(axis=0) + reach


def union_sdf(capsules: tuple[Capsule, ...], x: Array, y: Array, z: Array) -> Array:
    """Signed distance to the union of ``capsules`` (exact outside, a lower bound inside)."""
    result = capsules[0].sdf(x, y, z)
    for capsule in capsules[1:]:
        result = np.minimum(result, capsule.sdf(x, y, z))
    return result


@dataclass(frozen=True)
class Ellipsoid:
    """A rotated ellipsoid: ``centre`` (LPS mm), ``axes`` (3, 3) unit row vectors, ``radii_mm`` along them."""

    centre: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]
    radii_mm: tuple[float, float, float]

    def sdf(self, x: Array, y: Array, z: Array, shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Array:
        """Radial distance (mm) to the surface, the ellipsoid translated by ``shift`` (LPS mm); broadcasts.

        Measured along the ray from the centre: exact on the principal axes, close to the true distance elsewhere
        for the mild eccentricities used here.
        """
        dx = x - (self.centre[0] + shift[0])
        dy = y - (self.centre[1] + shift[1])
        dz = z - (self.centre[2] + shift[2])
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        rho2 = 0.0
        for (ex, ey, ez), radius in zip(self.axes, self.radii_mm, strict=True):
            rho2 = rho2 + ((dx * ex + dy * ey + dz * ez) / radius) ** 2
        rho = np.sqrt(rho2)
        return np.where(rho > 1e-6, r - r / np.maximum(rho, 1e-6), -min(self.radii_mm))

    def bounds(self, pad_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) LPS mm corners of the axis-aligned box holding the ellipsoid dilated by ``pad_mm``."""
        axes = np.array(self.axes) * np.array(self.radii_mm)[:, None]
        half = np.sqrt((axes**2).sum(axis=0)) + pad_mm
        centre = np.array(self.centre)
        return centre - half, centre + half


def _rotation_frame(azimuth_rad: float, elevation_rad: float) -> tuple[tuple[float, float, float], ...]:
    """Orthonormal rows: first along (cos az cos el, -sin az cos el, -sin el), i.e. towards the patient's left,
    front and feet for positive angles."""
    u1 = np.array([np.cos(azimuth_rad) * np.cos(elevation_rad), -np.sin(azimuth_rad) * np.cos(elevation_rad),
                   -np.sin(elevation_rad)])
    u2 = np.cross([0.0, 0.0, 1.0], u1)
    u2 /= np.linalg.norm(u2)
    u3 = np.cross(u1, u2)
    return tuple(tuple(float(v) for v in u) for u in (u1, u2, u3))


@dataclass(frozen=True)
class Anatomy:
    """The end-exhale anatomy of one phantom (all lengths LPS mm, angles radians).

    Body cross-section: an ellipse with semi-axes ``body_a`` (left-right) and ``body_b_ant`` / ``body_b_post``
    (front / back half) around (0, ``body_y``), scaled along z by ``1 + gradient * z / 100``, its radius modulated
    by ``wobble`` (cos 2t, sin 2t, cos 3t, sin 3t coefficients). Layers inwards: fat (``fat_mm``), muscle and ribs
    (``wall_mm``, ``wall_post_mm`` at the back), then the thoracic cavity.
    """

    body_a: float
    body_b_ant: float
    body_b_post: float
    body_y: float
    gradient_a: float
    gradient_b: float
    wobble: tuple[float, float, float, float]
    fat_mm: float
    wall_mm: float
    wall_post_mm: float
    # spine: vertebral body ellipse, spinal canal, discs
    vb_radii: tuple[float, float]
    vb_y: float
    canal_radius: float
    disc_period: float
    disc_height: float
    disc_phase: float
    # ribs and sternum
    rib_top_z: float
    rib_period: float
    rib_descent: float
    rib_half_height: float
    rib_half_thickness: float
    sternum_z: tuple[float, float]
    # mediastinum
    trachea: tuple[Capsule, ...]  # outer wall surfaces; the lumen is the same capsules narrowed by airway_wall_mm
    airway_wall_mm: float
    aorta: tuple[Capsule, ...]
    mediastinum_half_width: tuple[float, float, float, float]  # w0, w1, y_mid, sigma: w0 + w1 exp(-((y-y_mid)/s)^2)
    heart: Ellipsoid
    heart_fat_mm: float
    # lungs (index 0: right, x < 0; index 1: left, x > 0)
    apex: tuple[tuple[float, float, float, float, float], ...]  # per side: z, x, y, curvature radius x, y
    dome: tuple[tuple[float, float, float, float, float], ...]  # per side: z, x, y, curvature radius x, y
    hila: tuple[tuple[float, float, float], ...]  # per side, end-exhale LPS mm
    liver_split_x: float
    gastric_bubble: Ellipsoid | None  # end-exhale, moves with the diaphragm
    couch_y: float
    hu: HUTable
    motion: MotionModel

    # ----- body wall -------------------------------------------------------------------------------------------------
    def _semi_axes(self, z: Array, shrink: float, shrink_post: float) -> tuple[Array, Array, Array]:
        scale_a = 1.0 + self.gradient_a * z / 100.0
        scale_b = 1.0 + self.gradient_b * z / 100.0
        return (self.body_a * scale_a - shrink, self.body_b_ant * scale_b - shrink,
                self.body_b_post * scale_b - shrink_post)

    def _radial_sdf(self, x: Array, y: Array, z: Array, shrink: float, shrink_post: float) -> Array:
        """Distance (mm, along the ray from the body axis) to the body ellipse shrunk by ``shrink`` (sides, front) and
        ``shrink_post`` (back)."""
        dy = y - self.body_y
        r = np.sqrt(x * x + dy * dy)
        safe = np.maximum(r, 1e-6)
        cos_t, sin_t = np.where(r > 1e-6, x / safe, 1.0), dy / safe
        c2, s2 = cos_t * cos_t, sin_t * sin_t
        w2c, w2s, w3c, w3s = self.wobble
        wobble = (1.0 + w2c * (c2 - s2) + w2s * 2.0 * cos_t * sin_t + w3c * cos_t * (4.0 * c2 - 3.0)
                  + w3s * sin_t * (3.0 - 4.0 * s2))
        a, b_ant, b_post = self._semi_axes(z, shrink, shrink_post)
        b = np.where(dy > 0, b_post, b_ant)
        return r - wobble / np.sqrt(c2 / (a * a) + s2 / (b * b))

    def body_sdf(self, x: Array, y: Array, z: Array) -> Array:
        """The skin surface; the back is flattened where it lies on the table top."""
        return np.maximum(self._radial_sdf(x, y, z, 0.0, 0.0), y - self.couch_y)

    def muscle_sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Inside the subcutaneous fat: chest wall muscles (and everything they enclose); the fat is compressed to
        half its thickness where the back lies on the table."""
        flat = y - (self.couch_y - 0.5 * self.fat_mm)
        return np.maximum(self._radial_sdf(x, y, z, self.fat_mm, self.fat_mm), flat)

    def cavity_sdf(self, x: Array, y: Array, z: Array) -> Array:
        """The thoracic (and, below the diaphragm, abdominal) cavity inside the ribs."""
        return self._radial_sdf(x, y, z, self.fat_mm + self.wall_mm, self.fat_mm + self.wall_post_mm)

    def couch_sdf(self, y: Array) -> Array:
        """The table top: a 12 mm slab under the patient's back, across the whole field of view."""
        return np.abs(y - (self.couch_y + 6.0)) - 6.0

    # ----- skeleton --------------------------------------------------------------------------------------------------
    def vertebral_body_sdf(self, x: Array, y: Array, shrink: float = 0.0) -> Array:
        """Vertebral bodies (and discs): an elliptic cylinder along z, narrowed by ``shrink`` mm."""
        rx, ry = self.vb_radii
        return _ellipse_sdf(x, y - self.vb_y, rx - shrink, ry - shrink)

    def canal_centre_y(self) -> float:
        return self.vb_y + self.vb_radii[1] + self.canal_radius + 1.0

    def neural_arch_sdf(self, x: Array, y: Array) -> Array:
        """The bony ring around the spinal canal and the spinous process behind it, which ends 6 mm inside the back
        muscles."""
        yc = self.canal_centre_y()
        ring = np.sqrt(x * x + (y - yc) ** 2) - (self.canal_radius + 5.0)
        start = yc + self.canal_radius + 3.0
        length = float(np.clip(self.couch_y - 0.5 * self.fat_mm - 6.0 - start, 6.0, 30.0))
        spinous = _ellipse_sdf(x, y - (start + length / 2), 5.0, length / 2)
        return np.minimum(ring, spinous)

    def canal_sdf(self, x: Array, y: Array) -> Array:
        return np.sqrt(x * x + (y - self.canal_centre_y()) ** 2) - self.canal_radius

    def disc_sdf(self, z: Array) -> Array:
        """Intervertebral discs: slabs of ``disc_height`` every ``disc_period`` mm along z."""
        wrapped = np.mod(z - self.disc_phase + self.disc_period / 2, self.disc_period) - self.disc_period / 2
        return np.abs(wrapped) - self.disc_height / 2

    def rib_sdf(self, x: Array, y: Array, z: Array) -> tuple[Array, Array]:
        """Ribs and their costal cartilages: ``(F, is_cartilage)``.

        Rib ``i`` runs just outside the cavity at the height ``rib_top_z - i * rib_period - rib_descent * g(angle)``
        (ribs descend from back to front); its cross-section is an ellipse of ``rib_half_height`` by
        ``rib_half_thickness``. ``F`` is in units of the smaller half-axis (mm-like).
        """
        dy = y - self.body_y
        r = np.sqrt(x * x + dy * dy)
        angle = np.arccos(np.clip(dy / np.maximum(r, 1e-6), -1.0, 1.0))  # 0 at the back, pi at the front
        progress = np.clip((angle - RIB_START_RAD) / (np.pi - RIB_START_RAD), 0.0, 1.0) ** 1.3
        level = self.rib_top_z - self.rib_descent * progress  # height of rib 0 at this angle
        index = np.clip(np.round((level - z) / self.rib_period), 0, N_RIBS - 1)
        dz = z - (level - index * self.rib_period)
        dr = self.cavity_sdf(x, y, z) - (self.rib_half_thickness + 1.0)
        half_h, half_t = self.rib_half_height, self.rib_half_thickness
        f = (np.sqrt((dz / half_h) ** 2 + (dr / half_t) ** 2) - 1.0) * min(half_h, half_t)
        outside = (angle < RIB_START_RAD) | (angle > RIB_END_RAD)
        return np.where(outside, np.float32(50.0), f), angle > RIB_CARTILAGE_RAD

    def sternum_sdf(self, x: Array, y: Array, z: Array) -> Array:
        """A plate in front of the cavity on the midline."""
        _, b_ant, _ = self._semi_axes(z, self.fat_mm + self.wall_mm, 0.0)
        y_mid = self.body_y - b_ant - 7.0
        top, bottom = self.sternum_z
        return np.maximum(np.maximum(np.abs(x) - 14.0, np.abs(y - y_mid) - 5.0), np.maximum(z - top, bottom - z))

    # ----- mediastinum -----------------------------------------------------------------------------------------------
    def airway_sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Outer surface of the trachea and main bronchi (wall included)."""
        return union_sdf(self.trachea, x, y, z)

    def aorta_sdf(self, x: Array, y: Array, z: Array) -> Array:
        return union_sdf(self.aorta, x, y, z)

    def free_cavity_sdf(self, x: Array, y: Array, z: Array) -> Array:
        """The cavity less the static mediastinal organs (with the margins by which the lungs keep off them)."""
        organs = np.minimum(self.vertebral_body_sdf(x, y) - LUNG_GAP_SPINE_MM,
                            self.neural_arch_sdf(x, y) - LUNG_GAP_SPINE_MM)
        organs = np.minimum(organs, self.aorta_sdf(x, y, z) - LUNG_GAP_AORTA_MM)
        organs = np.minimum(organs, self.airway_sdf(x, y, z) - LUNG_GAP_AIRWAY_MM)
        return np.maximum(self.cavity_sdf(x, y, z), -organs)

    def mediastinum_sdf(self, x: Array, y: Array) -> Array:
        """Negative lateral of the mediastinal band (where the lungs may be)."""
        w0, w1, y_mid, sigma = self.mediastinum_half_width
        return w0 + w1 * np.exp(-(((y - y_mid) / sigma) ** 2)) - np.abs(x)

    # ----- moving parts ----------------------------------------------------------------------------------------------
    def apex_height(self, x: Array, y: Array) -> Array:
        """End-exhale z (mm) of the lung tops: a paraboloid per side."""
        return _paired_paraboloid(self.apex, x, y, np.maximum)

    def diaphragm_height(self, x: Array, y: Array) -> Array:
        """End-exhale z (mm) of the diaphragm: the upper envelope of the two domes."""
        return _paired_paraboloid(self.dome, x, y, np.maximum)

    def heart_sdf(self, x: Array, y: Array, z: Array, z_ref: Array, t: float, dilate_mm: float = 0.0) -> Array:
        """The heart at phase ``t`` (dilated by ``dilate_mm``): the moved ellipsoid, inside the chest wall, resting on
        the diaphragm (``z_ref``: end-exhale z of each point, from the thoracic warp)."""
        shift = tuple(float(v) for v in self.motion.heart_displacement(t))
        f = self.heart.sdf(x, y, z, shift) - dilate_mm
        f = np.maximum(f, self.cavity_sdf(x, y, z) + HEART_WALL_GAP_MM)
        return np.maximum(f, self.diaphragm_height(x, y) - z_ref)

    def lungs_sdf(self, x: Array, y: Array, z: Array, z_ref: Array, t: float,
                  free_cavity: Array | None = None) -> Array:
        """Both lungs at phase ``t`` (tumour included; see ``render`` for the masks). ``free_cavity``: the
        precomputed ``free_cavity_sdf`` on the same points, if at hand."""
        free = self.free_cavity_sdf(x, y, z) if free_cavity is None else free_cavity
        f = np.maximum(free, self.mediastinum_sdf(x, y))
        f = np.maximum(f, z_ref - self.apex_height(x, y))
        f = np.maximum(f, self.diaphragm_height(x, y) - z_ref)
        return np.maximum(f, -self.heart_sdf(x, y, z, z_ref, t, self.heart_fat_mm))


def _ellipse_sdf(dx: Array, dy: Array, a: float, b: float) -> Array:
    """Radial distance (mm) to an axis-aligned ellipse centred at the origin."""
    r = np.sqrt(dx * dx + dy * dy)
    rho = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    return np.where(rho > 1e-6, r - r / np.maximum(rho, 1e-6), -min(a, b))


def _paired_paraboloid(params: tuple[tuple[float, float, float, float, float], ...], x: Array, y: Array,
                       combine: np.ufunc) -> Array:
    heights = [top - ((x - cx) ** 2 / (2 * rx) + (y - cy) ** 2 / (2 * ry)) for top, cx, cy, rx, ry in params]
    return combine(heights[0], heights[1])


def draw_anatomy(rng: np.random.Generator, amplitude_si_mm: float) -> Anatomy:
    """A plausible adult thorax drawn from ``rng`` (the tumour is drawn separately, see ``tumour``)."""
    u = rng.uniform
    body_a, body_b_ant = u(145.0, 165.0), u(105.0, 125.0)
    body_b_post, body_y = body_b_ant * u(0.85, 0.95), u(-6.0, 4.0)
    fat_mm, wall_mm, wall_post_mm = u(6.0, 18.0), u(16.0, 24.0), u(40.0, 55.0)
    wobble = (u(-0.02, 0.02), u(-0.01, 0.01), u(-0.02, 0.02), u(-0.01, 0.01))
    gradient_a, gradient_b = u(-0.06, -0.01), u(-0.04, 0.01)  # the thorax widens towards the feet
    couch_y = body_y + body_b_post * u(0.9, 0.96)  # the back lies flattened on the table top
    cavity_b_ant = body_b_ant - fat_mm - wall_mm
    cavity_b_post = body_b_post - fat_mm - wall_post_mm

    vb_radii = (u(17.0, 22.0), u(14.0, 18.0))
    vb_y = body_y + cavity_b_post - 0.3 * vb_radii[1]
    canal_radius = u(7.0, 9.0)

    # airways: trachea down to the carina, then the two main bronchi
    airway_wall_mm = 2.0
    r_tr = u(8.0, 10.0)
    x_tr, y_tr = u(-3.0, 3.0), vb_y - vb_radii[1] - r_tr - u(6.0, 10.0)
    z_carina = u(10.0, 25.0)
    carina = (x_tr, y_tr, z_carina)
    trachea = (Capsule((x_tr, y_tr, 400.0), carina, r_tr + airway_wall_mm),
               Capsule(carina, (-u(35.0, 45.0), y_tr + 8.0, z_carina - u(20.0, 30.0)), 0.7 * r_tr + airway_wall_mm),
               Capsule(carina, (u(35.0, 45.0), y_tr + 8.0, z_carina - u(20.0, 30.0)), 0.7 * r_tr + airway_wall_mm))

    # lungs: apices, diaphragm domes (right higher), mediastinum
    z_dome_r = u(-85.0, -70.0)
    z_dome_l = z_dome_r - u(8.0, 15.0)
    y_dome = body_y - u(25.0, 40.0)  # dome tops in front: the posterior recesses are the deepest
    dome = ((z_dome_r, -u(55.0, 75.0), y_dome, u(110.0, 150.0), u(90.0, 130.0)),
            (z_dome_l, u(55.0, 75.0), y_dome, u(110.0, 150.0), u(90.0, 130.0)))
    z_apex_r = u(78.0, 88.0)
    apex = ((z_apex_r, -u(45.0, 60.0), body_y + u(0.0, 25.0), u(40.0, 60.0), u(50.0, 80.0)),
            (z_apex_r + u(-5.0, 2.0), u(45.0, 60.0), body_y + u(0.0, 25.0), u(40.0, 60.0), u(50.0, 80.0)))
    mediastinum = (u(6.0, 10.0), u(15.0, 25.0), y_tr, u(25.0, 35.0))

    # aorta: ascending, arch passing left of the trachea, descending left of the spine
    r_ao = u(11.0, 14.0)
    z_arch = z_carina + u(15.0, 30.0)
    x_desc, y_desc = vb_radii[0] + r_ao + u(2.0, 5.0), vb_y - 0.2 * vb_radii[1]
    x_asc, y_asc = u(-15.0, -5.0), body_y - cavity_b_ant * u(0.35, 0.5)
    arch_mid = (x_tr + r_tr + r_ao + u(4.0, 8.0), y_tr - u(5.0, 12.0), z_arch + u(5.0, 15.0))
    aorta = (Capsule((x_asc, y_asc + 10.0, z_dome_l + 60.0), (x_asc, y_asc, z_arch - 5.0), r_ao),
             Capsule((x_asc, y_asc, z_arch - 5.0), arch_mid, r_ao),
             Capsule(arch_mid, (x_desc, y_desc, z_arch), r_ao),
             Capsule((x_desc, y_desc, z_arch), (x_desc, y_desc, -400.0), r_ao))

    # heart: long axis towards the patient's left, front and feet, resting on the left dome
    frame = _rotation_frame(np.radians(u(30.0, 50.0)), np.radians(u(15.0, 30.0)))
    radii = (u(55.0, 65.0), u(42.0, 50.0), u(40.0, 48.0))
    x_h, y_h = u(18.0, 32.0), body_y - cavity_b_ant * u(0.3, 0.45)
    z_extent = float(np.sqrt(sum((row[2] * r) ** 2 for row, r in zip(frame, radii, strict=True))))
    floor = float(_paired_paraboloid(dome, np.array(x_h), np.array(y_h), np.maximum))
    heart = Ellipsoid((x_h, y_h, floor + z_extent * u(0.75, 0.9)), frame, radii)

    # gastric air under the left dome (most, not all, patients)
    bubble = None
    if u() < 0.7:
        x_g, y_g = u(45.0, 70.0), body_y - u(0.0, 20.0)
        radii_g = (u(12.0, 20.0), u(10.0, 16.0), u(6.0, 10.0))
        z_g = float(_paired_paraboloid(dome, np.array(x_g), np.array(y_g), np.maximum)) - radii_g[2] - u(4.0, 8.0)
        bubble = Ellipsoid((x_g, y_g, z_g), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), radii_g)

    hila = ((-(mediastinum[0] + mediastinum[1] + 8.0), y_tr + u(0.0, 15.0), z_carina - u(10.0, 25.0)),
            (mediastinum[0] + mediastinum[1] + 8.0, y_tr + u(0.0, 15.0), z_carina - u(10.0, 25.0)))

    hu = HUTable(fat=u(-110.0, -85.0), muscle=u(35.0, 55.0), mediastinum=u(-40.0, 10.0), lung=u(-870.0, -830.0),
                 lung_gravity=u(20.0, 50.0), bone_cortex=u(650.0, 750.0), bone_cancellous=u(400.0, 480.0),
                 rib=u(650.0, 750.0), heart=u(35.0, 50.0), heart_fat=u(-100.0, -80.0), liver=u(55.0, 70.0),
                 spleen=u(35.0, 50.0), noise_sd=u(15.0, 25.0))

    diaphragm = amplitude_si_mm * u(1.15, 1.35)
    motion = MotionModel(tumour_mm=(0.0, 0.0, 0.0), tumour_lag_cycles=(0.0, 0.0), lr_sign=1.0,
                         diaphragm_mm=diaphragm, heart_mm=(0.25 * diaphragm, 0.1 * diaphragm),
                         lung_top_mm=max(z_apex_r + 40.0, 140.0), lung_pivot_mm=z_dome_r)
    sternum_top = u(60.0, 75.0)
    return Anatomy(
        body_a=body_a, body_b_ant=body_b_ant, body_b_post=body_b_post, body_y=body_y,
        gradient_a=gradient_a, gradient_b=gradient_b, wobble=wobble, fat_mm=fat_mm, wall_mm=wall_mm,
        wall_post_mm=wall_post_mm, vb_radii=vb_radii, vb_y=vb_y, canal_radius=canal_radius,
        disc_period=u(26.0, 30.0), disc_height=u(5.0, 7.0), disc_phase=u(0.0, 30.0),
        rib_top_z=u(75.0, 90.0), rib_period=u(24.0, 28.0), rib_descent=u(45.0, 60.0),
        rib_half_height=u(5.0, 6.5), rib_half_thickness=u(3.5, 4.5),
        sternum_z=(sternum_top, sternum_top - u(150.0, 170.0)),
        trachea=trachea, airway_wall_mm=airway_wall_mm, aorta=aorta, mediastinum_half_width=mediastinum,
        heart=heart, heart_fat_mm=u(2.5, 5.0), apex=apex, dome=dome, hila=hila, liver_split_x=u(20.0, 45.0),
        gastric_bubble=bubble, couch_y=couch_y, hu=hu, motion=motion)
