"""``itvsam demo``: the main job on a phantom 4DCT with the shipped phantom model, scored against the truth."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from itvsam.cli import app
from itvsam.common import EXIT_USAGE
from itvsam.demo import DEMO_SEED, PHANTOM_MODEL_DIR, training_seeds
from model.recipes import PHANTOM_LABEL

pytestmark = pytest.mark.integration
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_the_shipped_phantom_model_is_labelled_and_never_saw_the_demo_seed() -> None:
    from model.sam3 import model_identity

    assert model_identity(PHANTOM_MODEL_DIR).label == PHANTOM_LABEL
    assert DEMO_SEED not in training_seeds(PHANTOM_MODEL_DIR) and len(training_seeds(PHANTOM_MODEL_DIR)) >= 8
    assert sum(p.stat().st_size for p in PHANTOM_MODEL_DIR.iterdir()) < 5 << 20


def test_demo_refuses_a_training_seed(tmp_path) -> None:
    seed = min(training_seeds(PHANTOM_MODEL_DIR))
    result = invoke("demo", "-o", tmp_path / "d", "--seed", seed)
    assert result.exit_code == EXIT_USAGE
    assert "was used to train" in result.output


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The real ``itvsam demo`` (seed 7, the shipped model), once: about 30-60 s on one CPU thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo") / "out"
    try:
        result = invoke("demo", "-o", out)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out, result.output, json.loads((out / "demo_metrics.json").read_text())


def _dice(metrics: dict) -> dict[str, float]:
    return {name: values["dice"] for name, values in metrics["structures"].items()}


def test_demo_end_to_end_writes_everything(demo_run) -> None:
    out, output, metrics = demo_run
    assert "PHANTOM" in metrics["model"]["label"] and metrics["seed"] == DEMO_SEED
    assert (out / "result" / "RS_reference.dcm").is_file() and (out / "study" / "truth.npz").is_file()
    assert "ITV" in output and "NOT for patients" in output
    summary = json.loads((out / "result" / "summary.json").read_text())
    calibrated = json.loads((PHANTOM_MODEL_DIR / "itvsam_calibration.json").read_text())["thresholds"]
    assert {name: s["threshold"] for name, s in summary["structures"].items()} == calibrated


def test_demo_reaches_the_acceptance_bar(demo_run) -> None:
    # the shipped model (model/phantom_model/README.md): lungs 0.971 / 0.982, heart 0.942, ITV 0.932, GTV 0.906
    dice = _dice(demo_run[2])
    assert dice["Lung_L"] >= 0.95 and dice["Lung_R"] >= 0.95 and dice["Heart"] >= 0.90 and dice["ITV"] >= 0.85, dice
    assert dice["GTV"] >= 0.85, dice
