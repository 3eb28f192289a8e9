"""The GPU benchmark's reduced CPU mode runs (so the prepared script cannot rot) and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_cpu_smoke_prints_one_table() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--cpu-smoke"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["px", "batch"])
    rows = [line.split() for line in lines[header + 2:] if line.strip()]
    assert [row[:3] for row in rows] == [["112", "1", "1"], ["112", "2", "2"]]
    assert all(float(row[6]) > 0 for row in rows)  # slices/s


@pytest.mark.slow
def test_gpu_bench_job_mode_runs_the_whole_job_on_cpu() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--job", "--cpu-smoke"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "whole job (run_job)" in result.stdout and "40 slices" in result.stdout
    assert "12 RTSTRUCTs" in result.stdout and "slices/s" in result.stdout
