"""dciodvfy (dicom3tools) on the phantom's files: every vendor style, the AIP, and each compression."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dicomrt.phantom import (
    Compression,
    Phantom4D,
    PhantomConfig,
    PhantomFiles,
    VendorStyle,
    generate_phantom,
    write_phantom,
)
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

# The only warnings the phantom's files may draw, and why they are accepted:
ACCEPTED_WARNINGS = (
    # the AIP's ImageType value 4: dicom3tools knows only the multi-energy terms for it; AVERAGE tells what it is
    re.compile(r"Unrecognized defined term <AVERAGE> for value 4 of attribute <Image Type>"),
    re.compile(r"</ImageType\(0008,0008\)\[4\]> - Unrecognized defined term = <AVERAGE>"),
    # the phase tags of the 'nominal' and 'single-temporal' styles are standard, but not in the CT Image IOD
    re.compile(r"Attribute is not present in standard DICOM IOD - \(0x0020,0x(9245|0100|0105)\)"),
    re.compile(r"</(NominalPercentageOfRespiratoryPhase|TemporalPositionIdentifier|NumberOfTemporalPositions)"
               r"\(0020,(9245|0100|0105)\)> - Attribute is not present in standard DICOM IOD"),
    re.compile(r"Dicom dataset contains attributes not present in standard DICOM IOD - this is a Standard Extended "
               r"SOP Class"),
)


@pytest.fixture(scope="module")
def dciodvfy() -> str:
    return require_tool("dciodvfy")


@pytest.fixture(scope="module")
def phantom() -> Phantom4D:
    return generate_phantom(PhantomConfig(seed=5, size="small", artifacts=("duplicate",)))


def _sample(files: PhantomFiles) -> list[Path]:
    """The first and last slice of the first and last phase, a middle slice of a middle phase, and the AIP's ends."""
    phases = files.phases
    paths = [phases[0].paths[0], phases[0].paths[-1], phases[-1].paths[0], phases[-1].paths[-1],
             phases[len(phases) // 2].paths[len(phases[0].paths) // 2]]
    if files.aip is not None:
        paths += [files.aip.paths[0], files.aip.paths[-1]]
    return paths


def _check(dciodvfy: str, path: Path, label: str) -> list[str]:
    """Run dciodvfy (plain and ``-new``); fail on any Error line; return the warnings."""
    warnings = []
    for options in ([], ["-new"]):
        result = subprocess.run([dciodvfy, *options, str(path)], capture_output=True, text=True, timeout=120,
                                check=False)
        output = result.stdout + result.stderr
        lines = [line.strip() for line in output.splitlines()]
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"dciodvfy {' '.join(options)} {label} {path.name}:\n{output}"
        warnings += [line for line in lines if line.startswith("Warning")]
    return warnings


@pytest.mark.parametrize(("style", "compression"), [
    *((style, Compression.NONE) for style in VendorStyle),
    (VendorStyle.DESC_T, Compression.RLE),
    (VendorStyle.SINGLE_TEMPORAL, Compression.RLE),
    (VendorStyle.DESC_EXIN, Compression.JPEG2000),
    (VendorStyle.NOMINAL, Compression.JPEG2000),
])
def test_dciodvfy_finds_no_errors(style, compression, phantom, dciodvfy, tmp_path) -> None:
    files = write_phantom(phantom, tmp_path, vendor=style, aip=True, compression=compression)
    label = f"({style.value}, {compression.value})"
    for path in _sample(files):
        warnings = _check(dciodvfy, path, label)
        unexpected = [w for w in warnings if not any(p.search(w) for p in ACCEPTED_WARNINGS)]
        assert not unexpected, f"dciodvfy {label} {path.name}: unexpected warnings:\n" + "\n".join(unexpected)
