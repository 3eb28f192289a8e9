"""Training recipes shared by ``itvsam train``, the ablation (``bench/bench_training.py``) and the phantom model.

``TrainingData`` says where the volumes come from (folders of annotated studies and/or in-memory phantom seeds);
``train_model`` starts from a model directory or from scratch (``model.scratch``) and runs a ``Trainer``.

``model/phantom_model`` was made by five ``itvsam train`` runs (from scratch at 224 px, a tumour-recall stage, the same
weights at 336 px, more tumour positives and negatives, the same weights at 448 px); its README gives the exact
commands and seeds, and its ``training_record.json`` the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomrt.structures import StructureSpec
from model.datasets import AnnotatedVolume, DomainShift, NameMapping, load_annotated, phantom_volumes
from model.scratch import init_model_dir, resize_model_dir
from model.training import ProgressCallback, Trainer, TrainMode, TrainResult, TrainSettings

PHANTOM_LABEL = "PHANTOM MODEL: for trying and commissioning the workflow on phantoms, NOT for patients"
PHANTOM_ARTIFACTS = ("sorting", "duplicate")
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class TrainingData:
    """Where training and validation volumes come from. ``data``/``val_data``: folders of annotated studies;
    ``phantom_seeds``/``val_seeds``: in-memory phantoms (all phases, ``artifacts`` injected, ``shift`` applied);
    ``phases``: which phases of each phantom to train on (None: all)."""

    data: tuple[Path, ...] = ()
    val_data: tuple[Path, ...] = ()
    phantom_seeds: tuple[int, ...] = ()
    val_seeds: tuple[int, ...] = ()
    artifacts: tuple[str, ...] = PHANTOM_ARTIFACTS
    shift: DomainShift = field(default_factory=DomainShift)
    mapping: NameMapping = field(default_factory=NameMapping)
    phases: tuple[int, ...] | None = None

    def load(self, template: Sequence[StructureSpec]) -> tuple[list[AnnotatedVolume], list[AnnotatedVolume]]:
        """(training volumes, validation volumes)."""
        train = load_annotated(self.data, template, self.mapping) if self.data else []
        val = load_annotated(self.val_data, template, self.mapping) if self.val_data else []
        for seed in self.phantom_seeds:
            train += phantom_volumes(seed, template, artifacts=self.artifacts, phases=self.phases, shift=self.shift)
        for seed in self.val_seeds:
            val += phantom_volumes(seed, template, artifacts=self.artifacts, shift=self.shift)
        overlap = set(self.phantom_seeds) & set(self.val_seeds)
        if overlap:
            raise ValueError(f"validation seeds {sorted(overlap)} are also training seeds")
        return train, val

    def record(self) -> dict[str, Any]:
        return {"data": [str(p) for p in self.data], "validation_data": [str(p) for p in self.val_data],
                "train_seeds": list(self.phantom_seeds), "validation_seeds": list(self.val_seeds),
                "phantom_artifacts": list(self.artifacts), "domain_shift": self.shift.__dict__,
                "phases": None if self.phases is None else list(self.phases)}


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """``"100-103,110"`` → (100, 101, 102, 103, 110); None or "" → ()."""
    if not text:
        return ()
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
        except ValueError:
            raise ValueError(f"seeds must look like 100-103,110, got {text!r}") from None
    return tuple(seeds)


def train_model(out_dir: Path, data: TrainingData, template: Sequence[StructureSpec], settings: TrainSettings, *,
                model_dir: Path | None = None, image_size: int | None = None, init_seed: int = 0,
                resume: bool = False, device: str = "cpu", progress: ProgressCallback | None = None,
                command: str | None = None) -> TrainResult:
    """Train into ``out_dir`` from ``model_dir``, or from scratch (``model_dir`` None: an initialised tiny-architecture
    model at ``image_size``, default 224, written to ``out_dir/init``). With ``model_dir`` and an ``image_size`` (full
    training only), the model is first copied to that input size (``model.scratch.resize_model_dir``) into
    ``out_dir/init``. Returns the result (best in ``out_dir/best``)."""
    out_dir = Path(out_dir)
    init_dir = out_dir / "init"
    if model_dir is None:
        init: dict[str, Any] | None = {"image_size": image_size or DEFAULT_IMAGE_SIZE, "seed": init_seed}
        if not (resume and (init_dir / "config.json").is_file()):
            init_model_dir(init_dir, image_size=image_size or DEFAULT_IMAGE_SIZE, seed=init_seed)
        model_dir = init_dir
    elif image_size is not None:
        if settings.mode is not TrainMode.FULL:
            raise ValueError("a new input size (image_size) needs full training: a LoRA adapter is applied to its "
                             "base model as it is")
        init = {"image_size": image_size, "resized_from": str(model_dir)}
        if not (resume and (init_dir / "config.json").is_file()):
            resize_model_dir(model_dir, init_dir, image_size=image_size)
        model_dir = init_dir
    else:
        init = None
    train, val = data.load(template)
    record = {**data.record(), "command": command, "init": init}
    trainer = Trainer(model_dir, train, val, template, out_dir, settings, device=device, data_record=record)
    return trainer.run(progress, resume=resume)
