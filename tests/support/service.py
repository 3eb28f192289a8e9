"""Helpers of the service tests: phantom studies and bad uploads, request bodies, and real processes (redis-server,
the gateway under uvicorn, Celery workers) on free ports, polled for readiness with timeouts."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pydicom

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from service.settings import hash_api_key

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-for-itvsam-service-tests"
API_KEY_HASH = hash_api_key(API_KEY)
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# A light job for the tiny model: one structure, the reference RTSTRUCT only (a full job takes ~40 s on 2 cores).
LIGHT_OPTIONS: dict[str, Any] = {
    "template": [{"name": "GTV", "prompts": ["gross tumor volume"], "type": "GTV", "itv": True}],
    "mode": "reference", "seg": False, "projections": False,
}
T = TypeVar("T")


def phantom_study(out: Path, seed: int) -> Path:
    """A small 10-phase phantom (128x128x44 per phase, 440 files); returns its DICOM folder."""
    return write_phantom(generate_phantom(PhantomConfig(seed=seed, size="small")), out, vendor="desc-t").dicom_dir


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def by_series(folder: Path) -> dict[str, list[Path]]:
    series: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        series[pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID].append(path)
    return series


def missing_phase_copy(study: Path, out: Path) -> Path:
    """The study without its last phase series."""
    shutil.copytree(study, out)
    for path in list(by_series(out).values())[-1]:
        path.unlink()
    return out


def mixed_patient_copy(study: Path, out: Path) -> Path:
    """The study with one phase series re-labelled as another patient."""
    shutil.copytree(study, out)
    for path in next(iter(by_series(out).values())):
        ds = pydicom.dcmread(path)
        ds.PatientID = "SOMEONE-ELSE"
        ds.PatientName = "Else^Someone"
        ds.save_as(path)
    return out


def zip_bomb(archive: Path, size: int = 64 * 1024 * 1024) -> Path:
    """One entry of ``size`` zero bytes (deflates ~1000 times)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("ct.dcm", "w", force_zip64=True) as out:
        block = bytes(1024 * 1024)
        for _ in range(size // len(block)):
            out.write(block)
    return archive


def zip_slip(archive: Path, study: Path) -> Path:
    """The study's first file, and a copy named ``../../evil.dcm``."""
    first = next(p for p in sorted(study.iterdir()))
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(first, first.name)
        zf.write(first, "../../evil.dcm")
    return archive


def multipart(parts: list[tuple[dict[str, str], bytes]], related: bool = False) -> tuple[bytes, str]:
    """A multipart body of (headers, content) parts and its Content-Type."""
    boundary = "itvsam-test-boundary-7f3a"
    body = io.BytesIO()
    for headers, content in parts:
        body.write(f"--{boundary}\r\n".encode())
        for name, value in headers.items():
            body.write(f"{name}: {value}\r\n".encode())
        body.write(b"\r\n" + content + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    kind = 'multipart/related; type="application/dicom"' if related else "multipart/form-data"
    return body.getvalue(), f"{kind}; boundary={boundary}"


def stow_body(files: list[Path]) -> tuple[bytes, str]:
    return multipart([({"Content-Type": "application/dicom"}, p.read_bytes()) for p in files], related=True)


def form_body(files: list[Path], options: str | None = None) -> tuple[bytes, str]:
    parts = [({"Content-Disposition": f'form-data; name="files"; filename="{p.name}"',
               "Content-Type": "application/dicom"}, p.read_bytes()) for p in files]
    if options is not None:
        parts.append(({"Content-Disposition": 'form-data; name="options"'}, options.encode()))
    return multipart(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, interval_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except AssertionError:
            raise
        except Exception as exc:  # a server that is not up yet refuses connections
            last_error, value = exc, None
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what} (last error: {last_error})")


class Proc:
    """A child process in its own process group (so kill -9 takes its children too), output to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=REPO,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (no cleanup, as a crash)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._out.close()

    def stop(self, timeout_s: float = 20) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        with contextlib.suppress(ProcessLookupError):  # leftovers of the group (pool children)
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._out.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class RedisServer:
    """A private redis-server on a free port, without persistence (a restart loses every key, as the worst case)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = Proc("redis", [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(self.folder)], dict(os.environ),
                         self.folder / "redis.log")
        client = redis.Redis(port=self.port)
        wait_for("redis-server", client.ping, 15)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def service_env(store: Path, redis_url: str, model_dir: Path | None, **extra: str) -> dict[str, str]:
    """Environment of gateway and workers for the tests: short leases and intervals so faults heal quickly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITVSAM_")}
    env.update({
        "ITVSAM_STORE_DIR": str(store), "ITVSAM_REDIS_URL": redis_url, "ITVSAM_API_KEY_HASHES": API_KEY_HASH,
        "ITVSAM_DEVICE": "cpu", "ITVSAM_LEASE_S": "3", "ITVSAM_HEARTBEAT_TTL_S": "3",
        "ITVSAM_MAINTENANCE_INTERVAL_S": "1", "ITVSAM_EVENTS_POLL_S": "0.2", "ITVSAM_RETRY_BACKOFF_S": "1",
        "ITVSAM_UNACKED_RESTORE_INTERVAL_S": "1", "ITVSAM_MIN_FREE_BYTES": "0", "ITVSAM_MIN_FREE_FRACTION": "0",
        "ITVSAM_JOB_SOFT_TIME_LIMIT_S": "120", "ITVSAM_JOB_TIME_LIMIT_S": "130", "ITVSAM_VISIBILITY_TIMEOUT_S": "140",
        "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    })
    if model_dir is not None:
        env["ITVSAM_MODEL_DIR"] = str(model_dir)
    env.update(extra)
    return env


def itvsam_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", "from itvsam.cli import app; app()", *args]


def start_gateway(env: dict[str, str], port: int, log: Path) -> Proc:
    import httpx

    proc = Proc("gateway", itvsam_argv("serve", "--port", str(port)), env, log)

    def healthy() -> bool:
        if not proc.alive():
            raise AssertionError(f"the gateway exited with {proc.popen.returncode}:\n{proc.tail()}")
        return httpx.get(f"http://127.0.0.1:{port}/healthz").is_success

    wait_for("the gateway", healthy, 60)
    return proc


def start_worker(env: dict[str, str], log: Path, app: str | None = None) -> Proc:
    """``itvsam worker`` (or ``celery -A app worker`` for a test app wrapping the real one)."""
    if app is None:
        argv = itvsam_argv("worker", "--loglevel", "info")
    else:
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "--queues", "gpu", "--concurrency", "1",
                "--pool", "prefork", "--loglevel", "info", "--without-mingle", "--without-gossip"]
    return Proc("worker", argv, env, log)


@contextlib.contextmanager
def running_service(root: Path, **extra: str) -> Iterator[dict[str, Any]]:
    """The whole service in ``root``: a private Redis, an ``itvsam worker`` holding a tiny random SAM 3 and the
    gateway, once ``/readyz`` says a worker has its model; stopped on exit. Yields ``url``, ``root``, ``env``,
    ``redis`` (its URL), ``worker``, ``gateway`` and an authenticated ``client``. ``extra``: more environment."""
    import httpx

    from model.tiny import write_tiny_checkpoint

    redis_server = RedisServer(root)
    redis_server.start()
    env = service_env(root / "store", redis_server.url, write_tiny_checkpoint(root / "model"), **extra)
    port = free_port()
    worker = start_worker(env, root / "worker.log")
    gateway = start_gateway(env, port, root / "gateway.log")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if httpx.get(f"{url}/readyz").status_code == 200:
            return True
        if not worker.alive():
            raise AssertionError(f"worker died:\n{worker.tail()}")
        return False

    try:
        wait_for("a worker with its model", ready, 120)
        yield {"url": url, "root": root, "env": env, "redis": redis_server.url, "worker": worker, "gateway": gateway,
               "client": httpx.Client(base_url=url, headers=AUTH, timeout=60)}
    finally:
        gateway.stop()
        worker.stop()
        redis_server.stop()


@contextlib.contextmanager
def stopping(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()
