"""Compressed pixel data written by real encoders (dcmtk) decodes to the same HU volume as the original."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomrt.reader import read_study
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

ENCODERS = {
    "JPEG lossless SV1 (dcmcjpeg)": (["dcmcjpeg", "+e1"], "1.2.840.10008.1.2.4.70"),
    "JPEG lossless process 14 (dcmcjpeg)": (["dcmcjpeg", "+el"], "1.2.840.10008.1.2.4.57"),
    "JPEG-LS lossless (dcmcjpls)": (["dcmcjpls", "+el"], "1.2.840.10008.1.2.4.80"),
    "RLE lossless (dcmcrle)": (["dcmcrle"], "1.2.840.10008.1.2.5"),
}


@pytest.fixture(scope="module")
def native_copy(shared_data: Path, tmp_path_factory) -> Path:
    """The real JPEG 2000 series decompressed to explicit VR little endian by pydicom."""
    out = tmp_path_factory.mktemp("native")
    for path in sorted((shared_data / "totalseg_ct").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.decompress()
        ds.save_as(out / path.name)
    return out


@pytest.fixture(scope="module")
def original_volume(shared_data: Path) -> np.ndarray:
    return read_study(shared_data / "totalseg_ct").phases[0].volume


def test_native_copy_matches_jpeg2000_original(native_copy, original_volume):
    np.testing.assert_array_equal(read_study(native_copy).phases[0].volume, original_volume)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_dcmtk_encoded_series_decodes_identically(name, native_copy, original_volume, tmp_path):
    command, transfer_syntax = ENCODERS[name]
    tool = require_tool(command[0])
    for path in sorted(native_copy.glob("*.dcm")):
        subprocess.run([tool, *command[1:], str(path), str(tmp_path / path.name)], check=True, capture_output=True)
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for p in tmp_path.glob("*.dcm")} == {transfer_syntax}
    np.testing.assert_array_equal(read_study(tmp_path).phases[0].volume, original_volume)


def test_implicit_vr_little_endian_reads_identically(native_copy, original_volume, tmp_path):
    for path in sorted(native_copy.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(tmp_path / path.name, implicit_vr=True, little_endian=True)
    np.testing.assert_array_equal(read_study(tmp_path).phases[0].volume, original_volume)
