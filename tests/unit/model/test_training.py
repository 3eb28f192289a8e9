"""Training on the tiny model: the loss falls on a fixed batch, augmentation, checkpoints and resume, LoRA output."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.datasets import AnnotationError, DomainShift, NameMapping
from model.mining import MiningSettings
from model.samples import AugmentSettings, SampleIndex, augment, make_batch
from model.scratch import init_model_dir
from model.training import Trainer, TrainMode, TrainSettings
from tests.unit.model.training_data import TOY_TEMPLATE, toy_volume

NAMES = [s.name for s in TOY_TEMPLATE]


@pytest.fixture(scope="module")
def scratch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_model_dir(tmp_path_factory.mktemp("scratch") / "init", image_size=112, seed=0)


def _settings(**changes) -> TrainSettings:
    base = TrainSettings(mode=TrainMode.FULL, steps=4, epoch_steps=2, slices=2, lr=3e-3, warmup=1, val_phases=None)
    return replace(base, **changes)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(scratch_dir: Path, tmp_path: Path) -> None:
    volumes = [toy_volume(0), toy_volume(1)]
    trainer = Trainer(scratch_dir, volumes, [], TOY_TEMPLATE, tmp_path, _settings(steps=40))
    index = trainer.index
    anchors = np.array([index.item(0, 2, 1), index.item(1, 0, 0), index.item(1, 4, 0)])  # positive, absent, lung
    batch = make_batch(volumes, NAMES, index, anchors, True, AugmentSettings(enabled=False), torch.Generator())
    assert len(batch.items) == 6 and batch.present.tolist() == [1, 1, 0, 0, 1, 0]
    with torch.no_grad():
        before = trainer.batch_losses(batch).mean().item()
    for _ in range(20):
        trainer.step(batch)
    with torch.no_grad():
        after = trainer.batch_losses(batch).mean().item()
    assert after < 0.9 * before, (before, after)


def test_augmentation_moves_masks_with_the_ct_and_is_seeded() -> None:
    volume = toy_volume(0)
    hu = torch.from_numpy(volume.hu[2:4].astype(np.float32))
    masks = torch.from_numpy(np.stack([np.stack([volume.masks[n][z] for n in NAMES]) for z in (2, 3)])
                             .astype(np.float32))
    settings = AugmentSettings(rotation_deg=10, scale=0.1, shift_px=3, hu_scale=0.0, hu_offset=0.0, noise_hu=0.0)
    moved_hu, _ = augment(hu, masks, settings, torch.Generator().manual_seed(3))
    again_hu, _ = augment(hu, masks, settings, torch.Generator().manual_seed(3))
    assert torch.equal(moved_hu, again_hu)
    assert not torch.allclose(moved_hu, hu)
    # HU that is the lung mask itself (air where 0, 0 HU where 1) moves exactly like the mask
    indicator = masks[:, 0] * 1000.0 - 1000.0
    moved_indicator, moved_masks = augment(indicator, masks, settings, torch.Generator().manual_seed(3))
    assert torch.allclose((moved_indicator + 1000.0) / 1000.0, moved_masks[:, 0], atol=1e-4)
    assert moved_masks[:, 0].sum() == pytest.approx(masks[:, 0].sum(), rel=0.25)
    noisy, _ = augment(hu, masks, AugmentSettings(rotation_deg=0, scale=0, shift_px=0), torch.Generator())
    assert 0 < float((noisy - hu).abs().mean()) < 100


def test_checkpoint_resume_continues_bit_for_bit(scratch_dir: Path, tmp_path: Path) -> None:
    volumes, val = [toy_volume(0), toy_volume(1)], [toy_volume(2, study="val")]
    settings = _settings()
    whole = Trainer(scratch_dir, volumes, val, TOY_TEMPLATE, tmp_path / "whole", settings)
    whole.run()

    class Stop(Exception):
        pass

    def stop_after_first_epoch(progress) -> None:
        if progress.step == 2:
            raise Stop

    with pytest.raises(Stop):
        Trainer(scratch_dir, volumes, val, TOY_TEMPLATE, tmp_path / "split", settings).run(stop_after_first_epoch)
    resumed = Trainer(scratch_dir, volumes, val, TOY_TEMPLATE, tmp_path / "split", settings)
    resumed.run(resume=True)
    a = load_file(tmp_path / "whole" / "checkpoint" / "trainable.safetensors")
    b = load_file(tmp_path / "split" / "checkpoint" / "trainable.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(scratch_dir, volumes, val, TOY_TEMPLATE, tmp_path / "whole", settings).run()
    with pytest.raises(ValueError, match="other settings"):
        Trainer(scratch_dir, volumes, val, TOY_TEMPLATE, tmp_path / "whole", replace(settings, lr=1e-4)).run(
            resume=True)


def test_lora_training_saves_the_best_adapter_with_its_record(scratch_dir: Path, tmp_path: Path) -> None:
    from model.sam3 import load_sam3

    settings = _settings(mode=TrainMode.LORA, mining=MiningSettings(online=True, hard_fraction=0.5))
    result = Trainer(scratch_dir, [toy_volume(0)], [toy_volume(2, study="val")], TOY_TEMPLATE, tmp_path, settings,
                     data_record={"train_seeds": [0]}).run()
    best = result.best_dir
    assert (best / "adapter_config.json").is_file() and (best / "adapter_model.safetensors").is_file()
    record = json.loads((best / "training_record.json").read_text())
    assert record["kind"] == "lora_adapter" and record["data"]["train_seeds"] == [0]
    assert record["parameters"]["trainable"] < record["parameters"]["total"] / 10
    assert set(record["best"]["validation"]) == {"Lung_L", "Heart", "mean"}
    assert set(record["best"]["validation"]["Heart"]) == {"dice", "hd95_mm", "threshold", "dice_calibrated"}
    assert len(record["history"]) == 2
    calibration = json.loads((best / "itvsam_calibration.json").read_text())
    assert calibration["volumes"] == 1
    assert calibration["thresholds"] == {name: record["best"]["validation"][name]["threshold"] for name in NAMES}
    loaded = load_sam3(scratch_dir, adapter_dir=best)
    assert loaded.identity.adapter_sha256 is not None
    assert loaded.identity.thresholds == calibration["thresholds"]
    assert load_sam3(scratch_dir).identity.thresholds is None  # the base's own calibration (none) is not the adapter's


def test_full_training_writes_a_loadable_labelled_model(scratch_dir: Path, tmp_path: Path) -> None:
    from model.sam3 import load_sam3

    result = Trainer(scratch_dir, [toy_volume(0)], [], TOY_TEMPLATE, tmp_path, _settings(steps=2, label="PHANTOM")
                     ).run()
    loaded = load_sam3(result.best_dir)
    assert loaded.identity.label == "PHANTOM"
    assert loaded.identity.to_dict()["label"] == "PHANTOM"
    assert loaded.identity.thresholds is None  # no validation volume: nothing calibrated


def test_a_model_resized_to_another_input_keeps_every_weight(scratch_dir: Path, tmp_path: Path) -> None:
    from model.recipes import TrainingData, train_model
    from model.sam3 import load_base_model, load_sam3
    from model.scratch import resize_model_dir

    resized = load_sam3(resize_model_dir(scratch_dir, tmp_path / "168", image_size=168))
    assert resized.image_spec.image_size == 168
    original = load_base_model(scratch_dir).state_dict()
    assert all(torch.equal(original[name], tensor) for name, tensor in resized.model.state_dict().items())
    with pytest.raises(ValueError, match="needs full training"):
        train_model(tmp_path / "lora", TrainingData(phantom_seeds=(0,)), TOY_TEMPLATE,
                    _settings(mode=TrainMode.LORA), model_dir=scratch_dir, image_size=168)


def test_name_mapping_maps_clinic_names_and_refuses_unmapped_or_missing() -> None:
    mapping = NameMapping({"Lt Lung": "Lung_L"}, ignore=("External",))
    assert mapping.resolve(["LT_LUNG", "heart", "External"], NAMES, "s1") == {"Lung_L": "LT_LUNG", "Heart": "heart"}
    with pytest.raises(AnnotationError, match=r"s1: unmapped structure\(s\) \['Cord'\]"):
        mapping.resolve(["Lt Lung", "Heart", "Cord"], NAMES, "s1")
    with pytest.raises(AnnotationError, match=r"s1: template structure\(s\) \['Heart'\] are missing"):
        mapping.resolve(["Lt Lung"], NAMES, "s1")
    with pytest.raises(AnnotationError, match="both map to Lung_L"):
        mapping.resolve(["Lt Lung", "Lung_L", "Heart"], NAMES, "s1")


def test_domain_shift_changes_contrast_and_field_of_view() -> None:
    volume = toy_volume(0)
    shifted = DomainShift(hu_scale=1.2, zoom=1.25).apply(volume, seed=0)
    assert shifted.hu[2, 16, 16] == pytest.approx(200.0)  # soft tissue: (0 + 1000) · 1.2 − 1000
    assert shifted.masks["Lung_L"].sum() > 1.3 * volume.masks["Lung_L"].sum()
    assert DomainShift().apply(volume, 0) is volume


def test_sample_index_and_batch_without_companions() -> None:
    volumes = [toy_volume(0)]
    index = SampleIndex.build(volumes, NAMES)
    batch = make_batch(volumes, NAMES, index, np.array([index.item(0, 2, 0), index.item(0, 2, 0)]), False,
                       AugmentSettings(enabled=False), torch.Generator())
    assert batch.hu.shape == (1, 32, 32) and batch.items.tolist() == [index.item(0, 2, 0)]
    assert torch.equal(batch.targets[0], torch.from_numpy(volumes[0].masks["Lung_L"][2].astype(np.float32)))
