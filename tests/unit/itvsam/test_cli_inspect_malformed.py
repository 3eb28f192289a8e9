"""``itvsam inspect`` on a study holding a file whose VR code one flipped bit corrupted (issue 14): a refusal or a
warning, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from itvsam.cli import app
from itvsam.common import EXIT_REFUSED
from tests.fuzz.mutations import elements

runner = CliRunner()


@pytest.fixture(scope="module")
def phases(tmp_path_factory) -> list[list[Path]]:
    files = write_phantom(generate_phantom(PhantomConfig(seed=9, n_phases=2)), tmp_path_factory.mktemp("phantom"),
                          vendor="desc-t")
    return [list(volume.paths[10:16]) for volume in files.phases]


def corrupt_vr(path: Path, tag: int, vr: bytes) -> None:
    data = bytearray(path.read_bytes())
    element = next(e for e in elements(bytes(data)) if e.tag == tag)
    data[element.vr_offset:element.vr_offset + 2] = vr
    path.write_bytes(bytes(data))


def copy(phases: list[list[Path]], folder: Path) -> list[list[Path]]:
    folder.mkdir()
    return [[Path(shutil.copy(p, folder / p.name)) for p in paths] for paths in phases]


def test_inspect_refuses_a_study_with_an_unreadable_middle_slice(phases, tmp_path):
    copied = copy(phases, tmp_path / "study")
    corrupt_vr(copied[0][2], 0x00200052, b"UA")  # FrameOfReferenceUID: UI -> UA
    result = runner.invoke(app, ["inspect", str(tmp_path / "study"), "--json"])
    assert result.exit_code == EXIT_REFUSED, result.output
    assert json.loads(result.stdout)["error"]["code"] == "missing_slices"


def test_inspect_reads_a_study_whose_unreadable_files_it_can_do_without(phases, tmp_path):
    copied = copy(phases, tmp_path / "study")
    for paths in copied:  # the top slice of both phases: (0028,0002) US -> 0x55 0xfe
        corrupt_vr(paths[-1], 0x00280002, b"\x55\xfe")
    result = runner.invoke(app, ["inspect", str(tmp_path / "study"), "--json"])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert "skipped 2 of 12 files (2 unreadable)" in warnings
    assert any("SamplesPerPixel (0028,0002) is not one integer (NotImplementedError)" in w for w in warnings)
