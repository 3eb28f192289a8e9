"""``itvsam convert``: a tiny SAM 3 written in the layout of Meta's sam3.pt, converted back, gives identical outputs;
checkpoints that are not plain tensors or not SAM 3, and bad paths, are refused with the right exit code."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from itvsam.cli import app
from itvsam.common import EXIT_MODEL, EXIT_PATH, EXIT_USAGE
from model.convert import CONVERT_RECORD, write_original_checkpoint
from model.sam3 import load_sam3, model_identity
from model.tiny import TINY_IMAGE_SIZE, write_tiny_checkpoint

pytestmark = pytest.mark.integration
runner = CliRunner()

# Keys of the real sam3.pt (tests/unit/model/data/sam3_pt_keys.json.gz) that Sam3Model does not use.
TRACKER_AND_UNUSED = {
    "tracker.maskmem_tpos_enc": (7, 1, 1, 64),
    "tracker.sam_mask_decoder.iou_prediction_head.layers.0.weight": (256, 256),
    "detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight": (32, 32, 1, 1),
    "detector.geometry_encoder.points_direct_project.weight": (32, 2),
    "detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis": (16, 4),
}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "500"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model (plain layout) and the same weights as Meta's sam3.pt would hold them, with tracker keys."""
    root = tmp_path_factory.mktemp("convert")
    model_dir = write_tiny_checkpoint(root / "tiny", seed=3, layout="plain")
    generator = torch.Generator().manual_seed(5)
    extra = {k: torch.randn(shape, generator=generator) for k, shape in TRACKER_AND_UNUSED.items()}
    extra["detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis"] = torch.polar(
        torch.ones(16, 4), torch.randn(16, 4, generator=generator))  # complex, as in the real file
    pt = write_original_checkpoint(load_file(model_dir / "model.safetensors"), root / "sam3.pt", extra=extra)
    return model_dir, pt


def _outputs(model_dir: Path) -> dict[str, torch.Tensor]:
    loaded = load_sam3(model_dir)
    pixels = torch.randn(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    text = loaded.tokenizer(["gross tumor volume"], padding="max_length", max_length=32, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model(pixel_values=pixels, input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    return {"semantic_seg": out.semantic_seg, "pred_masks": out.pred_masks, "pred_logits": out.pred_logits,
            "presence": out.presence_logits, "input_ids": text["input_ids"]}


def test_convert_round_trip_gives_identical_outputs(tiny, tmp_path, one_torch_thread) -> None:
    model_dir, pt = tiny
    out = tmp_path / "converted"
    result = invoke("convert", pt, "-o", out, "--tokenizer", model_dir, "--config", model_dir / "config.json")
    assert result.exit_code == 0, result.output
    identity = model_identity(out)
    assert f"identity {identity.short}" in result.output
    assert "dropped 5 keys that Sam3Model does not use (1 point prompts, 1 rope tables, 2 tracker, 1 tracker neck)" \
        in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "sam3" and config["architectures"] == ["Sam3Model"]
    assert (out / "processor_config.json").read_text() == (model_dir / "processor_config.json").read_text()
    record = json.loads((out / CONVERT_RECORD).read_text())
    assert record["source_file"] == "sam3.pt" and len(record["source_sha256"]) == 64
    assert record["dropped_keys"] == {"point_prompts": 1, "rope_tables": 1, "tracker": 2, "tracker_neck": 1}
    original, converted = load_file(model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)  # same dtype (float32) and values
    expected, got = _outputs(model_dir), _outputs(out)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_a_pickle_that_needs_more_than_tensors_is_refused(tiny, tmp_path) -> None:
    model_dir, _ = tiny
    pt = tmp_path / "training.pt"
    torch.save({"model": {"detector.x": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-4)}, pt)
    result = invoke("convert", pt, "-o", tmp_path / "out", "--tokenizer", model_dir)
    assert result.exit_code == EXIT_MODEL, result.output
    assert "training.pt: torch.load(weights_only=True) refused it (it holds argparse.Namespace)" in result.output
    assert "only plain tensor checkpoints are read" in result.output
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_a_missing_key_is_refused_naming_it(tiny, tmp_path) -> None:
    model_dir, pt = tiny
    data = torch.load(pt, weights_only=True)
    del data["model"]["detector.transformer.decoder.presence_token.weight"]
    torch.save(data, tmp_path / "broken.pt")
    result = invoke("convert", tmp_path / "broken.pt", "-o", tmp_path / "out", "--tokenizer", model_dir,
                    "--config", model_dir / "config.json")
    assert result.exit_code == EXIT_MODEL, result.output
    assert "is not a SAM 3 checkpoint" in result.output
    assert "1 tensors missing: detector.transformer.decoder.presence_token.weight" in result.output
    assert not (tmp_path / "out").exists()


def test_the_default_architecture_refuses_a_tiny_checkpoint(tiny, tmp_path) -> None:
    model_dir, pt = tiny
    result = invoke("convert", pt, "-o", tmp_path / "out", "--tokenizer", model_dir)
    assert result.exit_code == EXIT_MODEL, result.output
    assert "(image size 1008, ViT 32 × 1024, text 24 × 1024)" in result.output
    assert "tensors of the wrong shape" in result.output and "tensors missing" in result.output


def test_paths_and_the_tokenizer_are_checked_before_reading(tiny, tmp_path) -> None:
    model_dir, pt = tiny
    missing = invoke("convert", tmp_path / "nope.pt", "-o", tmp_path / "out", "--tokenizer", model_dir)
    assert missing.exit_code == EXIT_PATH and "no such checkpoint file" in missing.output
    no_tokenizer = invoke("convert", pt, "-o", tmp_path / "out")
    assert no_tokenizer.exit_code == EXIT_USAGE and "facebook/sam3" in no_tokenizer.output
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_tokenizer = invoke("convert", pt, "-o", tmp_path / "out", "--tokenizer", empty)
    assert not_a_tokenizer.exit_code == EXIT_MODEL and "has no CLIP tokenizer" in not_a_tokenizer.output
    video_config = tmp_path / "video.json"
    video_config.write_text(json.dumps({"model_type": "sam3_video"}))
    bad_config = invoke("convert", pt, "-o", tmp_path / "out", "--tokenizer", model_dir, "--config", video_config)
    assert bad_config.exit_code == EXIT_USAGE and "expected a Sam3Config (model_type 'sam3'), got 'sam3_video'" \
        in bad_config.output
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    exists = invoke("convert", pt, "-o", taken, "--tokenizer", model_dir, "--config", model_dir / "config.json")
    assert exists.exit_code == EXIT_PATH and "is not empty" in exists.output
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "out").exists()


def test_an_empty_output_directory_is_used_and_left_empty_on_refusal(tiny, tmp_path) -> None:
    model_dir, pt = tiny
    out = tmp_path / "out"
    out.mkdir()
    bad_config = tmp_path / "config.json"
    shutil.copy(model_dir / "config.json", bad_config)
    data = json.loads(bad_config.read_text())
    data["text_config"]["vocab_size"] += 1  # the token embedding no longer fits
    bad_config.write_text(json.dumps(data))
    refused = invoke("convert", pt, "-o", out, "--tokenizer", model_dir, "--config", bad_config)
    assert refused.exit_code == EXIT_MODEL and "token_embedding.weight" in refused.output
    assert out.is_dir() and not any(out.iterdir())
    assert invoke("convert", pt, "-o", out, "--tokenizer", model_dir, "--config",
                  model_dir / "config.json").exit_code == 0
