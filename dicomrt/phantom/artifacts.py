"""4DCT artefacts injected into one phase: a mis-sorted slab, or a duplicated slab.

Both replace a slab of whole slices (image and truth masks alike, so the masks keep following the image):

- ``sorting``: slices ``[start, stop)`` of phase P show the same slices of the phase half a cycle away (the classic
  mis-binned couch position of a 4DCT), through the tumour;
- ``duplicate``: slices ``[start, stop)`` of phase P show slices ``[stop, stop + (stop - start))`` of the same phase
  (the slab above, towards the head), so that the slab just below the tumour's centre repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomrt.phantom.config import Artifact

Array = np.ndarray
SLAB_SLICES = (3, 5)  # thickness range (slices) of an artefact slab


@dataclass(frozen=True)
class ArtifactRecord:
    """One injected artefact: ``phase_index`` (into the phantom's phases), the altered z slices ``[start, stop)``, and
    where their content came from (``source_phase_index``, ``source_slices``)."""

    kind: Artifact
    phase_index: int
    percent: float
    slices: tuple[int, int]
    source_phase_index: int
    source_percent: float
    source_slices: tuple[int, int]
    z_mm: tuple[float, float]  # LPS z of the first and last altered slice

    def describe(self) -> str:
        first, last = self.slices[0], self.slices[1] - 1
        where = f"slices {first}-{last} (z {self.z_mm[0]:.1f} to {self.z_mm[1]:.1f} mm) of phase {self.percent:g}%"
        if self.kind is Artifact.SORTING:
            return f"sorting artifact: {where} show the same slices of phase {self.source_percent:g}%"
        return (f"duplicate artifact: {where} show a copy of slices {self.source_slices[0]}-"
                f"{self.source_slices[1] - 1} of the same phase (the slab above)")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "phase_index": self.phase_index,
            "percent": self.percent,
            "slices": {"start": self.slices[0], "stop": self.slices[1]},
            "source_phase_index": self.source_phase_index,
            "source_percent": self.source_percent,
            "source_slices": {"start": self.source_slices[0], "stop": self.source_slices[1]},
            "z_mm": list(self.z_mm),
            "description": self.describe(),
        }


def plan_artifacts(rng: np.random.Generator, kinds: tuple[Artifact, ...], percents: tuple[float, ...],
                   gtv: Array, z_mm: Array) -> tuple[ArtifactRecord, ...]:
    """Where each artefact goes: distinct phases drawn from ``rng``, slabs of 3-5 slices at the tumour.

    ``gtv``: (phase, z, y, x) bool; ``z_mm``: (z,) LPS z of the slices.
    """
    n_phases, nz = gtv.shape[:2]
    phases = rng.choice(n_phases, size=len(kinds), replace=False)
    records = []
    for kind, phase in zip(kinds, phases, strict=True):
        phase = int(phase)
        thickness = int(rng.integers(SLAB_SLICES[0], SLAB_SLICES[1] + 1))
        rows = np.nonzero(gtv[phase].any(axis=(1, 2)))[0]
        centre = round(float(rows.mean())) if len(rows) else nz // 2
        if kind is Artifact.SORTING:
            start = int(np.clip(centre - thickness // 2, 0, nz - thickness))
            source_phase, source_start = (phase + n_phases // 2) % n_phases, start
        else:
            start = int(np.clip(centre - thickness, 0, nz - 2 * thickness))
            source_phase, source_start = phase, start + thickness
        records.append(ArtifactRecord(kind, phase, percents[phase], (start, start + thickness), source_phase,
                                      percents[source_phase], (source_start, source_start + thickness),
                                      (float(z_mm[start]), float(z_mm[start + thickness - 1]))))
    return tuple(records)


def apply_artifacts(records: tuple[ArtifactRecord, ...], volumes: list[Array]) -> None:
    """Copy each artefact's source slab into its slab, in every (phase, z, y, x) array of ``volumes`` (in place).

    All sources are read before anything is written, so every artefact shows artefact-free content."""
    for volume in volumes:
        sources = [volume[r.source_phase_index, slice(*r.source_slices)].copy() for r in records]
        for record, source in zip(records, sources, strict=True):
            volume[record.phase_index, slice(*record.slices)] = source
