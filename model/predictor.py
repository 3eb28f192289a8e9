"""The slice predictor: a (z, y, x) HU volume and text prompts → a probability volume and presence per structure.

Inference strategy only; the network is passed in (``SliceNetwork``: ``Sam3SliceNetwork`` in production, a function
stub in unit tests). Per batch of axial slices the image encoder runs once, then every prompt of every structure is
decoded on the same features; text prompts are encoded once per call. The phases of a 4DCT go through as one stream
(``predict_volumes``): a batch takes the last slices of one phase and the first of the next, so every batch but the
last is full, and each phase is handed back as soon as it is done. On CUDA the slices travel as int16 HU from
page-locked memory, asynchronously (``model.preprocess.ct_to_images``). A structure with several prompts takes the
voxel-wise maximum of their probabilities (and of their presence scores). Probabilities are resized from the model's
mask grid back to the slice grid on the compute device, then copied to host memory as float32.

On CUDA use ``dtype=torch.bfloat16`` (the network must have been cast to it). Prediction runs under
``torch.inference_mode()``. A batch that raises ``torch.OutOfMemoryError`` is retried at half the batch size (down to
1, where the error propagates); the smaller size is kept for the remaining slices.

Instance masks or semantic map (``model.network``): the default is their pixel-wise maximum (``MaskSource.UNION``)
without presence gating; the presence score is returned per slice. Measured with ``bench/bench_engine.py
--mask-source``: the tiny model trained from scratch (2000 steps, batch 8, every head supervised equally) on the
phantom of seed 0, evaluated on seed 1 (phases 0 % and 50 %, threshold 0.5). Only the heart was learned in that
budget (lungs left/right and the 1.5 cm GTV stayed at Dice 0), so the comparison rests on it. Heart Dice, two runs:

=============  ==================  ==================
source         run 1 (ungated /    run 2 (ungated /
               presence-gated)     presence-gated)
=============  ==================  ==================
semantic       0.761 / 0.700       0.000 / 0.000
instances      — / 0.698           0.771 / 0.770
union          0.774 / —           0.772 / 0.771
=============  ==================  ==================

The semantic head alone was unstable (it collapsed to background in one run), the instance union held, and the union
of both was the best or tied in both; multiplying by the presence score never helped at a fixed 0.5 threshold (it
lowered the semantic map's Dice by 0.06) and sporadic false positives are removed later by the phase-coherent filter,
so the map is not gated. This is a tiny model trained briefly, not SAM 3's pretrained heads: re-measure with the real
checkpoint and LoRA (the predictor takes ``MaskSource`` and ``presence_gating`` explicitly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from model.preprocess import ImageSpec, ct_to_images, to_slice_grid

logger = logging.getLogger(__name__)


class SliceMapsLike(Protocol):
    probability: torch.Tensor  # (b, h, w) in [0, 1]
    presence: torch.Tensor  # (b,) in [0, 1]


class SliceNetwork(Protocol):
    """What the predictor needs from a network (``model.network.Sam3SliceNetwork`` implements it)."""

    image_spec: ImageSpec

    def encode_images(self, images: torch.Tensor) -> object:
        """(b, 3, S, S) normalised images → opaque features reused for every prompt."""

    def encode_prompts(self, prompts: Sequence[str]) -> Sequence[object]:
        """Text prompts → one opaque embedding each."""

    def decode(self, image_features: object, prompt: object) -> SliceMapsLike:
        """Features of b images and one prompt embedding → (b, h, w) probabilities and (b,) presence."""


@dataclass(frozen=True)
class StructurePrediction:
    """One structure on one volume: ``probability`` (z, y, x) float32 in [0, 1] on the slice grid, ``presence`` (z,)
    float32 in [0, 1] per slice (max over the structure's prompts)."""

    probability: np.ndarray
    presence: np.ndarray


@dataclass(frozen=True)
class PredictorSettings:
    """``batch_size``: slices per image-encoder call (halved on OOM). ``device``/``dtype``: where and in what the
    images are made (must match the network's). Results are always assembled on the host as float32 numpy."""

    batch_size: int = 8
    device: str = "cpu"
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


ProgressCallback = Callable[[int, int], None]


class SlicePredictor:
    """Runs a ``SliceNetwork`` over the axial slices of volumes (see the module docstring)."""

    def __init__(self, network: SliceNetwork, settings: PredictorSettings = PredictorSettings()) -> None:
        self.network = network
        self.settings = settings
        self.batch_size = settings.batch_size  # current size: lowered for good after an OOM

    def predict(
        self,
        volume_hu: np.ndarray,
        structures: Mapping[str, Sequence[str]],
        progress: ProgressCallback | None = None,
    ) -> dict[str, StructurePrediction]:
        """Predict every structure on every axial slice of ``volume_hu``.

        ``volume_hu``: (z, y, x) Hounsfield units. ``structures``: name → its text prompts (at least one each).
        ``progress(done_slices, total_slices)`` is called after each batch. Returns name → ``StructurePrediction``.
        """
        (_, prediction), = self.predict_volumes([volume_hu], structures, progress)
        return prediction

    @torch.inference_mode()
    def predict_volumes(
        self,
        volumes_hu: Sequence[np.ndarray],
        structures: Mapping[str, Sequence[str]],
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[int, dict[str, StructurePrediction]]]:
        """Predict several volumes (the phases of a 4DCT) as one stream of full batches: the last slices of a volume
        and the first of the next share a batch when their slices have the same shape. Yields ``(k, prediction)``
        for volume k as soon as its last slice is done, in order, so only the volumes in flight are held.

        ``progress(done_slices, total_slices)`` counts slices of all volumes together. A volume's slices are only
        taken when the stream reaches them (its ``shape`` is read before): ``volumes_hu`` may be phases still being
        read (``workers.pipeline``), whose slicing waits for them.
        """
        volumes = list(volumes_hu)
        bad = [v.shape for v in volumes if len(v.shape) != 3]
        if bad or not volumes:
            raise ValueError(f"volume_hu must be (z, y, x), got shape {bad[0] if bad else 'no volume'}")
        empty = [name for name, prompts in structures.items() if not prompts]
        if empty or not structures:
            raise ValueError(f"every structure needs at least one prompt; none for {empty or 'any structure'}")
        names = list(structures)
        prompts = [p for name in names for p in structures[name]]
        owner = [i for i, name in enumerate(names) for _ in structures[name]]
        embeddings = self.network.encode_prompts(prompts)
        total = sum(len(v) for v in volumes)
        slots = [(k, z) for k, v in enumerate(volumes) for z in range(len(v))]
        pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        start = 0
        while start < total:
            stop = min(total, start + self.batch_size)
            shape = volumes[slots[start][0]].shape[1:]
            stop = next((i for i in range(start, stop) if volumes[slots[i][0]].shape[1:] != shape), stop)
            pieces = _pieces(slots[start:stop])
            try:
                batch_probability, batch_presence = self._batch(
                    np.concatenate([volumes[k][z0:z1] for k, z0, z1 in pieces]), embeddings, owner, len(names))
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                logger.warning("out of memory at %d slices per batch; retrying with %d", stop - start,
                               self.batch_size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            at = 0
            for k, z0, z1 in pieces:
                if k not in pending:
                    pending[k] = (np.zeros((len(names), *volumes[k].shape), dtype=np.float32),
                                  np.zeros((len(names), len(volumes[k])), dtype=np.float32))
                probability, presence = pending[k]
                probability[:, z0:z1] = batch_probability[:, at:at + z1 - z0]
                presence[:, z0:z1] = batch_presence[:, at:at + z1 - z0]
                at += z1 - z0
            start = stop
            if progress is not None:
                progress(start, total)
            in_flight = slots[start][0] if start < total else len(volumes)
            for k in sorted(pending):
                if k < in_flight:
                    probability, presence = pending.pop(k)
                    yield k, {name: StructurePrediction(probability=probability[i], presence=presence[i])
                              for i, name in enumerate(names)}

    def _batch(self, slices_hu: np.ndarray, embeddings: Sequence[object], owner: Sequence[int], n_structures: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """One batch: (s, n_structures, y, x) probabilities → host (n_structures, s, y, x), and presence (n, s)."""
        images = ct_to_images(slices_hu, self.network.image_spec, device=self.settings.device,
                              dtype=self.settings.dtype)
        features = self.network.encode_images(images)
        shape = slices_hu.shape[1:]
        best = torch.zeros((n_structures, len(slices_hu), *shape), device=images.device)
        best_presence = torch.zeros((n_structures, len(slices_hu)), device=images.device)
        for embedding, index in zip(embeddings, owner, strict=True):
            maps = self.network.decode(features, embedding)
            best[index] = torch.maximum(best[index], to_slice_grid(maps.probability, shape).clamp_(0.0, 1.0))
            best_presence[index] = torch.maximum(best_presence[index], maps.presence.float())
        return best.cpu().numpy(), best_presence.cpu().numpy()


def _pieces(slots: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Consecutive (volume, slice) slots → (volume, first slice, stop slice) runs, in order."""
    pieces: list[tuple[int, int, int]] = []
    for k, z in slots:
        if pieces and pieces[-1][0] == k and pieces[-1][2] == z:
            pieces[-1] = (k, pieces[-1][1], z + 1)
        else:
            pieces.append((k, z, z + 1))
    return pieces
