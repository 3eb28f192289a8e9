"""What makes training fit a consumer GPU, on the tiny model: checkpointed ViT layers, cached text embeddings,
micro-batches with gradient accumulation and the out-of-memory fallback change memory, never the gradient."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.sam3.modeling_sam3 import Sam3ViTLayer

from model.samples import AugmentSettings, SampleIndex, make_batch
from model.scratch import init_model_dir
from model.training import Trainer, TrainMode, TrainSettings
from tests.unit.model.training_data import TOY_TEMPLATE, toy_volume

NAMES = [s.name for s in TOY_TEMPLATE]


@pytest.fixture(scope="module")
def scratch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_model_dir(tmp_path_factory.mktemp("scratch") / "init", image_size=112, seed=0)


def _trainer(model_dir: Path, out: Path, **changes) -> Trainer:
    settings = TrainSettings(mode=TrainMode.LORA, steps=2, epoch_steps=2, slices=3, lr=1e-3, warmup=1,
                             val_phases=None)
    return Trainer(model_dir, [toy_volume(0), toy_volume(1)], [], TOY_TEMPLATE, out, replace(settings, **changes))


def _batch(trainer: Trainer):
    index = trainer.index
    anchors = np.array([index.item(0, 2, 1), index.item(1, 0, 0), index.item(1, 4, 0)])  # three slices
    return make_batch(trainer.train_volumes, NAMES, index, anchors, True, AugmentSettings(enabled=False),
                      torch.Generator())


def _gradients(trainer: Trainer, batch, choice: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    for module in trainer.model.modules():  # the DETR layers' dropout (0.1) would draw differently per micro-batch
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    losses = trainer.accumulate(batch, choice)
    return losses, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_micro_batches_checkpointing_and_text_cache_leave_the_gradient_unchanged(scratch_dir: Path,
                                                                                 tmp_path: Path) -> None:
    plain = _trainer(scratch_dir, tmp_path / "a", micro_batch=3, checkpointing=False, cache_text=False,
                     lora=replace(TrainSettings().lora, init_identity=False))
    batch = _batch(plain)
    choice = [i % len(TOY_TEMPLATE[k].prompts) for i, k in enumerate(batch.structure.tolist())]
    reference_losses, reference = _gradients(plain, batch, choice)
    assert plain.text_cache is None
    assert not any(m.gradient_checkpointing for m in plain.model.modules() if isinstance(m, Sam3ViTLayer))
    lean = _trainer(scratch_dir, tmp_path / "b", micro_batch=1, checkpointing=True, cache_text=True,
                    lora=replace(TrainSettings().lora, init_identity=False))
    assert lean.text_cache is not None and lean.text_cache[0].shape[0] == len(lean.prompts)
    layers = [m for m in lean.model.modules() if isinstance(m, Sam3ViTLayer)]
    assert layers and all(m.gradient_checkpointing for m in layers)
    assert len(batch.micro_batches(1)) == 3
    losses, gradients = _gradients(lean, batch, choice)
    torch.testing.assert_close(losses, reference_losses, rtol=1e-5, atol=1e-6)
    assert gradients.keys() == reference.keys() and any(g.abs().sum() > 0 for g in gradients.values())
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, reference[name], rtol=1e-4, atol=1e-7, msg=name)


def test_micro_batches_cover_every_item_once() -> None:
    volumes = [toy_volume(0)]
    index = SampleIndex.build(volumes, NAMES)
    anchors = np.array([index.item(0, z, 0) for z in (0, 2, 3, 4)])
    batch = make_batch(volumes, NAMES, index, anchors, True, AugmentSettings(enabled=False), torch.Generator())
    parts = batch.micro_batches(3)
    assert [part.hu.shape[0] for part, _ in parts] == [3, 1]
    positions = torch.cat([index for _, index in parts])
    assert sorted(positions.tolist()) == list(range(len(batch.items)))
    for part, where in parts:
        assert torch.equal(part.targets, batch.targets[where])
        assert np.array_equal(part.items, batch.items[where.numpy()])
        assert int(part.slice_of.max()) < part.hu.shape[0]


def test_an_out_of_memory_step_halves_the_micro_batch_and_is_recorded(scratch_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(scratch_dir, tmp_path, slices=3, micro_batch=3)
    real = trainer.batch_losses

    def limited(part, choice):  # what a GPU does when more than one slice does not fit
        if part.hu.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(part, choice)

    monkeypatch.setattr(trainer, "batch_losses", limited)
    loss = trainer.step(_batch(trainer))
    assert np.isfinite(loss) and trainer.step_count == 1
    assert trainer.micro_batch == 1
    assert trainer.events == [{"step": 0, "event": "out_of_memory", "micro_batch": 1}]  # 3 slices → 1
    assert trainer.record()["events"] == trainer.events and trainer.record()["micro_batch"] == 1

    def never(part, choice):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(trainer, "batch_losses", never)
    with pytest.raises(torch.OutOfMemoryError):
        trainer.step(_batch(trainer))


def test_the_default_micro_batch_is_one_slice_in_lora_mode_and_the_step_in_full_mode(scratch_dir: Path,
                                                                                     tmp_path: Path) -> None:
    assert _trainer(scratch_dir, tmp_path / "lora").micro_batch == 1
    assert _trainer(scratch_dir, tmp_path / "full", mode=TrainMode.FULL).micro_batch == 3


def test_micro_batch_must_fit_the_step() -> None:
    with pytest.raises(ValueError, match="micro_batch must be between 1 and slices"):
        TrainSettings(slices=2, micro_batch=3)
