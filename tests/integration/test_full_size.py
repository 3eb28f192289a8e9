"""The official SAM 3 architecture (840 M parameters, random weights, the ``facebook/sam3`` snapshot layout) through
every command: ``check-model``, ``run``, ``train --mode lora``, ``merge``, ``eval`` and the worker's ``load_engine``.

The tiny model hides shape, key, dtype and memory mistakes; this does not. The checkpoint is written once per session
under pytest's tmp folder (about 1.7 GB in bf16, never in the repository), at a reduced input size of 224 px: every
weight keeps its full-size shape, only the patch grid is smaller, so a slice takes about 3 s on two cores. The study is
a 4-slice, 64² slab of the small phantom (10 phases).
"""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from dicomrt.phantom import PhantomConfig, generate_phantom, slab, write_phantom
from itvsam.cli import app
from model.fullsize import INDEX_FILE, write_full_checkpoint
from tests.conftest import dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]
runner = CliRunner()
DETECTOR_PARAMETERS = 840_376_374  # Sam3Model(Sam3Config()): what the official checkpoint's detector holds
IMAGE_SIZE = 224


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    model = write_full_checkpoint(root / "sam3", image_size=IMAGE_SIZE)
    write_phantom(slab(generate_phantom(PhantomConfig(seed=4)), slices=4, step=2), root / "data" / "slab",
                  vendor="desc-t")
    yield root, model
    shutil.rmtree(root)  # 1.7 GB of random weights, and the merged copy: pytest would keep them for three sessions


def test_the_official_layout_is_what_users_download(full) -> None:
    _, model = full
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == "sam3_video" and config["architectures"] == ["Sam3VideoModel"]
    assert config["detector_config"]["vision_config"]["backbone_config"]["image_size"] == IMAGE_SIZE
    assert "tracker_config" in config
    index = json.loads((model / INDEX_FILE).read_text())["weight_map"]
    shards = sorted(set(index.values()))
    assert len(shards) >= 2 and all((model / name).is_file() for name in shards)
    prefixes = {key.split(".")[0] for key in index}
    assert prefixes == {"detector_model", "tracker_model", "tracker_neck"}
    with safe_open(str(model / shards[0]), "pt") as handle:
        assert handle.get_slice(next(iter(handle.keys()))).get_dtype() == "BF16"


def test_check_model_loads_it_and_times_a_slice(full) -> None:
    _, model = full
    result = invoke("check-model", model)
    assert result.exit_code == 0, result.output
    assert f"{DETECTOR_PARAMETERS:,}" in result.output
    assert "float32 on cpu" in result.output and f"{IMAGE_SIZE} px" in result.output
    assert "0.5 (not calibrated)" in result.output


def test_run_train_merge_eval_and_the_worker_on_the_full_architecture(full) -> None:
    from workers.pipeline import load_engine

    root, model = full
    tmp_path = root / "work"
    study = root / "data" / "slab" / "dicom"
    out = tmp_path / "run"
    result = invoke("run", study, "-o", out, "--model", model)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["outputs"]["rtstruct"]) == 12
    for name in (*summary["outputs"]["rtstruct"], *summary["outputs"]["seg"]):
        assert dciodvfy_errors(out / name) == [], name

    trained = tmp_path / "train"
    result = invoke("train", "-o", trained, "--model", model, "--data", root / "data", "--val-data", root / "data",
                    "--steps", "2", "--epoch-steps", "2", "--slices", "2", "--micro-batch", "1")
    assert result.exit_code == 0, result.output
    record = json.loads((trained / "best" / "training_record.json").read_text())
    assert record["kind"] == "lora_adapter" and record["image_size"] == IMAGE_SIZE
    assert record["parameters"]["total"] - record["parameters"]["trainable"] == DETECTOR_PARAMETERS
    assert record["settings"]["checkpointing"] and record["settings"]["cache_text"]

    merged = tmp_path / "merged"
    result = invoke("merge", "--base", model, "--adapter", trained / "best", "-o", merged)
    assert result.exit_code == 0, result.output
    engine = load_engine(merged)
    assert engine.identity.merged_from is not None and engine.identity.thresholds is not None

    result = invoke("eval", "--data", root / "data", "--model", merged, "-o", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert {row["structure"] for row in report["rows"]} == {"GTV", "Lung_L", "Lung_R", "Heart"}
