"""Commissioning a model (``itvsam check-model``) and loading without transformers' own progress bar."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from dicomrt.structures import thoracic_template
from itvsam.cli import app
from itvsam.common import EXIT_MODEL
from model.check import check_model
from model.network import Sam3SliceNetwork
from model.sam3 import load_sam3, model_identity
from model.tiny import TINY_IMAGE_SIZE, write_tiny_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


def test_check_model_reports_what_the_worker_will_run(tiny_dir: Path, one_torch_thread) -> None:
    found = check_model(tiny_dir, thoracic_template())
    loaded = load_sam3(tiny_dir)
    assert found.identity == model_identity(tiny_dir)
    assert found.parameters == sum(p.numel() for p in loaded.model.parameters())
    assert (found.dtype, found.device, found.image_size) == ("float32", "cpu", TINY_IMAGE_SIZE)
    assert found.slice_s > 0 and found.peak_memory_bytes > 100 << 20 and found.memory_measure == "process peak RSS"


def test_the_command_prints_the_figures_and_refuses_a_broken_dir_with_exit_5(tiny_dir: Path, tmp_path: Path,
                                                                              one_torch_thread) -> None:
    result = runner.invoke(app, ["check-model", str(tiny_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    parameters = sum(p.numel() for p in load_sam3(tiny_dir).model.parameters())
    assert f"{parameters:,}" in result.output and f"{TINY_IMAGE_SIZE} px" in result.output
    assert model_identity(tiny_dir).weights_sha256 in result.output
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    weights.pop(next(k for k in weights if "vision_encoder" in k))
    save_file(weights, str(broken / "model.safetensors"))
    result = runner.invoke(app, ["check-model", str(broken)], env={"COLUMNS": "200"})
    assert result.exit_code == EXIT_MODEL and "model_unavailable" in result.output
    assert "missing_keys: 1" in result.output
    result = runner.invoke(app, ["check-model", str(tmp_path / "nowhere")], env={"COLUMNS": "200"})
    assert result.exit_code == EXIT_MODEL and "does not exist" in result.output


def test_loading_prints_no_progress_bar_of_its_own(tiny_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    load_sam3(tiny_dir)
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out


def test_the_network_encodes_each_prompt_once_in_its_life(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    network = Sam3SliceNetwork.from_loaded(load_sam3(tiny_dir))
    calls: list[int] = []
    real = network.model.get_text_features

    def counted(input_ids, attention_mask):
        calls.append(len(input_ids))
        return real(input_ids=input_ids, attention_mask=attention_mask)

    monkeypatch.setattr(network.model, "get_text_features", counted)
    first = network.encode_prompts(["heart", "left lung", "heart"])
    again = network.encode_prompts(["left lung", "heart"])
    assert calls == [2]
    assert first[0] is first[2] and again == [first[1], first[0]]
    assert network.encode_prompts(["lung tumor"])[0].text == "lung tumor" and calls == [2, 1]
