"""Loading the tiny SAM 3 in the official layout, LoRA apply → merge → save → reload, and the model identity."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Sam3Config, Sam3Model

from model.calibration import write_calibration
from model.lora import LoraSettings, apply_lora, load_adapter, save_adapter
from model.sam3 import ModelLoadError, load_base_model, load_sam3, merge, model_identity
from model.tiny import tiny_vocabulary, write_tiny_checkpoint

# Key names and shapes of the official facebook/sam3 checkpoint (transformers format), full size.
OFFICIAL_FULL_SHAPES = {
    "detector_model.vision_encoder.backbone.embeddings.patch_embeddings.projection.weight": (1024, 3, 14, 14),
    "detector_model.vision_encoder.backbone.embeddings.position_embeddings": (1, 576, 1024),
    "detector_model.vision_encoder.backbone.layers.31.attention.q_proj.weight": (1024, 1024),
    "detector_model.vision_encoder.backbone.layers.0.mlp.fc1.weight": (4736, 1024),
    "detector_model.text_encoder.text_model.embeddings.token_embedding.weight": (49408, 1024),
    "detector_model.text_encoder.text_model.embeddings.position_embedding.weight": (32, 1024),
    "detector_model.text_projection.weight": (256, 1024),
    "detector_model.detr_decoder.query_embed.weight": (200, 256),
    "detector_model.detr_decoder.presence_token.weight": (1, 256),
    "detector_model.mask_decoder.semantic_projection.weight": (1, 256, 1, 1),
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("sam3") / "official", seed=1)


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    vocab_size = len(tiny_vocabulary()[0])
    return {"pixel_values": torch.randn(2, 3, 112, 112, generator=generator),
            "input_ids": torch.randint(0, vocab_size - 2, (2, 32), generator=generator)}


def _outputs(model: Sam3Model) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        out = model(**_inputs())
    return {"semantic_seg": out.semantic_seg, "pred_masks": out.pred_masks, "presence": out.presence_logits}


def test_the_official_key_layout_matches_sam3model_at_full_size() -> None:
    with torch.device("meta"):
        state = Sam3Model(Sam3Config()).state_dict()
    for key, shape in OFFICIAL_FULL_SHAPES.items():
        assert tuple(state[key.removeprefix("detector_model.")].shape) == shape, key


def test_official_layout_loads_with_no_missing_or_unexpected_keys(tiny_dir: Path) -> None:
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "sam3_video" and "detector_config" in config
    for name in ("model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json", "processor_config.json"):
        assert (tiny_dir / name).is_file(), name
    with safe_open(tiny_dir / "model.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert all(k.startswith(("detector_model.", "tracker_model.", "tracker_neck.")) for k in keys)
    model, info = Sam3Model.from_pretrained(tiny_dir, local_files_only=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    written = load_file(tiny_dir / "model.safetensors")
    for name, tensor in model.state_dict().items():  # every tensor is the written one, none was initialised
        torch.testing.assert_close(tensor, written[f"detector_model.{name}"], rtol=0, atol=0)


def test_load_sam3_gives_tokenizer_image_spec_and_stable_identity(tiny_dir: Path) -> None:
    loaded = load_sam3(tiny_dir)
    assert loaded.image_spec.image_size == 112 and loaded.image_spec.image_mean == (0.5, 0.5, 0.5)
    tokens = loaded.tokenizer(["gross tumor volume"])["input_ids"][0]
    assert loaded.tokenizer.convert_ids_to_tokens(tokens)[1:4] == ["gross</w>", "tumor</w>", "volume</w>"]
    assert loaded.identity == model_identity(tiny_dir)
    assert len(loaded.identity.short) == 12 and loaded.identity.adapter_sha256 is None
    assert not loaded.model.training


def test_a_checkpoint_with_a_missing_tensor_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    state = load_file(broken / "model.safetensors")
    del state["detector_model.detr_decoder.presence_token.weight"]
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing_keys: 1"):
        load_base_model(broken)


def test_missing_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_sam3(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no model.*safetensors"):
        load_sam3(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="only safetensors"):
        load_sam3(tmp_path)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_lora_apply_merge_save_reload_gives_identical_outputs(tiny_dir: Path, tmp_path: Path) -> None:
    settings = LoraSettings(rank=4, alpha=8, mlp=True, init_identity=False)
    base = load_base_model(tiny_dir)
    base_out = _outputs(base)
    adapted = apply_lora(load_base_model(tiny_dir), settings)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".vision_encoder.backbone.layers." in n for n in trainable)
    assert len(trainable) == 4 * 6 * 2  # 4 layers x (q, k, v, o, fc1, fc2) x (A, B)
    adapted_out = _outputs(adapted)
    assert not torch.allclose(adapted_out["semantic_seg"], base_out["semantic_seg"])
    adapter_dir = save_adapter(adapted, tmp_path / "adapter")
    write_calibration(adapter_dir, {"Heart": {"threshold": 0.45, "dice": 0.9, "dice_at_default": 0.88}}, 1)
    # adapter reloaded from disk onto a fresh base, merged in memory
    merged_in_memory = load_adapter(load_base_model(tiny_dir), adapter_dir).merge_and_unload()
    # merged, saved and reloaded as a model directory
    identity = merge(tiny_dir, adapter_dir, tmp_path / "merged")
    reloaded = load_sam3(tmp_path / "merged")
    via_adapter = load_sam3(tiny_dir, adapter_dir=adapter_dir)
    for name, expected in adapted_out.items():
        for other in (merged_in_memory, reloaded.model, via_adapter.model):
            torch.testing.assert_close(_outputs(other)[name], expected, rtol=1e-5, atol=1e-5)
    assert reloaded.identity == identity and identity.merged_from is not None
    assert identity.merged_from["adapter_sha256"] == via_adapter.identity.adapter_sha256
    assert identity.merged_from["base_weights_sha256"] == model_identity(tiny_dir).weights_sha256
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "merged").iterdir()}
    assert modes["model.safetensors"] == 0o666 & ~umask, modes  # a worker running as another user can read it
    assert via_adapter.identity.short != model_identity(tiny_dir).short
    assert identity.thresholds == via_adapter.identity.thresholds == {"Heart": 0.45}  # merge carries the calibration
    with pytest.raises(FileExistsError, match="not empty"):
        merge(tiny_dir, adapter_dir, tmp_path / "merged")


def test_lora_settings_targets() -> None:
    assert LoraSettings(attention=("q_proj", "v_proj")).target_regex() == (
        r"(?:.*\.)?vision_encoder\.backbone\.layers\.\d+\.(?:attention\.(?:q_proj|v_proj))")
    with pytest.raises(ValueError, match="attention must be"):
        LoraSettings(attention=("qkv",))
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(rank=0)
