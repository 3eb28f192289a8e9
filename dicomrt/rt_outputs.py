"""The RTSTRUCTs of a study, from per-structure masks: per phase, on the reference series, or one combined object.

Masks: a mapping structure name → bool array on the study's grid (``StudyIndex``, every phase on the same grid),
z in ascending patient z as everywhere in itvsam:

- ``(phase, z, y, x)``: one mask per phase, phases in the order of ``index.phases`` (sorted by percent);
- ``(z, y, x)``: one volume (e.g. drawn on the AIP, or a structure that does not move). In a study with a single
  phase it is that phase's mask.

What goes where (``OutputMode``):

- ``per-phase``: one RTSTRUCT per phase series holding that phase's masks (and, in a single-phase study, the
  one-volume masks), referencing only that series.
- ``reference``: one RTSTRUCT on the reference series (``index.reference``: the study's AIP, else the configured
  phase; or the ``reference`` argument, e.g. an AIP we wrote) with, per structure whose spec has ``itv``, every
  phase's contour (``GTV_T00`` … ``GTV_T90``) and the union over phases (``ITV``); structures without ``itv``
  contribute their mask of the reference phase (when the reference is a phase), one-volume masks go in as they are.
  Phase contours are drawn on the reference series' slices, which needs the same voxel positions: a phase whose
  grid differs is refused (``GridMismatchError``), never resampled.
- ``combined``: one RTSTRUCT referencing every phase series (and the reference), each phase's contours on its own
  series, plus the ITVs. Valid DICOM, but some planning systems import only structure sets on a single series.
- ``all``: the three.

The ITV of a GTV is named ITV (ITV_x for GTV_x) and typed CTV (DICOM has no ITV term; an ITV is a CTV with its
internal margin); the union of another structure is ``<name>_ITV`` with the structure's own type. With a margin
(``itv_margin_mm``), the ITV expanded by it follows the ITV as its own ROI (``ITV+5mm``, ``dicomrt.itv``). File names
come from ``dicomrt.layout``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from dicomrt.contours import MaskPolygons
from dicomrt.itv import build_itv, has_margin
from dicomrt.layout import OutputLayout
from dicomrt.phases import SeriesKind
from dicomrt.provenance import Provenance
from dicomrt.rt_errors import GridMismatchError, MaskShapeError, TemplateError
from dicomrt.rtstruct import RoiMask, RTStructureSet
from dicomrt.structures import COLOURS, PHASE_PALETTE, RoiType, StructureSpec, validate_template
from dicomrt.study import SeriesInfo, StudyIndex

logger = logging.getLogger(__name__)

Margin = float | Sequence[float]  # mm: one number, or (x, y, z) along the patient LPS axes

# SeriesNumber of what we write: per-phase RTSTRUCTs 901.., reference 950, combined 960, SEG 971.., AIP/MIP 980/981.
SERIES_NUMBER_PHASE = 901
SERIES_NUMBER_REFERENCE = 950
SERIES_NUMBER_COMBINED = 960


class OutputMode(StrEnum):
    PER_PHASE = "per-phase"
    REFERENCE = "reference"
    COMBINED = "combined"
    ALL = "all"


@dataclass(frozen=True, eq=False)
class StudyMasks:
    """Validated masks of one study: ``per_phase`` name → (phase, z, y, x) bool; ``single`` name → (z, y, x) bool;
    ``specs`` the template entries of the masks given, in template order."""

    index: StudyIndex
    specs: tuple[StructureSpec, ...]
    per_phase: dict[str, np.ndarray]
    single: dict[str, np.ndarray]


def check_masks(index: StudyIndex, masks: Mapping[str, np.ndarray], specs: Sequence[StructureSpec]) -> StudyMasks:
    """Masks checked against the study's grid and the template: every name in the template, shapes
    ``(phase, z, y, x)`` or ``(z, y, x)`` on the grid, boolean (or integer 0/1, converted)."""
    specs = validate_template(specs)
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(masks) - set(by_name))
    if unknown:
        raise TemplateError(f"masks {unknown} have no structure in the template (structures: {sorted(by_name)}); "
                            f"give a template that names them")
    if not masks:
        raise MaskShapeError("masks: expected at least one structure mask, got none")
    grid = index.reference.geometry.shape
    phases = len(index.phases)
    per_phase, single = {}, {}
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.dtype != bool:
            if not np.issubdtype(mask.dtype, np.integer) or not np.isin(np.unique(mask), (0, 1)).all():
                raise MaskShapeError(f"mask {name!r} must be boolean (or integers 0/1), got dtype {mask.dtype}")
            mask = mask.astype(bool)
        if mask.shape == (phases, *grid):
            per_phase[name] = mask
        elif mask.shape == grid:
            single[name] = mask
        else:
            raise MaskShapeError(f"mask {name!r}: expected shape (phase, z, y, x) {(phases, *grid)} or (z, y, x) "
                                 f"{grid} (the study's grid, z ascending in patient z), got {mask.shape}")
    if phases == 1:
        per_phase.update({name: mask[None] for name, mask in single.items()})
        single = {}
    chosen = tuple(s for s in specs if s.name in masks)
    return StudyMasks(index, chosen, per_phase, single)


def write_rtstructs(
    index: StudyIndex,
    masks: Mapping[str, np.ndarray] | StudyMasks,
    specs: Sequence[StructureSpec],
    out_dir: Path,
    mode: OutputMode | str,
    provenance: Provenance,
    *,
    reference: SeriesInfo | None = None,
    itv_margin_mm: Margin = 0.0,
) -> list[Path]:
    """Write the RTSTRUCTs of ``mode`` (see the module docstring) under ``out_dir``; returns the files written.

    ``reference``: the series of the reference RTSTRUCT (default ``index.reference``), e.g. an AIP written by
    ``dicomrt.derived``; it must be on the phases' grid. ``itv_margin_mm``: the margin of the expanded ITVs (0: none).
    """
    try:
        mode = OutputMode(mode)
    except ValueError:
        raise ValueError(f"mode must be one of {[m.value for m in OutputMode]}, got {mode!r}") from None
    checked = masks if isinstance(masks, StudyMasks) else check_masks(index, masks, specs)
    traced = StudyPolygons(checked, reference or index.reference, itv_margin_mm)
    layout = OutputLayout(Path(out_dir))
    written = []
    if mode in (OutputMode.PER_PHASE, OutputMode.ALL):
        written += [s.save(layout.phase_rtstruct(k)) for k, s in enumerate(per_phase_sets(traced, provenance))]
    if mode in (OutputMode.REFERENCE, OutputMode.ALL):
        written.append(reference_set(traced, provenance).save(layout.reference_rtstruct))
    if mode in (OutputMode.COMBINED, OutputMode.ALL):
        written.append(combined_set(traced, provenance).save(layout.combined_rtstruct))
    logger.info("study %s: wrote %d RTSTRUCT(s), mode %s", index.study_hash, len(written), mode.value)
    return written


class StudyPolygons:
    """The polygons of a study's masks and ITVs, each traced once, when first needed (``dicomrt.contours``): in mode
    "all", a phase's mask goes into its per-phase object, the combined one and (as a phase contour of a target or the
    reference phase's structure) the reference one; an ITV into the reference and the combined ones.

    ``reference``: the series the ITVs are built on (its geometry gives the margin's voxel sizes).
    ``itv_margin_mm``: the margin of the expanded ITVs (0: none).
    """

    def __init__(self, masks: StudyMasks, reference: SeriesInfo, itv_margin_mm: Margin = 0.0) -> None:
        self.masks, self.reference, self.itv_margin_mm = masks, reference, itv_margin_mm
        self._traced: dict[tuple[str, str, int], MaskPolygons] = {}

    def phase(self, name: str, k: int) -> MaskPolygons:
        """Structure ``name`` in phase ``k``."""
        return self._trace(("phase", name, k), lambda: self.masks.per_phase[name][k])

    def single(self, name: str) -> MaskPolygons:
        """The one-volume mask of structure ``name``."""
        return self._trace(("single", name, 0), lambda: self.masks.single[name])

    def itv(self, name: str, expanded: bool = False) -> MaskPolygons:
        """The ITV of structure ``name``, or (``expanded``) the ITV expanded by the margin."""
        margin = self.itv_margin_mm if expanded else 0.0
        return self._trace(("itv", name, int(expanded)),
                           lambda: build_itv(self.masks.per_phase[name], self.reference.geometry, margin))

    def _trace(self, key: tuple[str, str, int], mask: Callable[[], np.ndarray]) -> MaskPolygons:
        if key not in self._traced:
            self._traced[key] = MaskPolygons.trace(mask())
        return self._traced[key]


def per_phase_sets(traced: StudyPolygons, provenance: Provenance) -> list[RTStructureSet]:
    """One RTSTRUCT per phase series with that phase's masks."""
    masks = traced.masks
    sets = []
    for k, phase in enumerate(masks.index.phases):
        rois = [RoiMask(s.name, s.colour, s.interpreted_type, traced.phase(s.name, k))
                for s in masks.specs if s.name in masks.per_phase]
        sets.append(RTStructureSet(masks.index.attributes, [phase], rois, label=f"itvsam {_short(phase)}",
                                   description=f"itvsam contours, phase {phase.label}", provenance=provenance,
                                   series_number=SERIES_NUMBER_PHASE + k))
    return sets


def reference_set(traced: StudyPolygons, provenance: Provenance) -> RTStructureSet:
    """The RTSTRUCT on ``traced.reference``: ITVs with every phase's contours, other structures as described
    above."""
    masks, reference = traced.masks, traced.reference
    _check_same_grid(masks.index.phases, reference)
    reference_phase = _phase_of(masks.index, reference)
    phases = masks.index.phases
    rois = []
    for spec in masks.specs:
        if spec.name in masks.single:
            rois.append(RoiMask(spec.name, spec.colour, spec.interpreted_type, traced.single(spec.name)))
        elif spec.itv:
            rois += _itv_rois(spec, traced, 0)
            rois += [RoiMask(spec.phase_name(p.percent), _phase_colour(spec, k, len(phases)), spec.interpreted_type,
                             traced.phase(spec.name, k)) for k, p in enumerate(phases)]
        elif reference_phase is not None:
            rois.append(RoiMask(spec.name, spec.colour, spec.interpreted_type,
                                traced.phase(spec.name, reference_phase)))
    return RTStructureSet(masks.index.attributes, [reference], rois, label="itvsam ITV",
                          description=f"itvsam ITV and phase contours on {reference.label}", provenance=provenance,
                          series_number=SERIES_NUMBER_REFERENCE)


def combined_set(traced: StudyPolygons, provenance: Provenance) -> RTStructureSet:
    """One RTSTRUCT over every phase series (and the reference series when it is not a phase)."""
    masks, reference = traced.masks, traced.reference
    _check_same_grid(masks.index.phases, reference)
    series = list(masks.index.phases)
    at = _phase_of(masks.index, reference)
    if at is None:
        series.append(reference)
        at = len(series) - 1
    rois = []
    for spec in masks.specs:
        if spec.name in masks.single:
            rois.append(RoiMask(spec.name, spec.colour, spec.interpreted_type, traced.single(spec.name), at))
            continue
        rois += [RoiMask(spec.phase_name(phase.percent), _phase_colour(spec, k, len(series)), spec.interpreted_type,
                         traced.phase(spec.name, k), k) for k, phase in enumerate(masks.index.phases)]
        if spec.itv:
            rois += _itv_rois(spec, traced, at)
    return RTStructureSet(masks.index.attributes, series, rois, label="itvsam 4D",
                          description="itvsam contours of every phase (multi-series)", provenance=provenance,
                          series_number=SERIES_NUMBER_COMBINED)


def _itv_rois(spec: StructureSpec, traced: StudyPolygons, series_index: int) -> list[RoiMask]:
    """The ITV of ``spec`` and, with a margin, the expanded ITV after it."""
    target = spec.interpreted_type in (RoiType.GTV, RoiType.CTV)
    kind = RoiType.CTV if target else spec.interpreted_type
    rois = [RoiMask(spec.itv_name, COLOURS["ITV"] if target else spec.colour, kind, traced.itv(spec.name),
                    series_index)]
    if has_margin(traced.itv_margin_mm):
        rois.append(RoiMask(spec.itv_margin_name(traced.itv_margin_mm), COLOURS["ITV_margin"], kind,
                            traced.itv(spec.name, expanded=True), series_index))
    return rois


def _phase_colour(spec: StructureSpec, k: int, n: int) -> tuple[int, int, int]:
    return PHASE_PALETTE[k % len(PHASE_PALETTE)] if spec.itv and n > 1 else spec.colour


def _short(series: SeriesInfo) -> str:
    """A phase's tag in a 16-character label: T00 … T90 (T12.5), or CT."""
    return "CT" if series.percent is None else f"T{series.percent:02.0f}" if float(series.percent).is_integer() \
        else f"T{series.percent:g}"


def _phase_of(index: StudyIndex, series: SeriesInfo) -> int | None:
    """The position of ``series`` among the phases, None when it is not a phase (an AIP, a MIP)."""
    if series.kind not in (SeriesKind.PHASE, SeriesKind.CT):
        return None
    for k, phase in enumerate(index.phases):
        if phase.series_instance_uid == series.series_instance_uid and phase.percent == series.percent:
            return k
    return None


def _check_same_grid(phases: Sequence[SeriesInfo], reference: SeriesInfo) -> None:
    for phase in phases:
        mismatch = reference.geometry.mismatch(phase.geometry)
        if mismatch:
            raise GridMismatchError(f"phase {phase.label} is not on the slices of the reference series "
                                    f"{reference.label} ({mismatch}): refusing to draw its contours there")


def load_masks_npz(path: Path) -> dict[str, np.ndarray]:
    """The masks of an ``.npz`` file: keys are structure names, arrays (phase, z, y, x) or (z, y, x) on the study's
    grid with z ascending in patient z (checked later by ``check_masks``). Refuses pickled objects."""
    try:
        with np.load(Path(path), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError) as exc:
        raise MaskShapeError(f"{Path(path).name}: cannot read masks as an .npz of arrays ({exc})") from None
