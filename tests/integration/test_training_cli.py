"""``itvsam train`` → ``itvsam run --adapter`` and ``itvsam eval`` on a phantom study with the tiny SAM 3."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from itvsam.cli import app
from itvsam.common import EXIT_REFUSED, EXIT_USAGE
from model.sam3 import adapter_sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]
runner = CliRunner()
TEMPLATE = "structures:\n  - name: Heart\n    prompts: [heart]\n    type: ORGAN\n    components: 1\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from model.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("train")
    assert invoke("phantom", root / "data" / "p4", "--seed", "4").exit_code == 0
    (root / "heart.yaml").write_text(TEMPLATE)
    return root, write_tiny_checkpoint(root / "model")


def test_an_adapter_saved_by_train_loads_in_run_and_eval(setup, tmp_path, one_torch_thread):
    root, model = setup
    template = root / "heart.yaml"
    result = invoke("train", "-o", tmp_path / "t", "--model", model, "--data", root / "data", "--val-data",
                    root / "data", "--template", template, "--steps", "2", "--epoch-steps", "2", "--slices", "2",
                    "--threads", "1")
    assert result.exit_code == 0, result.output
    best = tmp_path / "t" / "best"
    record = json.loads((best / "training_record.json").read_text())
    assert record["data"]["data"] == [str(root / "data")] and record["data"]["command"].startswith("itvsam train")
    out = tmp_path / "run"
    result = invoke("run", root / "data" / "p4" / "dicom", "-o", out, "--model", model, "--adapter", best,
                    "--template", template)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["adapter_sha256"] == adapter_sha256(best)
    calibrated = json.loads((best / "itvsam_calibration.json").read_text())["thresholds"]
    assert summary["model"]["thresholds"] == calibrated  # the adapter's calibration, used by run
    assert summary["structures"]["Heart"]["threshold"] == calibrated["Heart"]
    result = invoke("eval", "--data", root / "data", "--model", model, "--adapter", best, "--template", template,
                    "-o", tmp_path / "eval", "--threads", "1")
    assert result.exit_code == 0, result.output
    with (tmp_path / "eval" / "eval.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["phase"] for r in rows] == [str(k) for k in range(10)]
    assert "Heart: Dice" in result.output
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["meta"]["thresholds"] == calibrated


def test_train_refuses_bad_usage_and_unmapped_data(setup, tmp_path):
    root, model = setup
    assert invoke("train", "-o", tmp_path / "a", "--data", root / "data").exit_code == EXIT_USAGE
    assert invoke("train", "-o", tmp_path / "b", "--model", model).exit_code == EXIT_USAGE
    result = invoke("train", "-o", tmp_path / "d", "--model", model, "--data", root / "data", "--image-size", "168")
    assert result.exit_code == EXIT_USAGE and "needs full training" in result.output
    (tmp_path / "bad.yaml").write_text("structures:\n  - name: Spleen\n    prompts: [spleen]\n    type: ORGAN\n")
    result = invoke("train", "-o", tmp_path / "c", "--model", model, "--data", root / "data", "--template",
                    tmp_path / "bad.yaml")
    assert result.exit_code == EXIT_REFUSED
    assert "Spleen" in result.output
