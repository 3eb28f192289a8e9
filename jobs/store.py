"""The job store: a filesystem root (a shared volume when workers run on other machines).

Layout::

    ROOT/jobs/<id>/manifest.json   the authority on the job's state (written atomically: write, fsync, rename)
    ROOT/jobs/<id>/input/          the uploaded study, files named by us (000001.dcm, ...)
    ROOT/jobs/<id>/output/         what the pipeline wrote
    ROOT/jobs/<id>/result.zip      all of output/, made on first download
    ROOT/staging/<random>/         uploads being received and checked
    ROOT/index/<key>               idempotency: the id of the job made from a study (and its options)

Every path is built from our own ids (checked against ``JOB_ID``), never from a name found in an upload.
Read-modify-write of a manifest holds an exclusive ``flock`` on the job's ``.lock`` file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jobs.manifest import JOB_ID, JobState, Manifest

MANIFEST = "manifest.json"


class JobNotFoundError(LookupError):
    """No job has this id (or the id is not one of ours)."""


@dataclass(frozen=True)
class DiskSpace:
    free_bytes: int
    total_bytes: int

    @property
    def free_fraction(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a part: write a temporary
    file beside it, fsync it, rename it over ``path``, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class JobStore:
    """Jobs on disk. Safe to use from several processes (gateway, workers) on one filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs = self.root / "jobs"
        self.staging = self.root / "staging"
        self.index = self.root / "index"
        for folder in (self.jobs, self.staging, self.index):
            folder.mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise JobNotFoundError(f"no job {job_id!r}: job ids are 24 hex digits")
        return self.jobs / job_id

    def input_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "input"

    def output_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "output"

    @contextlib.contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A new empty folder for an upload; removed on leaving unless its contents were moved into a job."""
        folder = self.staging / secrets.token_hex(12)
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- manifests ----------------------------------------------------------------------------------------------------
    def read(self, job_id: str) -> Manifest:
        path = self.job_dir(job_id) / MANIFEST
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise JobNotFoundError(f"no job {job_id}") from None

    def _write(self, manifest: Manifest) -> None:
        write_atomically(self.job_dir(manifest.id) / MANIFEST, manifest.model_dump_json(indent=1).encode())

    def update(self, job_id: str, change: Callable[[Manifest], Manifest | None]) -> Manifest:
        """Apply ``change`` to the job's manifest under the job's lock and write the result (``change`` may edit the
        manifest in place and return None, or return a new one). Returns the manifest as written."""
        folder = self.job_dir(job_id)
        if not (folder / MANIFEST).exists():
            raise JobNotFoundError(f"no job {job_id}")
        with _locked(folder / ".lock"):
            manifest = self.read(job_id)
            returned = change(manifest)
            changed = returned if isinstance(returned, Manifest) else manifest
            changed.updated_at = time.time()
            self._write(changed)
            return changed

    def create_or_get(self, staged_input: Path, manifest: Manifest, force: bool = False) -> tuple[Manifest, bool]:
        """Make a job of ``staged_input`` (moved into it) unless a live job (queued, running or succeeded) already has
        ``manifest.idempotency_key`` (and not ``force``): then that job is returned and nothing moves.
        Returns (job, created)."""
        key_file = self.index / manifest.idempotency_key
        with _locked(self.index / ".lock"):
            existing = None if force else self._indexed(key_file)
            if existing is not None:
                return existing, False
            folder = self.job_dir(manifest.id)
            folder.mkdir()
            staged_input.rename(folder / "input")
            (folder / "output").mkdir()
            self._write(manifest)
            write_atomically(key_file, manifest.id.encode())
            return manifest, True

    def _indexed(self, key_file: Path) -> Manifest | None:
        try:
            job = self.read(key_file.read_text().strip())
        except (FileNotFoundError, JobNotFoundError):
            return None
        return None if job.state in (JobState.FAILED, JobState.CANCELLED) else job

    def ids(self) -> list[str]:
        """Every job id, newest first (ids begin with their creation time)."""
        return sorted((p.name for p in self.jobs.iterdir() if JOB_ID.match(p.name) and (p / MANIFEST).exists()),
                      reverse=True)

    def manifests(self) -> Iterator[Manifest]:
        for job_id in self.ids():
            with contextlib.suppress(JobNotFoundError):
                yield self.read(job_id)

    def page(self, offset: int, limit: int, state: JobState | None = None) -> tuple[list[Manifest], int]:
        """Jobs newest first: the ``limit`` after ``offset`` (of those in ``state``), and how many there are."""
        if state is None:
            ids = self.ids()
            return [m for m in map(self._read_or_none, ids[offset:offset + limit]) if m is not None], len(ids)
        matching = [m for m in self.manifests() if m.state is state]
        return matching[offset:offset + limit], len(matching)

    def _read_or_none(self, job_id: str) -> Manifest | None:
        try:
            return self.read(job_id)
        except JobNotFoundError:
            return None

    def delete(self, job_id: str) -> None:
        """Remove the job's folder and its index entry (if the entry still names it)."""
        folder = self.job_dir(job_id)
        manifest = self.read(job_id)
        with _locked(self.index / ".lock"):
            key_file = self.index / manifest.idempotency_key
            with contextlib.suppress(FileNotFoundError):
                if key_file.read_text().strip() == job_id:
                    key_file.unlink()
        trash = self.staging / f"deleted-{job_id}-{secrets.token_hex(4)}"
        folder.rename(trash)  # gone from the API at once; the files may take a while
        shutil.rmtree(trash, ignore_errors=True)

    # -- outputs ------------------------------------------------------------------------------------------------------
    def reset_output(self, job_id: str) -> Path:
        """An empty output folder (a redelivered job starts again from nothing)."""
        out = self.output_dir(job_id)
        shutil.rmtree(out, ignore_errors=True)
        (self.job_dir(job_id) / "result.zip").unlink(missing_ok=True)
        out.mkdir()
        return out

    def result_zip(self, job_id: str) -> Path:
        """A zip of every output file, made once (atomically) and kept beside the output folder."""
        path = self.job_dir(job_id) / "result.zip"
        if path.exists():
            return path
        out = self.output_dir(job_id)
        tmp = path.with_name(f".result.{secrets.token_hex(4)}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                for file in sorted(p for p in out.rglob("*") if p.is_file()):
                    archive.write(file, file.relative_to(out).as_posix())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    # -- housekeeping -------------------------------------------------------------------------------------------------
    def purge_expired(self, retention_s: float, now: float | None = None) -> list[str]:
        """Delete finished jobs that finished more than ``retention_s`` ago, and stale staging folders (older than a
        day or than ``retention_s``). Returns the ids of the deleted jobs."""
        now = time.time() if now is None else now
        deleted = []
        for manifest in list(self.manifests()):
            if manifest.state.finished and (manifest.finished_at or manifest.updated_at) < now - retention_s:
                with contextlib.suppress(JobNotFoundError, FileNotFoundError):
                    self.delete(manifest.id)
                    deleted.append(manifest.id)
        stale = now - min(retention_s, 86_400.0)
        for folder in self.staging.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if folder.stat().st_mtime < stale:
                    shutil.rmtree(folder, ignore_errors=True)
        return deleted

    def disk_space(self) -> DiskSpace:
        usage = shutil.disk_usage(self.root)
        return DiskSpace(usage.free, usage.total)

    def writable(self) -> bool:
        probe = self.staging / f".probe-{secrets.token_hex(4)}"
        try:
            write_atomically(probe, b"ok")
            probe.unlink()
        except OSError:
            return False
        return True
