"""A job's typed results, from the refining stage to the end: per structure its refined masks, report, motion and
ITV (``StructureResult``), and the whole job (``JobResult``), whose ``flags`` and ``summary`` (the JSON of
``summary.json`` and the API) are made here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomrt.outputs import WrittenOutputs
from dicomrt.provenance import software_version
from dicomrt.structures import StructureSpec
from dicomrt.study import Study4D, index_summary
from jobs.options import JobOptions
from model.identity import ModelIdentity
from model.motion import Motion
from model.refine import PhaseMasks, RefillSource


@dataclass(frozen=True, eq=False)
class StructureResult:
    """One structure over the phases. ``threshold``: the one its probability was cut at; ``masks``: the evidence, raw
    and refined (phase, z, y, x) masks with the refinement report; ``itv``: (z, y, x) bool union over phases
    (structures whose spec has ``itv``), ``itv_expanded`` the same expanded by the job's margin (None without one)."""

    spec: StructureSpec
    threshold: float
    masks: PhaseMasks
    motion: Motion
    itv: np.ndarray | None = None
    itv_expanded: np.ndarray | None = None

    @property
    def refined(self) -> np.ndarray:
        return self.masks.refined

    @property
    def observed_phases(self) -> tuple[int, ...]:
        """The phases (indices) where the structure was found and nothing was refilled."""
        filled = set(self.masks.report.filled_phases)
        return tuple(k for k, mask in enumerate(self.refined) if mask.any() and k not in filled)

    def observed_itv(self) -> np.ndarray:
        """The union over the observed phases only: what the ITV would be without its refills (a phase with any
        refill is left out whole; empty when nothing was observed)."""
        return self.refined[list(self.observed_phases)].any(axis=0)


@dataclass(frozen=True, eq=False)
class JobResult:
    study: Study4D
    options: JobOptions
    identity: ModelIdentity
    structures: tuple[StructureResult, ...]
    outputs: WrittenOutputs
    timings: dict[str, float]  # per stage (reading_s, model_s, refining_s, writing_s), total_s, wall_s, overlap_s

    @property
    def phase_labels(self) -> list[str]:
        return [p.label for p in self.study.phases]

    def structure(self, name: str) -> StructureResult:
        return next(r for r in self.structures if r.spec.name == name)

    def flags(self) -> list[str]:
        """What a physicist should look at before using the contours: empty phases, refilled phases (by what, and
        those at a motion extreme, where the ITV's excursion rests on a refill), removed artefacts and unsupported
        parts, and, for a target, components removed beyond its template's object count (a second lesion?)."""
        flags = []
        phases = self.phase_labels
        for result in self.structures:
            name, report = result.spec.name, result.masks.report
            empty = [phases[k] for k, v in enumerate(result.motion.volumes_ml) if v == 0]
            if empty:
                flags.append(f"{name}: empty in {len(empty)} of {len(phases)} phase(s) ({', '.join(empty)})")
            for source, how in ((RefillSource.MOTION, "at the position of the periodic motion model (the "
                                 "neighbouring phases' shape)"),
                                (RefillSource.EVIDENCE, "from the model's own sub-threshold response")):
                filled = sorted({r.phase for r in report.refills if r.source is source})
                if filled:
                    flags.append(f"{name}: missing in phase(s) {', '.join(phases[k] for k in filled)}, refilled "
                                 f"{how}")
            risk = f": the {result.spec.itv_name}'s excursion there rests on the refill, check it" \
                if result.spec.itv else ""
            flags.extend(f"{name}: phase {phases[k]} refilled at a motion extreme{risk}" for k in report.extreme_phases)
            if sum(report.removed_temporal):
                flags.append(f"{name}: {sum(report.removed_temporal)} component(s) present in too few phases "
                             f"removed")
            excess = [phases[k] for k, n in enumerate(report.removed_excess) if n]
            if excess:
                flags.append(f"{name}: {sum(report.removed_excess)} part(s) that the other phases do not support "
                             f"removed in phase(s) {', '.join(excess)} (a transient next to the lesion?)")
            extra = [phases[k] for k, n in enumerate(report.removed_extra) if n]
            if result.spec.itv and extra:
                flags.append(f"{name}: {sum(report.removed_extra)} smaller component(s) in {len(extra)} phase(s) "
                             f"removed beyond the template's {result.spec.components} object(s): check for another "
                             f"lesion")
        return flags

    def summary(self) -> dict[str, Any]:
        """The JSON summary (``summary.json``): software and model, study (hashes, no patient data), per structure
        its volumes, centroids, motion, refinement, ITV and threshold, the flags, timings, outputs and options."""
        layout = self.outputs.layout
        voxel_ml = self.study.phases[0].geometry.voxel_volume_ml
        structures = {}
        for result in self.structures:
            entry: dict[str, Any] = {"phases": self.phase_labels, **result.motion.to_dict(),
                                     "refinement": result.masks.report.to_dict()}
            if result.itv is not None:
                refilled = result.masks.report.filled_phases
                entry["itv"] = {"name": result.spec.itv_name, "volume_ml": round(float(result.itv.sum()) * voxel_ml, 4),
                                "observed_phases": [self.phase_labels[k] for k in result.observed_phases],
                                "refilled_phases": [self.phase_labels[k] for k in refilled],
                                "volume_observed_ml": round(float(result.observed_itv().sum()) * voxel_ml, 4)}
                if result.itv_expanded is not None:
                    margin = self.options.itv_margin_mm
                    entry["itv"]["expanded"] = {
                        "name": result.spec.itv_margin_name(margin),
                        "margin_mm": margin if isinstance(margin, float) else list(margin),
                        "volume_ml": round(float(result.itv_expanded.sum()) * voxel_ml, 4)}
            entry["threshold"] = result.threshold
            structures[result.spec.name] = entry
        return {
            "software_version": software_version(),
            "model": self.identity.to_dict(),
            "study": index_summary(self.study.index),
            "reference_rtstruct_series": self.outputs.reference.label,
            "structures": structures,
            "flags": self.flags(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "outputs": {
                "rtstruct": [p.name for p in self.outputs.rtstructs],
                "seg": [layout.relative(p) for p in self.outputs.segs],
                "derived": sorted(p.relative_to(layout.root).as_posix() for p in layout.derived.glob("*")
                                  if p.is_dir()),
                "report": layout.relative(layout.report),
            },
            "options": self.options.to_json(),
        }
