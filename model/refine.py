"""Refinement of phase-wise masks: phase-coherent temporal filtering and spatial connectivity. Pure numpy/scipy.

Input per structure: over the respiratory phases, in phase order, on one grid (``Geometry``), a (phase, z, y, x)
probability (float in [0, 1]), *evidence* (uint8, ``to_evidence``: the probability relative to the structure's
threshold, what the pipeline keeps: one byte a voxel, like a mask, with the sub-threshold response kept) or mask
(bool). Steps, in order (``refine_structure``):

1. Threshold: evidence ≥ ``EVIDENCE_THRESHOLD`` (probability ≥ ``RefineSettings.threshold``).
2. Specks: 3D components (26-connected) smaller than ``ConnectivitySettings.min_volume_ml`` are dropped.
3. Phase-coherent temporal filter (``TemporalSettings``, in ``dicomrt.structures``: a job option). Every 3D component
   of every phase is a node. Two nodes in phases p and q at cyclic phase distance d (1 ≤ d ≤ 1 + ``max_gap``) are
   linked when they overlap or come within ``d · motion_tolerance_mm`` of each other (surface-to-surface, Euclidean
   in mm): the target may move by up to the tolerance per phase step. A node's *support* is, over the linked group it
   belongs to, the number of phases in the longest cyclically contiguous run of phases that contain the group, where
   runs may bridge up to ``max_gap`` phases without it (bridged phases are not counted). A node is kept when its
   support is at least ``min_phases`` (capped at the number of phases). Respiration is periodic and continuous, so
   anatomy forms such runs; sporadic false positives (present in 1–2 phases, or jumping around) do not.
4. Targets only (``RefineSettings.target``: structures with an ITV): each kept group's mask in a phase is split where
   it exceeds what the other phases support (``_trim_unsupported``): every other phase's mask of the group is moved
   rigidly onto the phase (centroid displacement, to the nearest voxel) and grown by one voxel; connected parts of
   the phase's mask that fewer than ``min_phases`` phases (itself included) hold are removed. This is the rule for a
   transient next to the lesion: linking by distance (step 3) lets a blob a few mm from the tumour join the tumour's
   group, so the group's support cannot judge it; the blob's own support, judged on motion-compensated shapes, can.
   A one-phase bulge is removed the same way. Why targets only: a lesion moves nearly rigidly, while organs deform
   with breathing (the lungs grow by the diaphragm's excursion), so an organ's excess over the other phases is
   expected anatomy.
5. Refilling (``fill_gaps``): a phase that a kept group bridges (missing in at most ``max_gap`` phases between two
   seen ones) is refilled at the position of the motion model: per axis a periodic (Fourier) fit of the group's
   centroid over the seen phases (``periodic_fit``; linear between the neighbours when fewer than 4 are seen or the
   series is not cyclic), not the midpoint, because at a turning point of the breathing the object lies beyond both
   neighbours. The shape is the neighbours' signed-distance interpolation moved there (``place_shape``). A position
   beyond the seen ones by more than ``EXTREME_MM`` on some axis is a motion extreme: the ITV's excursion rests on
   that phase alone, so the shape is swept outward on those axes over the model's own leave-one-out error (the
   union of the shape at the fitted position and pushed out by the error): a refill a little too large costs a
   little margin, one that falls short shrinks the ITV. Where the model's own sub-threshold response (evidence ≥
   ``HYSTERESIS_LEVEL``: probability ≥ half the threshold) within ``motion_tolerance_mm`` of the placed shape has
   ``EVIDENCE_VOLUME`` times the neighbours' volume and agrees with the placed shape (Dice ≥
   ``EVIDENCE_AGREEMENT``), that response is used instead (hysteresis: a real dropout often leaves a weak response;
   one scattered over the margin is noise, not the object). Each refill is recorded (``Refill``: its source, and
   whether its centroid lies at a motion extreme).
6. Holes: ``binary_fill_holes`` in 3D (``ConnectivitySettings.fill_holes``).
7. Component count (``max_components``; None: all). On a 4DCT the objects are the linked groups of step 3: only the
   ``max_components`` supported groups of the largest volume summed over the phases are kept, with all their parts
   in every phase (a tumour that an artefact splits in one phase keeps both parts, and a false positive cannot stand
   in for the target in the one phase where it happens to be larger). Without the temporal filter (a 3D CT), the
   ``max_components`` largest 3D components are kept.

Everything is explicit in frozen settings; ``RefinementReport`` counts what each step did per phase.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage
from scipy.cluster.hierarchy import DisjointSet

from dicomrt.geometry import Geometry
from dicomrt.structures import StructureSpec, TemporalSettings

CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)
# Evidence: the probability p relative to the structure's threshold t, floor(128 · p / t) saturating at 255, with
# p ≥ t ⇔ evidence ≥ 128 exactly; the sub-threshold response keeps 128 grades.
EVIDENCE_THRESHOLD = 128
HYSTERESIS_LEVEL = 64  # p ≥ t / 2: the weak response a refill uses first
# The weak response is used when its volume is within this range of the expected one and it agrees with the placed
# shape (Dice at least EVIDENCE_AGREEMENT: a response scattered over the margin, noise, is not an object)
EVIDENCE_VOLUME = (0.5, 1.5)
EVIDENCE_AGREEMENT = 0.5
EXTREME_MM = 1.0  # a refill beyond the seen positions by more than this, on some axis, is at a motion extreme
MAX_HARMONICS = 3  # of the periodic motion model
_EVIDENCE_BLOCK = 1 << 20  # voxels per block of ``to_evidence`` (and labels per block of ``_components``)
TRIM_ROUNDS = 4  # at most, of the target trim (``_trim_unsupported``)


def to_evidence(probability: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 evidence (module constants) of a float ``probability`` for ``threshold`` in (0, 1].

    In blocks of 2^20 voxels (the temporaries stay in cache: a full-size phase takes ~0.05 s, where the probability's
    comparison with the threshold alone takes ~0.01 s)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    probability = np.ascontiguousarray(probability, dtype=np.float32)
    evidence = np.empty(probability.shape, dtype=np.uint8)
    values, out = probability.reshape(-1), evidence.reshape(-1)
    scale = np.float32(EVIDENCE_THRESHOLD / threshold)
    for start in range(0, values.size, _EVIDENCE_BLOCK):
        block = values[start:start + _EVIDENCE_BLOCK]
        grades = np.multiply(block, scale, dtype=np.float32)
        np.clip(grades, 0, 255, out=grades)
        graded = grades.astype(np.uint8)  # truncation: the floor of the non-negative grades
        above = block >= threshold  # the comparison the masks were always made by; rounding in the scaling may differ
        wrong = above != (graded >= EVIDENCE_THRESHOLD)
        if wrong.any():
            graded[wrong & above] = EVIDENCE_THRESHOLD
            graded[wrong & ~above] = EVIDENCE_THRESHOLD - 1
        out[start:start + _EVIDENCE_BLOCK] = graded
    return evidence


@dataclass(frozen=True)
class ConnectivitySettings:
    """Spatial clean-up per phase: ``min_volume_ml`` (drop smaller 3D components), ``fill_holes`` (3D),
    ``max_components`` (keep the largest N; None: all)."""

    min_volume_ml: float = 0.05
    fill_holes: bool = True
    max_components: int | None = None

    def __post_init__(self) -> None:
        if self.min_volume_ml < 0 or (self.max_components is not None and self.max_components < 1):
            raise ValueError(f"need min_volume_ml ≥ 0 and max_components ≥ 1 or None, got {self}")


@dataclass(frozen=True)
class RefineSettings:
    """``threshold`` on a float probability; ``temporal`` None skips the temporal filter (a 3D CT); ``target``: the
    structure is a lesion whose envelope is an ITV (step 4 of the module docstring)."""

    threshold: float = 0.5
    temporal: TemporalSettings | None = field(default_factory=TemporalSettings)
    connectivity: ConnectivitySettings = ConnectivitySettings()
    target: bool = False


class RefillSource(StrEnum):
    """What a refilled phase was made from."""

    EVIDENCE = "evidence"  # the model's own sub-threshold response near the predicted position
    MOTION = "motion"  # the neighbours' shape placed at the position of the periodic motion model


@dataclass(frozen=True)
class Refill:
    """One refilled phase (index) of one object: its ``source`` and whether it lies ``at_extreme`` of the motion."""

    phase: int
    source: RefillSource
    at_extreme: bool

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "source": self.source.value, "at_extreme": self.at_extreme}


@dataclass(frozen=True)
class RefinementReport:
    """Per phase: components after thresholding, removed as specks, removed by the temporal filter, target parts
    removed as unsupported by the other phases (``removed_excess``), removed beyond ``max_components``; and the
    refills (``refills``, in phase order)."""

    components: tuple[int, ...]
    removed_small: tuple[int, ...]
    removed_temporal: tuple[int, ...]
    removed_excess: tuple[int, ...]
    removed_extra: tuple[int, ...]
    refills: tuple[Refill, ...] = ()

    @property
    def filled_phases(self) -> tuple[int, ...]:
        """The phases (indices) refilled, each once."""
        return tuple(sorted({r.phase for r in self.refills}))

    @property
    def extreme_phases(self) -> tuple[int, ...]:
        """The refilled phases at a motion extreme."""
        return tuple(sorted({r.phase for r in self.refills if r.at_extreme}))

    def to_dict(self) -> dict[str, Any]:
        return {"components": list(self.components), "removed_small": list(self.removed_small),
                "removed_temporal": list(self.removed_temporal), "removed_excess": list(self.removed_excess),
                "removed_extra": list(self.removed_extra), "filled_phases": list(self.filled_phases),
                "refills": [r.to_dict() for r in self.refills]}


@dataclass(frozen=True, eq=False)
class PhaseMasks:
    """One structure over the phases. ``source``: what refinement started from, (phase, z, y, x) uint8 evidence
    (``to_evidence``) or bool masks; ``refined``: after refinement, bool. All on one grid. ``evidence`` (None when it
    started from masks) and ``raw`` (thresholded, bool) are views of the source, made when asked for (a full-size
    structure's raw masks are 0.3 GB that a job never needs)."""

    name: str
    source: np.ndarray = field(repr=False)
    refined: np.ndarray = field(repr=False)
    report: RefinementReport

    @property
    def evidence(self) -> np.ndarray | None:
        return None if self.source.dtype == bool else self.source

    @property
    def raw(self) -> np.ndarray:
        return self.source if self.source.dtype == bool else self.source >= EVIDENCE_THRESHOLD


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(mask, structure=CONNECTIVITY_26)
    return labels, int(count)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (slices) holding every voxel of a (z, y, x) bool ``mask``, None when it is empty: from the
    mask's projections (~10x faster than ``ndimage.find_objects`` on a full-size phase)."""
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    if z.size == 0:
        return None
    slab = mask[z[0]:z[-1] + 1]
    y, x = np.flatnonzero(slab.any(axis=(0, 2))), np.flatnonzero(slab.any(axis=(0, 1)))
    return slice(int(z[0]), int(z[-1]) + 1), slice(int(y[0]), int(y[-1]) + 1), slice(int(x[0]), int(x[-1]) + 1)


class _Components(NamedTuple):
    """A (z, y, x) mask's 3D components (26-connected): ``labels`` 1..``count`` as ``ndimage.label`` numbers them,
    ``sizes[a - 1]`` the voxels of component a."""

    labels: np.ndarray
    count: int
    sizes: np.ndarray


def _components(mask: np.ndarray) -> _Components:
    """The components of ``mask``, their sizes counted in blocks of ``_EVIDENCE_BLOCK`` labels: ``np.bincount``
    copies its input to 8-byte integers, and a whole box's copy (~70 MB for a lung) comes back from the allocator as
    fresh pages each time, ~5x slower than counting in cache-sized blocks."""
    labels, count = _label(mask)
    sizes = np.zeros(count + 1, dtype=np.intp)
    flat = labels.reshape(-1)
    for start in range(0, flat.size, _EVIDENCE_BLOCK):
        sizes += np.bincount(flat[start:start + _EVIDENCE_BLOCK], minlength=count + 1)
    return _Components(labels, count, sizes[1:])


def _without_small(components: _Components, min_voxels: int) -> tuple[_Components, int]:
    """The components of at least ``min_voxels`` voxels, renumbered 1.. in their order, and the count removed: what
    ``_components`` gives of the mask without the small ones (``ndimage.label`` numbers components by their first
    voxel in scan order, which removing others does not change), without labelling again."""
    keep = components.sizes >= min_voxels
    kept = int(keep.sum())
    if kept == components.count:
        return components, 0
    renumber = np.zeros(components.count + 1, dtype=components.labels.dtype)
    renumber[1:][keep] = np.arange(1, kept + 1)
    return _Components(renumber[components.labels], kept, components.sizes[keep]), components.count - kept


def remove_small(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """Drop 3D components of fewer than ``min_voxels`` voxels from a (z, y, x) mask; returns (mask, removed count)."""
    kept, removed = _without_small(_components(mask), min_voxels)
    return (kept.labels > 0 if removed else mask.copy()), removed


def keep_largest(mask: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Keep the ``n`` largest 3D components of a (z, y, x) mask; returns (mask, removed count)."""
    labels, count = _label(mask)
    if count <= n:
        return mask.copy(), 0
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[:n]
    keep = np.zeros(count + 1, dtype=bool)
    keep[order + 1] = True
    return keep[labels], count - n


def _fill_enclosed(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus the background components (face-connected) that do not touch the array border: the result of
    ``scipy.ndimage.binary_fill_holes``, in one labelling pass instead of iterated dilations."""
    labels, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    border = np.zeros(count + 1, dtype=bool)
    for axis in range(mask.ndim):
        for index in (0, -1):
            border[np.take(labels, index, axis=axis)] = True
    hole = ~border
    hole[0] = False
    return mask | hole[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the enclosed cavities of a (z, y, x) mask in 3D (``scipy.ndimage.binary_fill_holes``)."""
    bounds = bounding_box(mask)
    if bounds is None:
        return mask.copy()
    box = _box(bounds, (1, 1, 1), mask.shape)
    out = mask.copy()
    out[box] = _fill_enclosed(mask[box])
    return out


def _cyclic_distance(p: int, q: int, n: int, cyclic: bool) -> int:
    d = abs(p - q)
    return min(d, n - d) if cyclic else d


def longest_run(phases: Sequence[int], n_phases: int, max_gap: int, cyclic: bool) -> int:
    """Covered phases in the longest run of ``phases`` (indices in [0, n_phases)) whose consecutive members are at
    most ``max_gap`` missing phases apart, wrapping around when ``cyclic``."""
    covered = sorted(set(phases))
    if not covered:
        return 0
    if len(covered) == n_phases:
        return n_phases
    gaps = [covered[i + 1] - covered[i] - 1 for i in range(len(covered) - 1)]
    if cyclic:
        gaps.append(covered[0] + n_phases - covered[-1] - 1)
    breaks = [i for i, g in enumerate(gaps) if g > max_gap]
    if not breaks:  # only possible when cyclic: one run around the whole cycle
        return len(covered)
    if not cyclic:
        runs, length = [], 1
        for g in gaps:
            if g > max_gap:
                runs.append(length)
                length = 1
            else:
                length += 1
        return max([*runs, length])
    # cyclic: start right after a break and walk once around
    start = (breaks[0] + 1) % len(covered)
    best, length = 0, 0
    for k in range(len(covered)):
        i = (start + k) % len(covered)
        length += 1
        if gaps[i] > max_gap:
            best, length = max(best, length), 0
    return max(best, length)


def _box(index: tuple[slice, ...], pad: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(index, pad, shape, strict=True))


def _link_components(labels: list[np.ndarray], counts: list[int], boxes: list[list[tuple[slice, ...]]],
                     spacing_mm: Sequence[float], settings: TemporalSettings) -> tuple[list[int], list[int]]:
    """The linked groups of all (phase, component) nodes (links: module docstring) as ``(group, offsets)``:
    ``offsets[p]`` is the node id of phase p's component 1, ``group[node]`` the smallest node id of its group (a
    deterministic group id, whatever root the disjoint set picks). ``boxes``: per phase its components' boxes
    (``ndimage.find_objects``)."""
    n_phases = len(labels)
    offsets = [int(v) for v in np.cumsum([0, *counts[:-1]])]
    groups = DisjointSet(range(int(sum(counts))))
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    max_step = min(1 + settings.max_gap, n_phases - 1 if not settings.cyclic else n_phases // 2)
    foreground = [lab > 0 for lab in labels]
    for p in range(n_phases):
        for q in range(n_phases):
            d = _cyclic_distance(p, q, n_phases, settings.cyclic)
            if q == p or d > max_step or counts[p] == 0 or counts[q] == 0:
                continue
            # overlap links (computed once per unordered pair)
            if p < q:
                both = foreground[p] & foreground[q]
                keys = np.unique(labels[p][both].astype(np.int64) * (counts[q] + 1) + labels[q][both])
                for a, b in zip((keys // (counts[q] + 1)).tolist(), (keys % (counts[q] + 1)).tolist(), strict=True):
                    groups.merge(offsets[p] + a - 1, offsets[q] + b - 1)
            # distance links from components of p that overlap nothing in q
            tolerance = d * settings.motion_tolerance_mm
            if tolerance <= 0:
                continue
            pad = [int(np.ceil(tolerance / s)) + 1 for s in spacing]
            for a in range(1, counts[p] + 1):
                box = _box(boxes[p][a - 1], pad, labels[p].shape)
                component = labels[p][box] == a
                near_labels = labels[q][box]
                if np.any(near_labels[component]):
                    continue
                distance = ndimage.distance_transform_edt(~component, sampling=spacing)
                for b in np.unique(near_labels[(distance <= tolerance) & (near_labels > 0)]).tolist():
                    groups.merge(offsets[p] + a - 1, offsets[q] + b - 1)
    group = [0] * int(sum(counts))
    for subset in groups.subsets():
        smallest = min(subset)
        for node in subset:
            group[node] = smallest
    return group, offsets


def _signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distance in mm: negative inside, positive outside (half-voxel convention at the boundary)."""
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return outside - inside


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(3,) float64 mean voxel index of a non-empty (z, y, x) mask (from its projections on the axes: no index list
    of a lung's millions of voxels)."""
    profiles = [np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]
    return np.array([float(np.dot(np.arange(len(c)), c)) / float(c.sum()) for c in profiles])


def place_shape(sources: Sequence[np.ndarray], weights: Sequence[float], position: np.ndarray,
                spacing_mm: Sequence[float]) -> np.ndarray:
    """The object's mask with its centroid at ``position`` (voxel index), from its (z, y, x) masks in other phases.

    Each source's signed distance map is moved rigidly so that its centroid lands on ``position`` (linear resampling,
    sub-voxel), and the result is where their ``weights``-weighted mean is ≤ 0: the shape interpolation of the sources,
    placed where the motion model puts the object. For a rigidly moving object it recovers the object at
    ``position``.
    """
    total = np.zeros(sources[0].shape, dtype=np.float64)
    for source, weight in zip(sources, weights, strict=True):
        distance = _signed_distance(source, spacing_mm)
        total += weight * ndimage.shift(distance, position - _centroid(source), order=1, mode="nearest")
    return total / float(sum(weights)) <= 0


@dataclass(frozen=True, eq=False)
class MotionFit:
    """A periodic motion model's ``positions`` (k, 3) at the phases asked for, and per axis its ``error`` (3,): the
    root-mean-square leave-one-out error of the model over the phases it was fitted to (same units)."""

    positions: np.ndarray
    error: np.ndarray


def periodic_fit(phases: Sequence[int], positions: np.ndarray, n_phases: int, at: Sequence[int]) -> MotionFit | None:
    """The periodic motion model fitted to ``positions`` (m, 3) seen at ``phases`` (indices into a cycle of
    ``n_phases``), evaluated at the phases ``at``; None when fewer than 4 phases are seen.

    Respiration is periodic: per axis, a least-squares Fourier series in the phase angle 2π·k/n. The number of
    harmonics (0 to 3, at most (m − 2) // 2 so that every leave-one-out fit is determined) is the one whose
    leave-one-out prediction of the seen phases is best (summed over the axes; the fewer harmonics on a tie): fewer
    terms when fewer phases are known, and the model that best predicts a phase it did not see, an extreme included.
    On the irregular phantom traces (seeds 4-15) its error at a dropped phase is 0.5 mm on average (at most 1.1 mm)
    superior-inferior, where a periodic cubic spline errs by 0.6 (2.6) mm and the neighbours' midpoint by 1.8
    (6.7) mm.
    """
    phases = np.asarray(phases, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    most = min(MAX_HARMONICS, (len(phases) - 2) // 2)
    if most < 1:
        return None

    def design(k: np.ndarray, harmonics: int) -> np.ndarray:
        angle = 2 * np.pi * np.asarray(k, dtype=np.float64) / n_phases
        return np.column_stack([np.ones_like(angle)] + [f(h * angle) for h in range(1, harmonics + 1)
                                                        for f in (np.cos, np.sin)])

    def fit(k: np.ndarray, y: np.ndarray, harmonics: int, query: np.ndarray) -> np.ndarray:
        coefficients = np.linalg.lstsq(design(k, harmonics), y, rcond=None)[0]
        return design(query, harmonics) @ coefficients

    def left_out(harmonics: int) -> np.ndarray:
        """(m, 3) leave-one-out residuals."""
        rows = np.arange(len(phases))
        return np.array([fit(phases[rows != i], positions[rows != i], harmonics, phases[i:i + 1])[0] - positions[i]
                         for i in rows])

    residuals = [left_out(harmonics) for harmonics in range(most + 1)]
    best = int(np.argmin([float(np.sum(r ** 2)) for r in residuals]))
    return MotionFit(fit(phases, positions, best, np.asarray(at, dtype=np.float64)),
                     np.sqrt(np.mean(residuals[best] ** 2, axis=0)))


def _trim_unsupported(masks: dict[int, np.ndarray], needed: int, min_voxels: int
                      ) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """A target's masks (phase → (z, y, x) bool, one linked group) less the parts the other phases do not support.

    Every other phase's mask is grown by one voxel (26-neighbourhood: misplacement by up to half a voxel, and
    voxelisation) and moved rigidly onto the phase's position (the centroid displacement, to the nearest voxel); a
    voxel of the phase is supported by the phases whose moved mask holds it, itself included. The connected parts of
    at least ``min_voxels`` voxels with less than ``needed`` support are removed, with the specks (3D components under
    ``min_voxels``) a split leaves. Repeated with the positions of the trimmed masks until they no longer move (at
    most ``TRIM_ROUNDS`` times), so that a removed transient no longer pulls the centroid its phase was aligned by
    (the part of it left after one round still would). Returns the trimmed masks and per phase the parts removed.

    Whole-voxel moves are slices, so the phases are grown once, not once per pair.
    """
    grown = {p: ndimage.binary_dilation(mask, CONNECTIVITY_26).view(np.uint8) for p, mask in masks.items()}
    positions = {p: _centroid(mask) for p, mask in masks.items()}
    trimmed, removed = dict(masks), dict.fromkeys(masks, 0)
    for _ in range(TRIM_ROUNDS):
        for p, mask in masks.items():
            support = np.ones(mask.shape, dtype=np.uint8)
            for q in masks:
                if q != p:
                    _add_moved(support, grown[q], np.rint(positions[p] - positions[q]).astype(int))
            labels, count = _label(mask & (support < needed))
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            drop = sizes >= max(min_voxels, 1)
            drop[0] = False
            removed[p] = int(drop.sum())
            trimmed[p] = mask & ~drop[labels] if removed[p] else mask
        moved = {p: _centroid(mask) if mask.any() else positions[p] for p, mask in trimmed.items()}
        if all(np.allclose(moved[p], positions[p], atol=1e-3) for p in masks):
            break
        positions = moved
    # a split can leave specks of a removed part (where the other phases' grown shapes reach into it)
    return {p: remove_small(mask, min_voxels)[0] if removed[p] else mask for p, mask in trimmed.items()}, removed


def _add_moved(total: np.ndarray, mask: np.ndarray, offset: Sequence[int]) -> None:
    """``total += mask`` moved by ``offset`` whole voxels (what moves out of the array is lost), in place."""
    target, source = [], []
    for shift, n in zip(offset, mask.shape, strict=True):
        shift = int(np.clip(shift, -n, n))
        target.append(slice(max(shift, 0), n + min(shift, 0)))
        source.append(slice(max(-shift, 0), n - max(shift, 0)))
    total[tuple(target)] += mask[tuple(source)]


def _gaps(seen: Sequence[int], n_phases: int, max_gap: int, cyclic: bool) -> list[tuple[int, int, int]]:
    """(missing phase, seen phase before, seen phase after) for every phase of a run of at most ``max_gap`` missing
    phases between two seen ones (wrapping around when ``cyclic``)."""
    seen = sorted(seen)
    pairs = list(itertools.pairwise(seen))
    if cyclic and len(seen) > 1:
        pairs.append((seen[-1], seen[0] + n_phases))
    return [(q % n_phases, before, after % n_phases) for before, after in pairs if 1 <= after - before - 1 <= max_gap
            for q in range(before + 1, after)]


def _fill_group(masks: dict[int, np.ndarray], evidence: np.ndarray | None, n_phases: int, spacing_mm: np.ndarray,
                settings: TemporalSettings) -> list[tuple[Refill, np.ndarray]]:
    """The refills of one kept group (seen masks: phase → (z, y, x) bool): per missing phase of a bridged gap, the
    ``Refill`` and its mask (module docstring, step 5)."""
    seen = sorted(p for p, mask in masks.items() if mask.any())
    gaps = _gaps(seen, n_phases, settings.max_gap, settings.cyclic)
    if not gaps:
        return []
    positions = np.array([_centroid(masks[p]) for p in seen])
    motion = periodic_fit(seen, positions, n_phases, [q for q, _, _ in gaps]) if settings.cyclic else None
    low, high = positions.min(axis=0) * spacing_mm - EXTREME_MM, positions.max(axis=0) * spacing_mm + EXTREME_MM
    refills = []
    for k, (q, before, after) in enumerate(gaps):
        d_before, d_after = (q - before) % n_phases, (after - q) % n_phases
        weights = (d_after / (d_before + d_after), d_before / (d_before + d_after))
        sources = [masks[before], masks[after]]
        if motion is None:  # too few phases for the periodic model, or not a cycle: linear between the neighbours
            shape = place_shape(sources, weights, weights[0] * positions[seen.index(before)]
                                + weights[1] * positions[seen.index(after)], spacing_mm)
        else:  # at an extreme, swept outward over the model's own error: the ITV's excursion rests on this phase
            position_mm = motion.positions[k] * spacing_mm
            outward = np.where(position_mm < low, -motion.error, np.where(position_mm > high, motion.error, 0.0))
            shape = place_shape(sources, weights, motion.positions[k], spacing_mm)
            if outward.any():
                shape |= place_shape(sources, weights, motion.positions[k] + outward, spacing_mm)
        source, filled = RefillSource.MOTION, shape
        if evidence is not None:
            expected = weights[0] * masks[before].sum() + weights[1] * masks[after].sum()
            margin = ndimage.distance_transform_edt(~shape, sampling=spacing_mm) <= settings.motion_tolerance_mm
            response = fill_holes((evidence[q] >= HYSTERESIS_LEVEL) & margin)
            agreement = 2 * np.sum(response & shape) / max(int(response.sum() + shape.sum()), 1)
            if agreement >= EVIDENCE_AGREEMENT and \
                    EVIDENCE_VOLUME[0] * expected <= response.sum() <= EVIDENCE_VOLUME[1] * expected:
                source, filled = RefillSource.EVIDENCE, response
        if not filled.any():
            continue
        centre_mm = _centroid(filled) * spacing_mm
        extreme = bool(np.any(centre_mm < low) or np.any(centre_mm > high))
        refills.append((Refill(q, source, extreme), filled))
    return refills


@dataclass(frozen=True, eq=False)
class TemporalOutcome:
    """What ``temporal_filter`` did: the filtered (phase, z, y, x) masks and, per phase, the components removed for
    too little support (``removed``), the target parts removed as unsupported by the other phases (``excess``), the
    components removed beyond the group count (``extra``); and the refills."""

    masks: np.ndarray
    removed: list[int]
    excess: list[int]
    extra: list[int]
    refills: tuple[Refill, ...]


def temporal_filter(masks: np.ndarray, spacing_mm: Sequence[float], settings: TemporalSettings,
                    max_groups: int | None = None, *, target: bool = False, evidence: np.ndarray | None = None,
                    min_voxels: int = 0, labelled: Sequence[_Components] | None = None) -> TemporalOutcome:
    """Apply steps 3–5 of the module docstring to (phase, z, y, x) bool masks, and step 7 with ``max_groups``.

    ``target``: trim each kept group's phases of parts the other phases do not support (step 4; parts of at least
    ``min_voxels``). ``evidence``: (phase, z, y, x) uint8 (``to_evidence``), whose sub-threshold response (≥
    ``HYSTERESIS_LEVEL``) a refill uses first (step 5); None: refills come from the motion model alone.
    ``labelled``: per phase the masks' components (``_components``), when the caller has them (None: labelled here).
    """
    masks = np.asarray(masks, dtype=bool)
    n_phases = masks.shape[0]
    labelled = [_components(m) for m in masks] if labelled is None else labelled
    labels = [c.labels for c in labelled]
    counts = [c.count for c in labelled]
    needed = min(settings.min_phases, n_phases)
    zeros = [0] * n_phases
    if sum(counts) == 0 or (needed <= 1 and max_groups is None):  # nothing to filter
        return TemporalOutcome(masks.copy(), zeros, list(zeros), list(zeros), ())
    component_boxes = [ndimage.find_objects(lab) for lab in labels]
    group, offsets = _link_components(labels, counts, component_boxes, spacing_mm, settings)
    root_of = [[group[offsets[p] + a] for a in range(counts[p])] for p in range(n_phases)]
    phases_of: dict[int, set[int]] = {}
    volume_of: dict[int, int] = {}
    for p in range(n_phases):
        sizes = labelled[p].sizes
        for a, root in enumerate(root_of[p]):
            phases_of.setdefault(root, set()).add(p)
            volume_of[root] = volume_of.get(root, 0) + int(sizes[a])
    support = {root: longest_run(sorted(ph), n_phases, settings.max_gap, settings.cyclic)
               for root, ph in phases_of.items()}
    supported = sorted((root for root in phases_of if support[root] >= needed), key=lambda r: (-volume_of[r], r))
    kept = supported if max_groups is None else supported[:max_groups]
    out = np.zeros(masks.shape, dtype=bool)
    removed, excess, extra = list(zeros), list(zeros), list(zeros)
    for p in range(n_phases):
        keep = np.zeros(counts[p] + 1, dtype=bool)
        keep[1:] = [root in kept for root in root_of[p]]
        removed[p] = sum(support[root] < needed for root in root_of[p])
        extra[p] = int(counts[p] - keep.sum() - removed[p])
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    grow = _refill_room(settings, spacing)  # each group is worked on in its own box
    refills: list[Refill] = []
    for root in kept:
        members = {p: [a + 1 for a, r in enumerate(root_of[p]) if r == root] for p in sorted(phases_of[root])}
        box = _box(_union_box([component_boxes[p][a - 1] for p, ids in members.items() for a in ids]), grow,
                   masks.shape[1:])
        group_masks = {p: np.isin(labels[p][box], ids) for p, ids in members.items()}
        if target and needed > 1:
            group_masks, parts = _trim_unsupported(group_masks, needed, min_voxels)
            for p, n in parts.items():
                excess[p] += n
        for p, mask in group_masks.items():
            out[p][box] |= mask
        if settings.fill_gaps and settings.max_gap >= 1 and needed > 1:
            crop = None if evidence is None else evidence[(slice(None), *box)]
            for refill, mask in _fill_group(group_masks, crop, n_phases, spacing, settings):
                out[refill.phase][box] |= mask
                refills.append(refill)
    return TemporalOutcome(out, removed, excess, extra, tuple(sorted(refills, key=lambda r: r.phase)))


def _refill_room(settings: TemporalSettings, spacing_mm: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis a box is grown by so that a refill beyond every seen position (by up to twice the motion
    tolerance) still fits in it."""
    return tuple(int(np.ceil(2 * settings.motion_tolerance_mm / s)) + 1 for s in spacing_mm)


def _union_box(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    """The smallest box (slices) holding every box of ``boxes``."""
    return tuple(slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes)) for axis in range(3))


def refine_structure(
    name: str,
    probability: np.ndarray,
    geometry: Geometry,
    settings: RefineSettings = RefineSettings(),
) -> PhaseMasks:
    """Refine one structure's (phase, z, y, x) probability (float in [0, 1]), evidence (uint8) or mask (bool) on
    ``geometry``'s grid."""
    values = np.asarray(probability)
    if values.ndim != 4 or tuple(values.shape[1:]) != tuple(geometry.shape):
        raise ValueError(f"{name}: probability must be (phase, z, y, x) on the grid {geometry.shape}, got "
                         f"{values.shape}")
    if values.dtype == bool:
        source = values.copy()
    else:
        source = values if values.dtype == np.uint8 else to_evidence(values, settings.threshold)
    evidence = None if source.dtype == bool else source
    refined = np.zeros(source.shape, dtype=bool)
    # all steps stay within the bounding box of every phase's mask, grown for refills beyond it
    peak = source.max(axis=0)  # each voxel's most over the phases
    bounds = bounding_box(peak if evidence is None else peak >= EVIDENCE_THRESHOLD)
    if bounds is not None:
        grow = (1, 1, 1) if settings.temporal is None else _refill_room(settings.temporal, geometry.spacing_mm)
        box = (slice(None), *_box(bounds, grow, source.shape[1:]))
        crop = None if evidence is None else evidence[box]  # a view
        raw = source[box] if evidence is None else crop >= EVIDENCE_THRESHOLD
        refined[box], report = _refine_box(raw, crop, geometry, settings)
    else:
        zeros = (0,) * source.shape[0]
        report = RefinementReport(zeros, zeros, zeros, zeros, zeros)
    return PhaseMasks(name=name, source=source, refined=refined, report=report)


def _refine_box(raw: np.ndarray, evidence: np.ndarray | None, geometry: Geometry, settings: RefineSettings
                ) -> tuple[np.ndarray, RefinementReport]:
    """Steps 2–7 on a (phase, z, y, x) crop of the grid (the spacing is the grid's); ``evidence``: the crop's
    evidence (None from masks)."""
    spacing = geometry.spacing_mm
    conn = settings.connectivity
    min_voxels = int(np.ceil(conn.min_volume_ml / geometry.voxel_volume_ml)) if conn.min_volume_ml > 0 else 0
    n_phases = raw.shape[0]
    components, removed_small, labelled = [], [], []
    masks = np.empty_like(raw)
    for p in range(n_phases):  # each phase labelled once: components, specks removed, the temporal filter's nodes
        found = _components(raw[p])
        kept, n_removed = _without_small(found, min_voxels)
        masks[p] = kept.labels > 0
        components.append(found.count)
        removed_small.append(n_removed)
        labelled.append(kept)
    zeros = (0,) * n_phases
    removed_temporal, removed_excess, removed_extra, refills = zeros, zeros, list(zeros), ()
    if settings.temporal is not None:
        outcome = temporal_filter(masks, spacing, settings.temporal, conn.max_components, target=settings.target,
                                  evidence=evidence, min_voxels=min_voxels, labelled=labelled)
        masks, refills = outcome.masks, outcome.refills
        removed_temporal, removed_excess, removed_extra = outcome.removed, outcome.excess, outcome.extra
    for p in range(n_phases):
        if conn.fill_holes:
            masks[p] = fill_holes(masks[p])
        if settings.temporal is None and conn.max_components is not None:
            masks[p], removed_extra[p] = keep_largest(masks[p], conn.max_components)
    return masks, RefinementReport(tuple(components), tuple(removed_small), tuple(removed_temporal),
                                   tuple(removed_excess), tuple(removed_extra), refills)


def refine_from_spec(spec: StructureSpec, predicted: np.ndarray, geometry: Geometry,
                     temporal: TemporalSettings) -> PhaseMasks:
    """Refine one structure's (phase, z, y, x) evidence (``model.segment.predict_phases``) or bool masks as its
    template entry asks: specks below ``spec.min_volume_ml``, the temporal filter when there are several phases (a
    4DCT) with the target rule for a structure with an ITV, ``spec.components`` objects. The one way every driver
    (pipeline, evaluation, ablation) refines."""
    settings = RefineSettings(temporal=temporal if predicted.shape[0] > 1 else None, target=spec.itv,
                              connectivity=ConnectivitySettings(min_volume_ml=spec.min_volume_ml,
                                                                max_components=spec.components))
    return refine_structure(spec.name, predicted, geometry, settings)
