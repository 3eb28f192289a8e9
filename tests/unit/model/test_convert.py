"""The key mapping of Meta's sam3.pt → Sam3Model, checked against an independent list of the real checkpoint's keys.

``data/sam3_pt_keys.json.gz`` holds every key of ``sam3.pt`` with its shape and dtype, as Meta's own package builds
the model: ``sam3`` 0.1.4 (PyPI), in a throwaway virtualenv, ``sam3.model_builder.build_sam3_video_model(
checkpoint_path=None, load_from_HF=False, bpe_path=<a dummy BPE file>)`` with every parameter created on the meta
device (no weights read or downloaded), then ``state_dict()``. That builder loads ``sam3.pt`` strictly
(``torch.load(...)["model"]``), so these are the file's keys; its image model reads the ``detector.`` part.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from transformers import Sam3Config

from model.convert import (
    DROPPED,
    convert_state_dict,
    dropped_reason,
    expected_shapes,
    original_key,
    original_state_dict,
)
from model.sam3 import ModelLoadError
from model.tiny import tiny_config

KEYS_FILE = Path(__file__).parent / "data" / "sam3_pt_keys.json.gz"


@pytest.fixture(scope="module")
def meta_checkpoint() -> dict[str, torch.Tensor]:
    """sam3.pt's state dict as meta tensors (names, shapes and dtypes of the real file, no data)."""
    with gzip.open(KEYS_FILE, "rt", encoding="utf-8") as handle:
        listing = json.load(handle)
    assert listing["top_level"] == "model"
    return {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta")
            for k, v in listing["keys"].items()}


def test_the_real_checkpoint_maps_onto_exactly_sam3model_at_full_size(meta_checkpoint) -> None:
    state, dropped = convert_state_dict(meta_checkpoint, Sam3Config())
    expected = expected_shapes(Sam3Config())
    assert sorted(set(expected) - set(state)) == []  # nothing missing
    assert sorted(set(state) - set(expected)) == []  # nothing unexpected
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v) for k, v in expected.items()}
    assert not [k for k in state if "tracker" in k or "sam2" in k]
    # 309 tracker tensors, the tracker's neck on the ViT, point-prompt projections, the ViT's RoPE tables.
    assert dropped == {"point_prompts": 6, "rope_tables": 32, "tracker": 309, "tracker_neck": 22}
    fused = [k for k in meta_checkpoint if ".attn.qkv." in k or ".in_proj_" in k]  # each becomes q, k and v
    assert len(fused) == 186
    assert len(state) == len(meta_checkpoint) - sum(dropped.values()) + 2 * len(fused)
    assert sum(v.numel() for v in state.values()) == 840_376_374


def test_the_three_transforms_on_the_real_shapes(meta_checkpoint) -> None:
    state, _ = convert_state_dict(meta_checkpoint, Sam3Config())
    vit = "detector.backbone.vision_backbone.trunk"
    assert tuple(meta_checkpoint[f"{vit}.pos_embed"].shape) == (1, 577, 1024)  # a class-token row first
    assert tuple(state["vision_encoder.backbone.embeddings.position_embeddings"].shape) == (1, 576, 1024)
    assert tuple(meta_checkpoint[f"{vit}.blocks.0.attn.qkv.weight"].shape) == (3072, 1024)
    for p in "qkv":
        assert tuple(state[f"vision_encoder.backbone.layers.0.attention.{p}_proj.weight"].shape) == (1024, 1024)
    text = "detector.backbone.language_backbone.encoder"
    assert tuple(meta_checkpoint[f"{text}.text_projection"].shape) == (1024, 512)  # applied as x @ P
    assert tuple(state["text_encoder.text_projection.weight"].shape) == (512, 1024)  # a Linear's weight


def test_the_inverse_writes_exactly_the_real_layout(meta_checkpoint) -> None:
    with torch.device("meta"):
        shapes = expected_shapes(Sam3Config())
        original = original_state_dict({k: torch.empty(v) for k, v in shapes.items()})
    kept = {k: tuple(v.shape) for k, v in meta_checkpoint.items() if dropped_reason(k) is None}
    assert {k: tuple(v.shape) for k, v in original.items()} == kept


def test_every_sam3model_key_names_its_source() -> None:
    assert original_key("detr_decoder.output_layer_norm.weight") == "detector.transformer.decoder.norm.weight"
    assert original_key("vision_encoder.backbone.layers.7.attention.k_proj.bias") == \
        "detector.backbone.vision_backbone.trunk.blocks.7.attn.qkv.bias"
    assert all(original_key(k) for k in expected_shapes(Sam3Config()))
    assert [reason for reason, _ in DROPPED] == ["tracker", "tracker_neck", "point_prompts", "rope_tables"]


def _tiny_original() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return original_state_dict({k: torch.empty(v) for k, v in expected_shapes(tiny_config()).items()})


@pytest.mark.parametrize(("change", "named"), [
    (lambda s: s.pop("detector.transformer.decoder.norm.weight"),
     "1 tensors missing: detector.transformer.decoder.norm.weight"),
    (lambda s: s.update({"detector.backbone.extra_head.weight": torch.empty(3, device="meta")}),
     "1 keys that SAM 3 does not have: detector.backbone.extra_head.weight"),
    (lambda s: s.update({"detector.transformer.decoder.query_embed.weight": torch.empty(9, 32, device="meta")}),
     "1 tensors of the wrong shape: detector.transformer.decoder.query_embed.weight (9, 32) "
     "(→ detr_decoder.query_embed.weight (9, 32), expected (8, 32))"),
    (lambda s: s.update({"detector.backbone.vision_backbone.trunk.blocks.4.norm1.weight": torch.empty(64,
                                                                                                    device="meta")}),
     "1 keys that SAM 3 does not have: detector.backbone.vision_backbone.trunk.blocks.4.norm1.weight "
     "(→ vision_encoder.backbone.layers.4.layer_norm1.weight)"),
    (lambda s: s.update({"vision_encoder.backbone.layer_norm.weight": torch.empty(64, device="meta")}),
     "1 keys that SAM 3 does not have: vision_encoder.backbone.layer_norm.weight"),
], ids=["missing", "unknown", "wrong_shape", "layer_too_many", "not_meta_layout"])
def test_a_checkpoint_that_is_not_sam3_is_refused_naming_the_keys(change, named) -> None:
    original = _tiny_original()
    assert convert_state_dict(original, tiny_config())[0]  # the unchanged one converts
    change(original)
    with pytest.raises(ModelLoadError, match="is not a SAM 3 checkpoint of this architecture") as info:
        convert_state_dict(original, tiny_config(), source="x.pt")
    assert named in str(info.value)


def test_the_full_size_checkpoint_is_refused_for_the_tiny_architecture(meta_checkpoint) -> None:
    with pytest.raises(ModelLoadError, match=r"ViT 4 × 64.*tensors of the wrong shape: .*pos_embed \(1, 577, 1024\)"):
        convert_state_dict(meta_checkpoint, tiny_config())
