"""Helpers of the DICOM networking tests: dcmtk's tools (not pynetdicom's same-named scripts in the venv), a dcmtk
``storescp`` playing the planning system, the listener in-process on a free port, and a queue that records."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.dicom.scp import Listener, start_listener
from service.settings import ListenerSettings
from tests.conftest import require_tool
from tests.support.service import Proc, free_port, wait_for

SENDER = "SCANNER"  # the calling AE title the tests send as
# dcmtk waits on Nagle's algorithm without it: 440 small instances take 40 s instead of 0.6 s (measured).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(name: str) -> str:
    """The path of dcmtk's ``name``: pynetdicom installs scripts of the same names (storescu, storescp, echoscu)
    into the venv, which come first on PATH."""
    require_tool(name)
    venv_bin = Path(sys.prefix, "bin").resolve()
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = Path(folder, name)
        if folder and candidate.is_file() and candidate.resolve().parent != venv_bin and os.access(candidate, os.X_OK):
            with open(candidate, "rb") as handle:
                if handle.read(2) != b"#!":  # a binary, not a Python script
                    return str(candidate)
    if os.environ.get("ITVSAM_REQUIRE_TOOLS"):
        pytest.fail(f"dcmtk's {name} is not installed (only pynetdicom's script of that name)")
    pytest.skip(f"dcmtk's {name} is not installed (only pynetdicom's script of that name)")
    raise AssertionError("unreachable")


# storescu proposes uncompressed transfer syntaxes unless told: the option that proposes the files' own.
PROPOSE = {"none": "-xe", "rle": "-xr", "jpeg2000": "-xv"}


def storescu(port: int, *paths: Path, aet: str = SENDER, aec: str = "ITVSAM", compression: str = "none",
             ) -> subprocess.CompletedProcess:
    """dcmtk storescu: every file under ``paths`` to 127.0.0.1:``port`` on one association."""
    argv = [dcmtk("storescu"), "-aet", aet, "-aec", aec, PROPOSE[compression], "-R", "+sd", "+r", "127.0.0.1",
            str(port), *map(str, paths)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=DCMTK_ENV, check=False)


def listener_settings(root: Path, **changes: Any) -> ListenerSettings:
    """Settings of an in-process listener for the tests: a free port, short settle and idle times, fast retries."""
    values: dict[str, Any] = {
        "store_dir": root / "store", "scp_host": "127.0.0.1", "scp_port": 0, "scp_peers": f"{SENDER}@127.0.0.1",
        "scp_settle_s": 0.5, "scp_idle_timeout_s": 3.0, "min_free_bytes": 0, "min_free_fraction": 0.0,
        "delivery_backoff_s": 0.5, "delivery_max_backoff_s": 1.0, "scp_acse_timeout_s": 10,
        "scp_dimse_timeout_s": 30, "scp_network_timeout_s": 30,
    }
    values.update(changes)
    return ListenerSettings(**values)


class RecordingQueue:
    """A queue that records the jobs sent (the listener tests need no Redis or worker)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def enqueue(self, job_id: str) -> bool:
        self.sent.append(job_id)
        return True


@contextlib.contextmanager
def running_listener(settings: ListenerSettings, queue: Any) -> Iterator[Listener]:
    listener = start_listener(settings, queue, tick_s=0.1)
    try:
        yield listener
    finally:
        listener.shutdown()


class PlanningSystem:
    """dcmtk ``storescp`` on a free port, as a treatment planning system receiving our results."""

    def __init__(self, root: Path, ae_title: str = "TPS", port: int | None = None) -> None:
        self.ae_title = ae_title
        self.port = port or free_port()
        self.received = root / f"tps-{self.port}"
        self.received.mkdir(parents=True, exist_ok=True)
        self.log = root / f"storescp-{self.port}.log"
        self.proc: Proc | None = None

    def start(self) -> PlanningSystem:
        argv = [dcmtk("storescp"), "-aet", self.ae_title, "-od", str(self.received), "+xa", str(self.port)]
        self.proc = Proc("storescp", argv, DCMTK_ENV, self.log)
        wait_for("storescp listening", lambda: self._echo() or (not self.proc.alive() and self._died()), 20)
        return self

    def _echo(self) -> bool:
        result = subprocess.run([dcmtk("echoscu"), "-aec", self.ae_title, "127.0.0.1", str(self.port)],
                                capture_output=True, timeout=20, env=DCMTK_ENV, check=False)
        return result.returncode == 0

    def _died(self) -> bool:
        raise AssertionError(f"storescp exited:\n{self.proc.tail() if self.proc else ''}")

    def files(self) -> list[Path]:
        return sorted(p for p in self.received.rglob("*") if p.is_file())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def destination(self, name: str = "tps", **changes: Any) -> dict[str, Any]:
        return {"name": name, "ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port, **changes}
