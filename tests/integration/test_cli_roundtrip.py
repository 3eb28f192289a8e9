"""The command line end to end: ``itvsam phantom`` → ``itvsam inspect`` for every vendor style, and
``itvsam contour`` from the phantom's truth masks, every object written checked with dciodvfy."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from dicomrt.phantom import STRUCTURES, VendorStyle
from itvsam.cli import app
from itvsam.common import EXIT_PATH, EXIT_REFUSED
from tests.conftest import dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.mark.parametrize("style", list(VendorStyle))
def test_phantom_then_inspect_every_vendor_style(style, tmp_path):
    result = invoke("phantom", str(tmp_path), "--seed", "5", "--vendor", style.value)
    assert result.exit_code == 0, result.output
    result = invoke("inspect", str(tmp_path / "dicom"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [p["percent"] for p in summary["phases"]] == [10.0 * k for k in range(10)]
    assert summary["geometry"]["shape_zyx"] == [44, 128, 128]
    assert summary["geometry"]["spacing_mm_zyx"] == [5.0, 3.0, 3.0]
    assert summary["reference"]["label"] == "50%"
    assert summary["patient"]["id"] == "PHANTOM-5"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    assert invoke("phantom", str(root / "p"), "--seed", "9", "--aip").exit_code == 0
    with np.load(root / "p" / "truth.npz") as truth:
        np.savez_compressed(root / "masks.npz", **{name: truth[name] for name in STRUCTURES})
    return root


def test_contour_writes_every_mode_dciodvfy_clean(study, tmp_path):
    out = tmp_path / "out"
    result = invoke("contour", str(study / "p" / "dicom"), str(study / "masks.npz"), "-o", str(out))
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm"))
    assert [p for p in written if p.startswith("RS_")] == sorted(
        [*(f"RS_phase{k:02d}.dcm" for k in range(10)), "RS_combined.dcm", "RS_reference.dcm"])
    assert len([p for p in written if p.startswith("seg/")]) == 10
    reference = pydicom.dcmread(out / "RS_reference.dcm")
    names = [roi.ROIName for roi in reference.StructureSetROISequence]
    assert "ITV" in names
    assert "GTV_T00" in names
    for name in ("RS_reference.dcm", "RS_phase05.dcm", "RS_combined.dcm", written[-1]):
        assert dciodvfy_errors(out / name) == []
    # nothing is overwritten
    again = invoke("contour", str(study / "p" / "dicom"), str(study / "masks.npz"), "-o", str(out))
    assert again.exit_code == EXIT_PATH
    assert "is not empty" in again.stderr


def test_contour_refuses_masks_off_the_grid(study, tmp_path):
    np.savez(tmp_path / "bad.npz", GTV=np.zeros((10, 44, 128, 64), bool))
    result = invoke("contour", str(study / "p" / "dicom"), str(tmp_path / "bad.npz"), "-o", str(tmp_path / "o"))
    assert result.exit_code == EXIT_REFUSED
    assert "expected shape (phase, z, y, x) (10, 44, 128, 128) or (z, y, x) (44, 128, 128)" in result.stderr
    assert "got (10, 44, 128, 64)" in result.stderr
