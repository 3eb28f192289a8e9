"""Shared test helpers: the real DICOM files in ``../shared/data`` and the Debian tools the tests run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_MEASURED: list[str] = []


def _shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("ITVSAM_SHARED_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate, "README.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$ITVSAM_SHARED_DATA``): real vendor DICOM files; skips when absent."""
    found = _shared_data_dir()
    if found is None:
        pytest.skip("real DICOM test data not found: set ITVSAM_SHARED_DATA or place it at ../shared/data")
    return found


def require_tool(name: str) -> str:
    """The path of a Debian tool; skips when it is missing, or fails when ITVSAM_REQUIRE_TOOLS is set (CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/setup.sh installs it as root)"
        if os.environ.get("ITVSAM_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy reports for one DICOM file (an empty list for a valid object)."""
    result = subprocess.run([require_tool("dciodvfy"), "-new", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads; on a busy 2-core machine OpenMP spinning makes them 10-50x slower."""
    try:
        import torch
    except ImportError:  # the torch-free parts are tested without it
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def measured():
    """``measured(line)`` keeps a measured figure (Dice before/after, fuzz counts, soak memory) for the end-of-run
    summary, so that the CI log shows it."""
    return _MEASURED.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MEASURED:
        terminalreporter.section("itvsam: measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)
