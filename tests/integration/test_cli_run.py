"""``itvsam run`` end to end on a small phantom with the tiny SAM 3 model: every output written and valid."""

from __future__ import annotations

import json

import pydicom
import pytest
from typer.testing import CliRunner

from itvsam.cli import app
from itvsam.common import EXIT_MODEL, EXIT_PATH, EXIT_REFUSED
from jobs.options import JobOptions
from model.sam3 import model_identity
from tests.conftest import dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from model.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("run")
    assert invoke("phantom", root / "p", "--seed", "4").exit_code == 0
    return root / "p" / "dicom", write_tiny_checkpoint(root / "model")


def test_run_writes_every_output_dciodvfy_clean(inputs, tmp_path, one_torch_thread):
    study, model = inputs
    out = tmp_path / "out"
    result = invoke("run", study, "-o", out, "--model", model)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outputs"]["rtstruct"] == [*(f"RS_phase{k:02d}.dcm" for k in range(10)), "RS_reference.dcm",
                                              "RS_combined.dcm"]
    assert summary["outputs"]["derived"] == ["derived/AIP", "derived/MIP"]
    assert summary["model"] == model_identity(model).to_dict()  # the model on disk, not whatever ran
    assert summary["options"] == JobOptions().to_json()  # the defaults, spelled out
    assert list(summary["structures"]) == ["GTV", "Lung_L", "Lung_R", "Heart"]
    timings = summary["timings"]
    stages = ("reading_s", "model_s", "refining_s", "writing_s")
    assert min(timings[k] for k in stages) > 0
    assert timings["total_s"] == pytest.approx(sum(timings[k] for k in stages), abs=0.01)
    assert timings["wall_s"] > timings["model_s"]  # the stages that overlap the model are counted in full
    assert timings["overlap_s"] == pytest.approx(timings["total_s"] - timings["wall_s"], abs=0.01)
    assert all(flag.split(":")[0] in summary["structures"] for flag in summary["flags"]), summary["flags"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reference = pydicom.dcmread(out / "RS_reference.dcm")
    assert reference.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[
        0].SeriesInstanceUID == pydicom.dcmread(next((out / "derived" / "AIP").iterdir())).SeriesInstanceUID
    written = [*(out / name for name in summary["outputs"]["rtstruct"]),
               *(out / name for name in summary["outputs"]["seg"]),
               next((out / "derived" / "AIP").iterdir()), next((out / "derived" / "MIP").iterdir())]
    for path in written:
        assert dciodvfy_errors(path) == [], path.name
    again = invoke("run", study, "-o", out, "--model", model)
    assert again.exit_code == EXIT_PATH
    assert "is not empty" in again.stderr


def test_run_refuses_missing_model_bad_study_and_output_inside_input(inputs, tmp_path, shared_data):
    study, model = inputs
    result = invoke("run", study, "-o", tmp_path / "a", "--model", tmp_path / "no-model")
    assert result.exit_code == EXIT_MODEL
    assert "no-model" in result.stderr
    result = invoke("run", shared_data / "totalseg_ct_original", "-o", tmp_path / "b", "--model", model)
    assert result.exit_code == EXIT_REFUSED
    assert "[missing_uid]" in result.stderr
    result = invoke("run", study, "-o", study / "out", "--model", model, "--force")
    assert result.exit_code == EXIT_PATH
    assert "overlaps the input" in result.stderr
