"""Every phase of a study through the slice predictor: the one path from CT volumes to per-structure masks, used by
the job pipeline (``workers.pipeline.run_job``), ``itvsam eval`` (``model.evaluate``) and the ablation bench.

Torch-free: the predictor is passed in (``model.predictor.SlicePredictor`` or anything with its ``predict``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from dicomrt.structures import StructureSpec

# (phase index, slices done in the phase, slices in the phase)
PhaseProgress = Callable[[int, int, int], None]


class Predictor(Protocol):
    def predict(self, volume_hu: np.ndarray, structures: Mapping[str, Sequence[str]],
                progress: Callable[[int, int], None] | None = None) -> Mapping[str, Any]:
        """(z, y, x) HU → name → an object with ``probability`` (z, y, x) float in [0, 1]."""


def predict_phases(predictor: Predictor, volumes: Sequence[np.ndarray], template: Sequence[StructureSpec],
                   thresholds: Mapping[str, float], progress: PhaseProgress | None = None) -> dict[str, np.ndarray]:
    """Per structure of ``template`` a (phase, z, y, x) bool mask: the predictor's probability ≥ the structure's
    threshold, for each (z, y, x) HU volume of ``volumes`` (the phases, in percent order, on one grid).

    Thresholded phase by phase, so that a full-size study holds bool volumes (1 byte a voxel), not float ones: the
    image encoder runs once per slice and every structure's prompt reuses its features (``SlicePredictor``).
    """
    prompts = {spec.name: spec.prompts for spec in template}
    shape = (len(volumes), *volumes[0].shape)
    masks = {name: np.zeros(shape, dtype=bool) for name in prompts}
    for k, volume in enumerate(volumes):
        def on_batch(done: int, total: int, k: int = k) -> None:
            if progress is not None:
                progress(k, done, total)

        for name, prediction in predictor.predict(volume, prompts, progress=on_batch).items():
            masks[name][k] = prediction.probability >= thresholds[name]
    return masks
