"""Refinement of phase-wise masks: phase-coherent temporal filtering and spatial connectivity. Pure numpy/scipy.

Input per structure: a (phase, z, y, x) probability (or bool) array over the respiratory phases, in phase order, on one
grid (``Geometry``). Steps, in order (``refine_structure``):

1. Threshold at ``RefineSettings.threshold``.
2. Specks: 3D components (26-connected) smaller than ``ConnectivitySettings.min_volume_ml`` are dropped.
3. Phase-coherent temporal filter (``TemporalSettings``, in ``dicomrt.structures``: a job option). Every 3D component
   of every phase is a node. Two nodes in phases p and q at cyclic phase distance d (1 ≤ d ≤ 1 + ``max_gap``) are
   linked when they overlap or come within ``d · motion_tolerance_mm`` of each other (surface-to-surface, Euclidean
   in mm): the target may move by up to the tolerance per phase step. A node's *support* is, over the linked group it
   belongs to, the number of phases in the longest cyclically contiguous run of phases that contain the group, where
   runs may bridge up to ``max_gap`` phases without it (bridged phases are not counted). A node is kept when its
   support is at least ``min_phases`` (capped at the number of phases). Respiration is periodic and continuous, so
   anatomy forms such runs; sporadic false positives (present in 1–2 phases, or jumping around) do not.
4. Dropout filling (``fill_gaps``): a phase that a kept group bridges (it holds the group in the phases before and after
   but not in that one) gets the motion-compensated shape interpolation of the two neighbours (``interpolate_shape``):
   both moved half-way towards each other, then the voxels where the mean of their signed distance maps is ≤ 0.
5. Holes: ``binary_fill_holes`` in 3D (``ConnectivitySettings.fill_holes``).
6. Component count (``max_components``; None: all). On a 4DCT the objects are the linked groups of step 3: only the
   ``max_components`` supported groups of the largest volume summed over the phases are kept, with all their parts
   in every phase (a tumour that an artefact splits in one phase keeps both parts, and a false positive cannot stand
   in for the target in the one phase where it happens to be larger). Without the temporal filter (a 3D CT), the
   ``max_components`` largest 3D components are kept.

Everything is explicit in frozen settings; ``RefinementReport`` counts what each step did per phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.cluster.hierarchy import DisjointSet

from dicomrt.geometry import Geometry
from dicomrt.structures import StructureSpec, TemporalSettings

CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)


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
    """``threshold`` on the probability; ``temporal`` None skips the temporal filter (a 3D CT)."""

    threshold: float = 0.5
    temporal: TemporalSettings | None = field(default_factory=TemporalSettings)
    connectivity: ConnectivitySettings = ConnectivitySettings()


@dataclass(frozen=True)
class RefinementReport:
    """Per phase: components after thresholding, removed as specks, removed by the temporal filter, removed beyond
    ``max_components``; and the phases filled by dropout interpolation."""

    components: tuple[int, ...]
    removed_small: tuple[int, ...]
    removed_temporal: tuple[int, ...]
    removed_extra: tuple[int, ...]
    filled_phases: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True, eq=False)
class PhaseMasks:
    """One structure over the phases. ``probability``: (phase, z, y, x) float32 in [0, 1] (None when refinement
    started from masks); ``raw``: thresholded, bool; ``refined``: after refinement, bool. All on one grid."""

    name: str
    probability: np.ndarray | None = field(repr=False)
    raw: np.ndarray = field(repr=False)
    refined: np.ndarray = field(repr=False)
    report: RefinementReport


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(mask, structure=CONNECTIVITY_26)
    return labels, int(count)


def remove_small(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """Drop 3D components of fewer than ``min_voxels`` voxels from a (z, y, x) mask; returns (mask, removed count)."""
    labels, count = _label(mask)
    if count == 0 or min_voxels <= 1:
        return mask.copy(), 0
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.concatenate([[False], sizes >= min_voxels])
    return keep[labels], int(np.sum(sizes < min_voxels))


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
    if not mask.any():
        return mask.copy()
    box = _box(ndimage.find_objects(mask.astype(np.uint8))[0], (1, 1, 1), mask.shape)
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


def _link_components(labels: list[np.ndarray], counts: list[int], spacing_mm: Sequence[float],
                     settings: TemporalSettings) -> tuple[list[int], list[int]]:
    """The linked groups of all (phase, component) nodes (links: module docstring) as ``(group, offsets)``:
    ``offsets[p]`` is the node id of phase p's component 1, ``group[node]`` the smallest node id of its group (a
    deterministic group id, whatever root the disjoint set picks)."""
    n_phases = len(labels)
    offsets = [int(v) for v in np.cumsum([0, *counts[:-1]])]
    groups = DisjointSet(range(int(sum(counts))))
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    max_step = min(1 + settings.max_gap, n_phases - 1 if not settings.cyclic else n_phases // 2)
    boxes = [ndimage.find_objects(lab) for lab in labels]
    for p in range(n_phases):
        for q in range(n_phases):
            d = _cyclic_distance(p, q, n_phases, settings.cyclic)
            if q == p or d > max_step or counts[p] == 0 or counts[q] == 0:
                continue
            # overlap links (computed once per unordered pair)
            if p < q:
                both = (labels[p] > 0) & (labels[q] > 0)
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


def interpolate_shape(before: np.ndarray, after: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """The mask midway between two (z, y, x) masks of one object in the phases around a missing one.

    Motion-compensated shape interpolation: each mask is moved half-way towards the other (by half the displacement
    of their centroids, linear resampling) and the result is where the mean of their signed distance maps is ≤ 0.
    For a rigidly translating object this recovers the object at the middle position.
    """
    if not before.any() or not after.any():
        return np.zeros_like(before)
    half_shift = (np.array(ndimage.center_of_mass(after)) - np.array(ndimage.center_of_mass(before))) / 2
    pad = [int(np.ceil(abs(v))) + 2 for v in half_shift]
    coords = np.nonzero(before | after)
    box = tuple(slice(max(0, int(c.min()) - p), min(n, int(c.max()) + p + 1))
                for c, p, n in zip(coords, pad, before.shape, strict=True))
    moved_before = ndimage.shift(before[box].astype(np.float32), half_shift, order=1) >= 0.5
    moved_after = ndimage.shift(after[box].astype(np.float32), -half_shift, order=1) >= 0.5
    middle = (_signed_distance(moved_before, spacing_mm) + _signed_distance(moved_after, spacing_mm)) / 2 <= 0
    out = np.zeros_like(before)
    out[box] = middle
    return out


def temporal_filter(masks: np.ndarray, spacing_mm: Sequence[float], settings: TemporalSettings,
                    max_groups: int | None = None) -> tuple[np.ndarray, list[int], list[int], list[int]]:
    """Apply steps 3–4 of the module docstring to (phase, z, y, x) bool masks, and step 6 with ``max_groups``.

    Returns the filtered masks, per phase the number of components removed for too little support and the number
    removed beyond ``max_groups``, and the phases filled by interpolation.
    """
    masks = np.asarray(masks, dtype=bool)
    n_phases = masks.shape[0]
    labelled = [_label(m) for m in masks]
    labels = [lab for lab, _ in labelled]
    counts = [c for _, c in labelled]
    needed = min(settings.min_phases, n_phases)
    if sum(counts) == 0 or (needed <= 1 and max_groups is None):  # nothing to filter
        return masks.copy(), [0] * n_phases, [0] * n_phases, []
    group, offsets = _link_components(labels, counts, spacing_mm, settings)
    root_of = [[group[offsets[p] + a] for a in range(counts[p])] for p in range(n_phases)]
    phases_of: dict[int, set[int]] = {}
    volume_of: dict[int, int] = {}
    for p in range(n_phases):
        sizes = np.bincount(labels[p].ravel(), minlength=counts[p] + 1)[1:]
        for a, root in enumerate(root_of[p]):
            phases_of.setdefault(root, set()).add(p)
            volume_of[root] = volume_of.get(root, 0) + int(sizes[a])
    support = {root: longest_run(sorted(ph), n_phases, settings.max_gap, settings.cyclic)
               for root, ph in phases_of.items()}
    supported = sorted((root for root in phases_of if support[root] >= needed), key=lambda r: (-volume_of[r], r))
    kept = set(supported if max_groups is None else supported[:max_groups])
    out = np.zeros_like(masks)
    removed, extra = [0] * n_phases, [0] * n_phases
    for p in range(n_phases):
        keep = np.zeros(counts[p] + 1, dtype=bool)
        keep[1:] = [root in kept for root in root_of[p]]
        out[p] = keep[labels[p]]
        removed[p] = sum(support[root] < needed for root in root_of[p])
        extra[p] = int(counts[p] - keep.sum() - removed[p])
    filled: list[int] = []
    if settings.fill_gaps and settings.max_gap >= 1 and needed > 1:
        for root, ph in phases_of.items():
            if root not in kept:
                continue
            for q in range(n_phases):
                before, after = q - 1, q + 1
                if settings.cyclic:
                    before, after = before % n_phases, after % n_phases
                elif before < 0 or after >= n_phases:
                    continue
                if q in ph or before not in ph or after not in ph:
                    continue
                group_mask = [np.isin(labels[k], [a + 1 for a, r in enumerate(root_of[k]) if r == root])
                              for k in (before, after)]
                out[q] |= interpolate_shape(group_mask[0], group_mask[1], spacing_mm)
                filled.append(q)
    return out, removed, extra, sorted(set(filled))


def refine_structure(
    name: str,
    probability: np.ndarray,
    geometry: Geometry,
    settings: RefineSettings = RefineSettings(),
) -> PhaseMasks:
    """Refine one structure's (phase, z, y, x) probability (float in [0, 1]) or mask (bool) on ``geometry``'s grid."""
    values = np.asarray(probability)
    if values.ndim != 4 or tuple(values.shape[1:]) != tuple(geometry.shape):
        raise ValueError(f"{name}: probability must be (phase, z, y, x) on the grid {geometry.shape}, got "
                         f"{values.shape}")
    raw = values.astype(bool) if values.dtype == bool else values >= settings.threshold
    refined = np.zeros_like(raw)
    if raw.any():  # all steps stay within the bounding box of every phase's mask, one voxel larger
        box = _box(ndimage.find_objects(raw.any(axis=0).astype(np.uint8))[0], (1, 1, 1), raw.shape[1:])
        refined[(slice(None), *box)], report = _refine_box(raw[(slice(None), *box)], geometry, settings)
    else:
        zeros = (0,) * raw.shape[0]
        report = RefinementReport(zeros, zeros, zeros, zeros, ())
    return PhaseMasks(name=name, probability=None if values.dtype == bool else values.astype(np.float32, copy=False),
                      raw=raw, refined=refined, report=report)


def _refine_box(raw: np.ndarray, geometry: Geometry, settings: RefineSettings) -> tuple[np.ndarray, RefinementReport]:
    """Steps 2–6 on a (phase, z, y, x) crop of the grid (the spacing is the grid's)."""
    spacing = geometry.spacing_mm
    conn = settings.connectivity
    min_voxels = int(np.ceil(conn.min_volume_ml / geometry.voxel_volume_ml)) if conn.min_volume_ml > 0 else 0
    n_phases = raw.shape[0]
    components, removed_small = [], []
    masks = np.empty_like(raw)
    for p in range(n_phases):
        components.append(_label(raw[p])[1])
        masks[p], n_removed = remove_small(raw[p], min_voxels)
        removed_small.append(n_removed)
    removed_temporal, removed_extra, filled = [0] * n_phases, [0] * n_phases, []
    if settings.temporal is not None:
        masks, removed_temporal, removed_extra, filled = temporal_filter(masks, spacing, settings.temporal,
                                                                         conn.max_components)
    for p in range(n_phases):
        if conn.fill_holes:
            masks[p] = fill_holes(masks[p])
        if settings.temporal is None and conn.max_components is not None:
            masks[p], removed_extra[p] = keep_largest(masks[p], conn.max_components)
    return masks, RefinementReport(tuple(components), tuple(removed_small), tuple(removed_temporal),
                                   tuple(removed_extra), tuple(filled))


def refine_from_spec(spec: StructureSpec, masks: np.ndarray, geometry: Geometry,
                     temporal: TemporalSettings) -> PhaseMasks:
    """Refine one structure's (phase, z, y, x) bool masks (already thresholded) as its template entry asks: specks
    below ``spec.min_volume_ml``, the temporal filter when there are several phases (a 4DCT), ``spec.components``
    objects. The one way every driver (pipeline, evaluation, ablation) refines."""
    settings = RefineSettings(temporal=temporal if masks.shape[0] > 1 else None,
                              connectivity=ConnectivitySettings(min_volume_ml=spec.min_volume_ml,
                                                                max_components=spec.components))
    return refine_structure(spec.name, masks, geometry, settings)
