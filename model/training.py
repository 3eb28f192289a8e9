"""Training SAM 3 on annotated CT slices: LoRA (peft) on the image encoder, or full training (the phantom model).

One step (``Trainer.step``): the sampler (``model.mining``) draws ``slices`` anchor items; their slices are augmented
(``model.samples``) and preprocessed by the one shared function (``model.preprocess.ct_to_images``); the image
encoder runs once per slice and every item (anchor structures, plus every other structure with ``companions``) is
decoded with one of its structure's text prompts; the loss (``model.losses``) is averaged over items and the
per-item losses go back to the mining table. The learning rate warms up linearly for ``warmup`` steps, then follows
a cosine down to 10 %. Gradients are clipped to ``grad_clip``.

What makes the official architecture (840 M parameters, 1008 px: 5,184 tokens per slice through 32 ViT layers) fit
one consumer GPU, measured by ``bench/bench_training_memory.py`` (its figures are in the README):

- activation checkpointing (``checkpointing``): each ``Sam3ViTLayer`` keeps only its input and recomputes the rest
  in the backward pass (``checkpoint_vit_layers``), and each item is decoded and scored (DETR encoder and decoder,
  mask decoder at a quarter of the input size, the loss on its 200 query masks) inside a checkpoint of its own, so
  the backward pass holds one item's decoder activations at a time instead of every item's;
- the prompts' text embeddings computed once per run in LoRA mode (``cache_text``): the text encoder (354 M
  parameters) and its projection are frozen there, so a CLIP forward per step would give the same embeddings;
- micro-batches (``micro_batch`` slices per forward, gradients accumulated, so a step is still ``slices`` slices and
  its gradient that of the mean item loss); a CUDA out-of-memory error in a step halves the micro-batch and redoes the
  step, recorded in ``training_record.json`` (``events``) and kept for the rest of the run;
- bf16 autocast (``bf16``; default: on CUDA only; on CPU as an option, to measure memory there).

Every ``epoch_steps`` steps: the sampler re-ranks items (online hard mining), the validation volumes are predicted
(the production ``SlicePredictor``; Dice and HD95 at threshold 0.5, before refinement), a checkpoint is written
(``OUT/checkpoint``: trainable weights, optimizer, sampler table, random states), and when the mean Dice over
structures improves the best result is saved in ``OUT/best``: a peft adapter (LoRA) or a model directory (full),
with ``training_record.json`` (data, settings, metrics, history) and the per-structure thresholds calibrated on the
validation volumes (``model.calibration``). ``resume=True`` continues from the checkpoint
bit for bit (same data and settings required). Deterministic given ``seed`` (on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedTokenizerBase, Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3ViTLayer

from dicomrt.structures import StructureSpec
from model.calibration import calibrate, dice_curve, write_calibration
from model.datasets import AnnotatedVolume
from model.lora import LoraSettings, apply_lora, save_adapter
from model.losses import LossSettings, item_losses
from model.metrics import dice, hd95
from model.mining import HardNegativeSampler, MiningSettings
from model.preprocess import TEXT_MAX_LENGTH, ImageSpec, ct_to_images, masks_to_model_grid
from model.sam3 import (
    MODEL_LABEL,
    PROCESSOR_FILES,
    TOKENIZER_FILES,
    image_spec_for,
    load_base_model,
    share_files,
    without_progress_bars,
)
from model.samples import AugmentSettings, Batch, SampleIndex, make_batch

logger = logging.getLogger(__name__)

RECORD = "training_record.json"


class TrainMode(StrEnum):
    LORA = "lora"  # LoRA on the ViT attention (peft), everything else frozen
    FULL = "full"  # every parameter (training a base model, e.g. from scratch)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a training run besides the data (recorded in ``training_record.json``).

    ``steps``: optimiser steps; ``epoch_steps``: steps between re-ranking, validation and checkpoint; ``slices``:
    anchor items (slices) per step; ``lr``, ``weight_decay`` (AdamW), ``warmup`` (steps), ``grad_clip`` (norm);
    ``val_phases``: which phases of each validation study are predicted at each validation (None: all);
    ``label``: written to ``itvsam_model.json`` of a full-training result (e.g. that it is a phantom model).
    Memory (module docstring): ``micro_batch`` slices per forward (None: one in LoRA mode, which is what fits the
    official architecture at 1008 px on a 24 GB GPU; all ``slices`` at once in full mode, the tiny architecture),
    ``checkpointing`` (the ViT layers and each item's decoding), ``cache_text`` (LoRA mode only: the text encoder is
    frozen there), ``bf16`` autocast (None: on CUDA only).
    """

    mode: TrainMode = TrainMode.LORA
    lora: LoraSettings = field(default_factory=LoraSettings)
    steps: int = 1000
    epoch_steps: int = 100
    slices: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    loss: LossSettings = field(default_factory=LossSettings)
    mining: MiningSettings = field(default_factory=MiningSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    val_phases: tuple[int, ...] | None = (0, 5)
    label: str | None = None
    micro_batch: int | None = None
    checkpointing: bool = True
    cache_text: bool = True
    bf16: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", TrainMode(self.mode))
        if self.steps < 1 or self.epoch_steps < 1 or self.slices < 1:
            raise ValueError(f"steps, epoch_steps and slices must be positive, got {self.steps}, {self.epoch_steps}, "
                             f"{self.slices}")
        if self.micro_batch is not None and not 1 <= self.micro_batch <= self.slices:
            raise ValueError(f"micro_batch must be between 1 and slices ({self.slices}), got {self.micro_batch}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["mode"] = self.mode.value
        return data


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every step: ``loss`` of the step and its running mean over the epoch; ``validation`` after
    an epoch (structure → {dice, hd95_mm}); ``best`` mean Dice so far."""

    step: int
    steps: int
    epoch: int
    loss: float
    mean_loss: float
    lr: float
    validation: dict[str, dict[str, float]] | None = None
    best: float | None = None


ProgressCallback = Callable[[TrainProgress], None]


@dataclass(frozen=True)
class TrainResult:
    best_dir: Path
    best_epoch: int
    best_metrics: dict[str, dict[str, float]]
    seconds: float
    history: list[dict[str, Any]]


def checkpoint_vit_layers(model: torch.nn.Module) -> int:
    """Turn on activation checkpointing (non-reentrant, so it works with frozen inputs and peft) in every ViT layer;
    returns how many. ``Sam3ViTLayer`` is a transformers ``GradientCheckpointingLayer``, but
    ``Sam3Model.gradient_checkpointing_enable()`` refuses (the model does not declare support), so the layers get the
    checkpoint function the way that method would give it. Only active while training with gradients."""
    layers = [module for module in model.modules() if isinstance(module, Sam3ViTLayer)]
    for layer in layers:
        layer.gradient_checkpointing = True
        layer._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
    return len(layers)


def encode_text(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], device: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T, hidden) projected text features and (n, T) attention mask of ``prompts`` (CLIP + projection)."""
    tokens = tokenizer(list(prompts), padding="max_length", max_length=TEXT_MAX_LENGTH, truncation=True,
                       return_tensors="pt").to(device)
    features = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return features.pooler_output, tokens["attention_mask"]


def decode_items(model: torch.nn.Module, vision: Any, slice_of: torch.Tensor, text: torch.Tensor,
                 attention_mask: torch.Tensor) -> Any:
    """Sam3Model outputs for items = (slice, prompt) pairs on encoded slices.

    ``vision``: the image encoder's output for the slices (``get_vision_features``, once per slice); ``slice_of``:
    (n_items,) long; ``text``: (n_items, T, hidden) projected text features (``encode_text``); ``attention_mask``:
    (n_items, T).
    """
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    index = slice_of.to(vision.last_hidden_state.device)
    picked = Sam3VisionEncoderOutput(
        last_hidden_state=vision.last_hidden_state[index],
        fpn_hidden_states=tuple(h[index] for h in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(p[index] for p in vision.fpn_position_encoding),
    )
    return model(vision_embeds=picked, text_embeds=BaseModelOutputWithPooling(pooler_output=text),
                 attention_mask=attention_mask)


def validate(model: Sam3Model, tokenizer: PreTrainedTokenizerBase, spec: ImageSpec, volumes: Sequence[AnnotatedVolume],
             template: Sequence[StructureSpec], device: str = "cpu") -> dict[str, dict[str, float]]:
    """Mean Dice and HD95 (mm) per structure over ``volumes`` (threshold 0.5, no refinement), plus ``mean`` Dice;
    per structure also its calibrated ``threshold`` and the Dice there, ``dice_calibrated`` (``model.calibration``).

    HD95 is averaged over volumes where both masks are non-empty (NaN when there is none)."""
    from model.network import Sam3SliceNetwork
    from model.predictor import PredictorSettings, SlicePredictor

    was_training = model.training
    network = Sam3SliceNetwork(model, tokenizer, spec)
    predictor = SlicePredictor(network, PredictorSettings(batch_size=16, device=device))
    scores: dict[str, dict[str, list[float]]] = {s.name: {"dice": [], "hd95_mm": []} for s in template}
    curves: dict[str, list[np.ndarray]] = {s.name: [] for s in template}
    for volume in volumes:
        result = predictor.predict(volume.hu, {s.name: s.prompts for s in template})
        for s in template:
            predicted, truth = result[s.name].probability >= 0.5, volume.masks[s.name]
            curves[s.name].append(dice_curve(result[s.name].probability, truth))
            scores[s.name]["dice"].append(dice(predicted, truth))
            distance = hd95(predicted, truth, volume.spacing_mm)
            if predicted.any() and truth.any():
                scores[s.name]["hd95_mm"].append(distance)
    model.train(was_training)
    metrics = {name: {k: float(np.mean(v)) if v else float("nan") for k, v in values.items()}
               for name, values in scores.items()}
    for name, calibrated in calibrate(curves).items():
        metrics[name].update(threshold=calibrated["threshold"], dice_calibrated=calibrated["dice"])
    metrics["mean"] = {key: float(np.mean([m[key] for m in metrics.values()])) for key in ("dice", "dice_calibrated")}
    return metrics


class Trainer:
    """One training run (see the module docstring). ``model_dir``: the starting model (a snapshot, or
    ``model.scratch.init_model_dir`` for training from scratch). ``data_record``: what the data was (recorded)."""

    def __init__(self, model_dir: Path, train_volumes: Sequence[AnnotatedVolume],
                 val_volumes: Sequence[AnnotatedVolume], template: Sequence[StructureSpec], out_dir: Path,
                 settings: TrainSettings, *, device: str = "cpu", data_record: dict[str, Any] | None = None) -> None:
        from transformers import AutoTokenizer

        if not train_volumes:
            raise ValueError("no training volumes")
        self.model_dir, self.out_dir, self.settings, self.device = Path(model_dir), Path(out_dir), settings, device
        self.template = tuple(template)
        self.names = [s.name for s in self.template]
        self.train_volumes = list(train_volumes)
        self.val_volumes = [v for v in val_volumes if settings.val_phases is None or v.phase in settings.val_phases]
        self.data_record = data_record or {}
        torch.manual_seed(settings.seed)
        base = load_base_model(self.model_dir)
        self.spec = image_spec_for(base, self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        if settings.mode is TrainMode.LORA:
            self.model = apply_lora(base, settings.lora)
        else:
            self.model = base
            for parameter in self.model.parameters():
                parameter.requires_grad_(True)
        if settings.checkpointing:
            checkpoint_vit_layers(self.model)
        self.model.to(device).train()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.bf16 = str(device).startswith("cuda") if settings.bf16 is None else settings.bf16
        self.prompts = [p for spec in self.template for p in spec.prompts]
        self.first_prompt = np.cumsum([0] + [len(spec.prompts) for spec in self.template])[:-1]
        self.text_cache = None
        if settings.cache_text and settings.mode is TrainMode.LORA:
            with torch.no_grad(), self.autocast():
                self.text_cache = encode_text(self.model, self.tokenizer, self.prompts, device)
        self.micro_batch = settings.micro_batch or (1 if settings.mode is TrainMode.LORA else settings.slices)
        self.events: list[dict[str, Any]] = []
        self.optimizer = torch.optim.AdamW(self.trainable, lr=settings.lr, weight_decay=settings.weight_decay)
        self.index = SampleIndex.build(self.train_volumes, self.names)
        weights = dict(settings.mining.structure_weights)
        self.sampler = HardNegativeSampler(self.index.kind, self.index.structure, settings.mining,
                                           np.array([weights.get(n, 1.0) for n in self.names]))
        self.rng = np.random.default_rng(settings.seed)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step_count = 0
        self.best = -1.0
        self.best_epoch = 0
        self.best_metrics: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0

    # --- one step ----------------------------------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        s = self.settings
        if step < s.warmup:
            return s.lr * (step + 1) / s.warmup
        progress = (step - s.warmup) / max(1, s.steps - s.warmup)
        return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def next_batch(self) -> Batch:
        """The next batch: anchors from the sampler, augmented, with companions if the settings say so."""
        s = self.settings
        anchors = self.sampler.sample(s.slices, self.rng)
        return make_batch(self.train_volumes, self.names, self.index, anchors, s.mining.companions, s.augment,
                          self.generator)

    def autocast(self) -> torch.autocast:
        return torch.autocast("cuda" if str(self.device).startswith("cuda") else "cpu", dtype=torch.bfloat16,
                              enabled=self.bf16)

    def draw_prompts(self, batch: Batch) -> list[int]:
        """Which prompt of its structure each item of ``batch`` uses, drawn at random."""
        return [int(self.rng.integers(len(self.template[k].prompts))) for k in batch.structure.tolist()]

    def batch_losses(self, batch: Batch, prompt_choice: Sequence[int] | None = None) -> torch.Tensor:
        """(n_items,) losses of ``batch`` (with gradients). ``prompt_choice``: which prompt of its structure each
        item uses (None: drawn at random)."""
        if prompt_choice is None:
            prompt_choice = self.draw_prompts(batch)
        prompt = [int(self.first_prompt[k]) + c for k, c in zip(batch.structure.tolist(), prompt_choice, strict=True)]
        images = ct_to_images(batch.hu, self.spec, device=self.device)
        with self.autocast():
            vision = self.model.get_vision_features(pixel_values=images)
            if self.text_cache is None:
                text, mask = encode_text(self.model, self.tokenizer, [self.prompts[i] for i in prompt], self.device)
            else:
                rows = torch.tensor(prompt, device=self.text_cache[0].device)
                text, mask = self.text_cache[0][rows], self.text_cache[1][rows]
        mask_size = vision.fpn_hidden_states[0].shape[-1]  # the mask decoder's grid: the finest FPN level
        targets = masks_to_model_grid(batch.targets, mask_size, device=self.device)
        present = batch.present.to(self.device)
        if not self.settings.checkpointing:
            return self.score_items(vision, batch.slice_of, text, mask, targets, present)
        return torch.cat([checkpoint(self.score_items, vision, batch.slice_of[i:i + 1], text[i:i + 1],
                                     mask[i:i + 1], targets[i:i + 1], present[i:i + 1], use_reentrant=False)
                          for i in range(len(prompt))])

    def score_items(self, vision: Any, slice_of: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                    targets: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(n_items,) losses of items decoded on encoded slices (``decode_items``; the loss outside autocast)."""
        with self.autocast():
            out = decode_items(self.model, vision, slice_of, text, mask)
        return item_losses(out.semantic_seg, out.pred_masks, out.pred_logits, out.presence_logits, targets, present,
                           self.settings.loss)

    def accumulate(self, batch: Batch, prompt_choice: Sequence[int]) -> torch.Tensor:
        """Forward and backward of ``batch`` in micro-batches of ``self.micro_batch`` slices, leaving the gradient of
        the mean item loss; returns the (n_items,) losses (detached, on the host). An out-of-memory error halves the
        micro-batch (down to one slice, where it propagates) and redoes the whole batch."""
        n_items = len(batch.items)
        while True:
            self.optimizer.zero_grad(set_to_none=True)
            losses = torch.zeros(n_items)
            try:
                for part, index in batch.micro_batches(self.micro_batch):
                    part_losses = self.batch_losses(part, [prompt_choice[i] for i in index.tolist()])
                    (part_losses.sum() / n_items).backward()
                    losses[index] = part_losses.detach().float().cpu()
                return losses
            except torch.OutOfMemoryError:
                if self.micro_batch == 1:
                    raise
                self.micro_batch = max(1, self.micro_batch // 2)
                self.events.append({"step": self.step_count, "event": "out_of_memory",
                                    "micro_batch": self.micro_batch})
                logger.warning("out of memory at step %d; micro-batch now %d slices", self.step_count,
                               self.micro_batch)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def step(self, batch: Batch | None = None) -> float:
        """One optimiser step (on ``batch``, else the sampler's next); returns its loss."""
        s = self.settings
        batch = self.next_batch() if batch is None else batch
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step_count)
        losses = self.accumulate(batch, self.draw_prompts(batch))
        torch.nn.utils.clip_grad_norm_(self.trainable, s.grad_clip)
        self.optimizer.step()
        self.sampler.record(batch.items, losses.numpy())
        self.step_count += 1
        return float(losses.mean())

    # --- the run -----------------------------------------------------------------------------------------------------

    def run(self, progress: ProgressCallback | None = None, resume: bool = False) -> TrainResult:
        s = self.settings
        if resume:
            self.load_checkpoint()
        elif (self.out_dir / "checkpoint").exists() or (self.out_dir / "best").exists():
            raise FileExistsError(f"training output folder {self.out_dir} already holds a run (resume to continue)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        epoch_losses: list[float] = []
        while self.step_count < s.steps:
            start = time.perf_counter()
            loss = self.step()
            self.seconds += time.perf_counter() - start
            epoch_losses.append(loss)
            epoch = (self.step_count - 1) // s.epoch_steps + 1
            validation = None
            if self.step_count % s.epoch_steps == 0 or self.step_count == s.steps:
                start = time.perf_counter()
                validation = self.end_epoch(epoch, float(np.mean(epoch_losses)))
                self.seconds += time.perf_counter() - start
                epoch_losses = []
            if progress is not None:
                progress(TrainProgress(self.step_count, s.steps, epoch, loss,
                                       float(np.mean(epoch_losses)) if epoch_losses else loss,
                                       self.lr_at(self.step_count - 1), validation, self.best))
        if self.best < 0:  # no validation volume: the last state is the result
            self.save_best(self.history[-1]["epoch"] if self.history else 0, {})
        else:  # the record of the best result, with the whole history
            (self.out_dir / "best" / RECORD).write_text(json.dumps(self.record(), indent=2, default=str) + "\n",
                                                         encoding="utf-8")
        return TrainResult(self.out_dir / "best", self.best_epoch, self.best_metrics, self.seconds, self.history)

    def end_epoch(self, epoch: int, mean_loss: float) -> dict[str, dict[str, float]] | None:
        mining = self.sampler.new_epoch()
        metrics = None
        if self.val_volumes:
            metrics = validate(self.model, self.tokenizer, self.spec, self.val_volumes, self.template, self.device)
            self.model.train()
        entry = {"epoch": epoch, "step": self.step_count, "loss": round(mean_loss, 5),
                 "seconds": round(self.seconds, 1), "mining": mining, "validation": metrics}
        self.history.append(entry)
        logger.info("epoch %d (step %d): loss %.4f, validation %s", epoch, self.step_count, mean_loss,
                    None if metrics is None else {k: round(v["dice"], 3) for k, v in metrics.items()})
        if metrics is not None and metrics["mean"]["dice"] > self.best:
            self.best = metrics["mean"]["dice"]
            self.save_best(epoch, metrics)
        self.save_checkpoint()
        return metrics

    # --- outputs -----------------------------------------------------------------------------------------------------

    def save_best(self, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        self.best_epoch, self.best_metrics = epoch, metrics
        best = self.out_dir / "best"
        if best.exists():
            shutil.rmtree(best)
        if self.settings.mode is TrainMode.LORA:
            save_adapter(self.model, best)
        else:
            self.model.config.architectures = ["Sam3Model"]
            with without_progress_bars():
                self.model.save_pretrained(best, safe_serialization=True)
            for name in TOKENIZER_FILES + PROCESSOR_FILES:
                if (self.model_dir / name).is_file():
                    shutil.copy2(self.model_dir / name, best / name)
            if self.settings.label:
                (best / MODEL_LABEL).write_text(json.dumps({"label": self.settings.label}, indent=2) + "\n",
                                                encoding="utf-8")
        if metrics:
            write_calibration(best, {name: {"threshold": m["threshold"], "dice": m["dice_calibrated"],
                                            "dice_at_default": m["dice"]}
                                     for name, m in metrics.items() if name != "mean"}, len(self.val_volumes))
        (best / RECORD).write_text(json.dumps(self.record(), indent=2, default=str) + "\n", encoding="utf-8")
        share_files(best)

    def record(self) -> dict[str, Any]:
        return {
            "kind": "lora_adapter" if self.settings.mode is TrainMode.LORA else "model",
            "label": self.settings.label,
            "base_model": str(self.model_dir),
            "data": {**self.data_record, "train_volumes": len(self.train_volumes),
                     "validation_volumes": len(self.val_volumes), "items": self.index.counts(),
                     "structures": {s.name: list(s.prompts) for s in self.template}},
            "settings": self.settings.to_json(),
            "parameters": {"trainable": sum(p.numel() for p in self.trainable),
                           "total": sum(p.numel() for p in self.model.parameters())},
            "image_size": self.spec.image_size,
            "best": {"epoch": self.best_epoch, "step": self.best_epoch * self.settings.epoch_steps,
                     "validation": self.best_metrics},
            "history": self.history,
            "events": self.events,
            "micro_batch": self.micro_batch,
            "train_seconds": round(self.seconds, 1),
            "software": {"torch": torch.__version__, "python": platform.python_version(),
                         "threads": torch.get_num_threads(), "device": self.device},
        }

    # --- checkpoints -------------------------------------------------------------------------------------------------

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> None:
        folder = self.out_dir / "checkpoint"
        tmp = self.out_dir / "checkpoint.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                    "torch_rng": torch.random.get_rng_state()}, tmp / "optimizer.pt")
        np.savez(tmp / "sampler.npz", **self.sampler.state_dict())
        state = {"step": self.step_count, "best": self.best, "best_epoch": self.best_epoch,
                 "best_metrics": self.best_metrics, "history": self.history, "seconds": self.seconds,
                 "rng": self.rng.bit_generator.state, "settings": self.settings.to_json(),
                 "micro_batch": self.micro_batch, "events": self.events}
        (tmp / "state.json").write_text(json.dumps(state, default=str) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)

    def load_checkpoint(self) -> None:
        folder = self.out_dir / "checkpoint"
        if not (folder / "state.json").is_file():
            raise FileNotFoundError(f"no checkpoint to resume from in {folder}")
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if state["settings"] != json.loads(json.dumps(self.settings.to_json(), default=str)):
            raise ValueError(f"{folder}: the checkpoint was made with other settings; resume with the same ones")
        weights = load_file(str(folder / "trainable.safetensors"))
        missing = set(self._trainable_state()) - set(weights)
        if missing:
            raise ValueError(f"{folder}: checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[:2]}")
        self.model.load_state_dict(weights, strict=False)
        extra = torch.load(folder / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.generator.set_state(extra["generator"])
        torch.random.set_rng_state(extra["torch_rng"])
        with np.load(folder / "sampler.npz") as sampler:
            self.sampler.load_state_dict({k: sampler[k] for k in sampler.files})
        self.rng.bit_generator.state = state["rng"]
        self.step_count, self.best, self.best_epoch = state["step"], state["best"], state["best_epoch"]
        self.best_metrics, self.history, self.seconds = state["best_metrics"], state["history"], state["seconds"]
        self.micro_batch, self.events = state["micro_batch"], state["events"]
        logger.info("resumed %s at step %d", self.out_dir, self.step_count)

