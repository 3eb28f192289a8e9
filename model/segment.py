"""Every phase of a study through the slice predictor: the one path from CT volumes to per-structure masks, used by
the job pipeline (``workers.pipeline.run_job``), ``itvsam eval`` (``model.evaluate``) and the ablation bench.

Torch-free: the predictor is passed in (``model.predictor.SlicePredictor`` or anything with its ``predict``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from dicomrt.structures import StructureSpec
from model.refine import to_evidence

# (phase index, slices done in the phase, slices in the phase)
PhaseProgress = Callable[[int, int, int], None]


class Predictor(Protocol):
    def predict_volumes(self, volumes_hu: Sequence[np.ndarray], structures: Mapping[str, Sequence[str]],
                        progress: Callable[[int, int], None] | None = None
                        ) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """(z, y, x) HU volumes → ``(k, name → an object with probability (z, y, x) float in [0, 1])`` per volume, as
        each is done; ``progress(done, total)`` counts slices of all volumes."""


def predict_phases(predictor: Predictor, volumes: Sequence[np.ndarray], template: Sequence[StructureSpec],
                   thresholds: Mapping[str, float], progress: PhaseProgress | None = None) -> dict[str, np.ndarray]:
    """Per structure of ``template`` its (phase, z, y, x) uint8 evidence (``model.refine.to_evidence``: the
    predictor's probability relative to the structure's threshold, ≥ ``EVIDENCE_THRESHOLD`` where the probability is
    at least the threshold), for each (z, y, x) HU volume of ``volumes`` (the phases, in percent order, on one
    grid).

    The phases go through the predictor as one stream of slices (``SlicePredictor.predict_volumes``: the image encoder
    runs once per slice, in full batches across phase boundaries, and every structure's prompt reuses its features),
    and each phase becomes evidence as soon as it is done, so a full-size study holds 1 byte a voxel per structure, as
    a mask would, with the sub-threshold response that refilling a dropout uses (``model.refine``, step 5).
    """
    prompts = {spec.name: spec.prompts for spec in template}
    shape = (len(volumes), *volumes[0].shape)
    evidence = {name: np.zeros(shape, dtype=np.uint8) for name in prompts}
    starts = np.cumsum([0] + [len(v) for v in volumes])

    def on_batch(done: int, total: int) -> None:
        if progress is not None:
            k = min(int(np.searchsorted(starts, done, side="right")) - 1, len(volumes) - 1)
            progress(k, done - int(starts[k]), len(volumes[k]))

    for k, prediction in predictor.predict_volumes(volumes, prompts, progress=on_batch):
        for name, structure in prediction.items():
            evidence[name][k] = to_evidence(structure.probability, thresholds[name])
    return evidence
