"""Commissioning a model directory (``itvsam check-model``): load it as the worker does and time one slice.

What a physicist runs before pointing a worker at a new model: the directory (and adapter) load with every weight
accounted for, the identity that every result will carry, the parameter count, the dtype and device inference runs
in, the calibrated thresholds, and one slice through the production predictor at the model's input size with every
structure of the template: its latency (the second of two runs, the first warms up) and the peak memory (CUDA: torch's
``max_memory_allocated`` over the slice runs; elsewhere: the process's peak resident set size, which includes the
load).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dicomrt.structures import StructureSpec
from model.identity import ModelIdentity
from model.network import Sam3SliceNetwork
from model.predictor import PredictorSettings, SlicePredictor
from model.sam3 import inference_dtype, load_sam3

SLICE_SHAPE = (512, 512)


@dataclass(frozen=True)
class ModelCheck:
    """What ``check_model`` found. ``peak_memory_bytes`` is measured as ``memory_measure`` says."""

    identity: ModelIdentity
    parameters: int
    dtype: str
    device: str
    image_size: int
    load_s: float
    slice_s: float
    peak_memory_bytes: int
    memory_measure: str


def chest_slice(shape: tuple[int, int] = SLICE_SHAPE) -> np.ndarray:
    """A (y, x) HU slice shaped like an axial chest section (air, a soft-tissue body, two lungs): only for timing."""
    y, x = np.mgrid[-1:1:complex(0, shape[0]), -1:1:complex(0, shape[1])]
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[(x / 0.9) ** 2 + (y / 0.65) ** 2 <= 1] = 40
    for side in (-0.4, 0.4):
        hu[((x - side) / 0.3) ** 2 + (y / 0.45) ** 2 <= 1] = -820
    return hu


def check_model(model_dir: Path, template: Sequence[StructureSpec], *, adapter_dir: Path | None = None,
                device: str = "cpu") -> ModelCheck:
    """Load ``model_dir`` (+ ``adapter_dir``) on ``device`` and run one slice (see the module docstring).

    Raises ``model.sam3.ModelLoadError`` for a directory that is missing, incomplete or does not match SAM 3.
    """
    dtype = inference_dtype(device)
    started = time.perf_counter()
    loaded = load_sam3(model_dir, adapter_dir=adapter_dir, device=device, dtype=dtype)
    load_s = time.perf_counter() - started
    predictor = SlicePredictor(Sam3SliceNetwork.from_loaded(loaded),
                               PredictorSettings(batch_size=1, device=device, dtype=dtype))
    volume = chest_slice()[None]
    prompts = {spec.name: spec.prompts for spec in template}
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    predictor.predict(volume, prompts)
    started = time.perf_counter()
    predictor.predict(volume, prompts)
    if cuda:
        torch.cuda.synchronize(device)
    slice_s = time.perf_counter() - started
    if cuda:
        peak, measure = int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    else:
        peak, measure = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"
    return ModelCheck(identity=loaded.identity, parameters=sum(p.numel() for p in loaded.model.parameters()),
                      dtype=str(dtype).removeprefix("torch."), device=str(device),
                      image_size=loaded.image_spec.image_size, load_s=load_s, slice_s=slice_s,
                      peak_memory_bytes=peak, memory_measure=measure)
