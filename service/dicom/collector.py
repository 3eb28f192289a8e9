"""Instances received over DICOM, on disk and grouped by study, and the decision of when a study is ready.

Layout (under the job store's root, so that a snapshot moves into a job by rename)::

    ROOT/incoming/<key>/000001.dcm ...   one folder per StudyInstanceUID, <key> and file names are ours
    ROOT/incoming/.partial/<random>      an instance being written (renamed into its study when complete)

A study is *ready* when the reader (``scan_study``) accepts a snapshot of its files and no instance has arrived for
``settle_s``: the reader knows a complete 4DCT (every phase, every slice, one grid), so a study still arriving is
refused by it (missing phases or slices) and waited for. When ``idle_timeout_s`` passes without an instance and the
reader still refuses the study, the refusal is recorded as a failed job with the reader's code and message. After
that, the study's instances are kept for ``keep_s``: instances that arrive late are recorded on its job and, if they
change the study's content and ``rerun_on_change``, a new job is made of the changed study. Late instances go through
the same decision as the first ones: a study they make acceptable becomes a job (a refused study completed later
included), one the reader still refuses is recorded as a late arrival at the idle timeout. Every version of a study
thus ends in a job, a recorded late arrival or a recorded refusal, and a study whose every instance is accounted for
is removed from ``incoming/`` after ``keep_s``.

Received values (UIDs, AE titles) never name a path. A snapshot is a folder of hard links to the study's files, so
that a job's input does not change when a late instance replaces a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dicomrt.errors import ImplausiblePixelDataError, PixelDecodeError, StudyError
from dicomrt.identifiers import short_hash
from dicomrt.instances import InstanceHeader, Skip, read_header
from dicomrt.reader import decode_slice
from dicomrt.study import StudyIndex
from jobs.manifest import LateArrival, Manifest
from jobs.store import JobStore
from service.uploads import ReceivedStudy

logger = logging.getLogger(__name__)

INCOMING = "incoming"
PARTIAL = ".partial"

SubmitFn = Callable[[ReceivedStudy, str | None, StudyIndex], Manifest]
RefuseFn = Callable[[ReceivedStudy, str | None, StudyError], Manifest]
LateFn = Callable[[str, LateArrival], None]
ScanFn = Callable[[Path], StudyIndex]


@dataclass(frozen=True)
class CollectorConfig:
    settle_s: float = 10.0
    idle_timeout_s: float = 300.0
    rerun_on_change: bool = True
    keep_s: float = 86_400.0
    max_study_bytes: int = 8 * 1024**3
    max_files: int = 20_000


class InstanceRefused(Exception):
    """An instance not stored: ``status`` is the C-STORE failure status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# C-STORE failure statuses (PS3.4 B.2.3, PS3.7 C).
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900  # the dataset is not of the SOP class it was sent as (not a CT image)
CANNOT_UNDERSTAND = 0xC000


@dataclass
class _File:
    name: str
    digest: str
    size: int


@dataclass
class _Study:
    key: str
    uid_hash: str
    folder: Path
    calling_ae: str | None
    last_at: float
    files: dict[str, _File] = field(default_factory=dict)  # SOPInstanceUID → our file (memory only)
    counter: int = 0
    bytes: int = 0
    version: int = 0  # changes with every stored instance
    scanned: int = -1  # the version last scanned
    error: StudyError | None = None  # the reader's refusal of the version last scanned
    job_id: str | None = None  # the job made of it (or the refusal recorded)
    job_hash: str | None = None  # content hash of that job's input
    late: int = 0  # instances since the job was made
    decided: int = -1  # the version last accounted for (a job made, a refusal or a late arrival recorded)

    def content_hash(self) -> str:
        return hashlib.sha256("\n".join(sorted(f.digest for f in self.files.values())).encode()).hexdigest()


class StudyCollector:
    """Thread-safe: ``store_instance`` from the listener's association threads, ``tick`` from its monitor thread."""

    def __init__(self, store: JobStore, config: CollectorConfig, submit: SubmitFn, refuse: RefuseFn,
                 note_late: LateFn, scan: ScanFn, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.config = config
        self._submit = submit
        self._refuse = refuse
        self._note_late = note_late
        self._scan = scan
        self._clock = clock
        self.root = store.root / INCOMING
        self.partial = self.root / PARTIAL
        self.partial.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._studies: dict[str, _Study] = {}  # StudyInstanceUID → study (memory only)

    # -- receiving ----------------------------------------------------------------------------------------------------
    def store_instance(self, parts: tuple[bytes | memoryview, ...], calling_ae: str | None) -> InstanceHeader:
        """Write one Part 10 instance, given as the pieces that make up its file (the listener: preamble and file
        meta, then the dataset's bytes as they were received, never joined nor decoded), check that it is a readable
        CT image (its header read back from the file, ``dicomrt.instances.read_header``, the reader's own), and file
        it under its study. Raises ``InstanceRefused`` (nothing kept) otherwise."""
        temp = self.partial / secrets.token_hex(12)
        try:
            digest, size = hashlib.sha256(), 0
            with open(temp, "wb") as out:
                for part in parts:
                    out.write(part)
                    digest.update(part)
                    size += len(part)
            header = read_header(temp)
            if header is Skip.NOT_CT:
                raise InstanceRefused(DATASET_MISMATCH, "the dataset is not a CT image")
            if isinstance(header, Skip):
                raise InstanceRefused(CANNOT_UNDERSTAND, f"the dataset cannot be decoded ({header.value})")
            _check_pixels(header)
            self._file(header, temp, digest.hexdigest(), size, calling_ae)
            return header
        finally:
            temp.unlink(missing_ok=True)

    def _file(self, header: InstanceHeader, temp: Path, digest: str, size: int, calling_ae: str | None) -> None:
        """Move ``temp`` (``size`` bytes, SHA-256 ``digest``) into its study, unless a study limit refuses it."""
        uid = header.study_instance_uid
        with self._lock:
            study = self._studies.get(uid)
            if study is None:
                key = secrets.token_hex(12)
                study = _Study(key, short_hash(uid), self.root / key, calling_ae, self._clock())
                study.folder.mkdir()
                self._studies[uid] = study
                logger.info("study %s: receiving from %s into incoming/%s", study.uid_hash, calling_ae, key)
            old = study.files.get(header.sop_instance_uid)
            if old is None and len(study.files) >= self.config.max_files:
                raise InstanceRefused(OUT_OF_RESOURCES, f"a study may hold at most {self.config.max_files} files")
            if study.bytes - (old.size if old else 0) + size > self.config.max_study_bytes:
                raise InstanceRefused(OUT_OF_RESOURCES,
                                      f"a study may hold at most {self.config.max_study_bytes} bytes")
            if old is None:
                study.counter += 1
                name = f"{study.counter:06d}.dcm"
            else:
                name = old.name
                study.bytes -= old.size
            os.replace(temp, study.folder / name)
            study.files[header.sop_instance_uid] = _File(name, digest, size)
            study.bytes += size
            study.version += 1
            study.last_at = self._clock()
            if study.job_id is not None:
                study.late += 1

    # -- deciding ----------------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Submit the studies that are ready, refuse those idle too long, record late instances, forget old ones."""
        with self._tick_lock:
            with self._lock:
                studies = list(self._studies.items())
            for uid, study in studies:
                try:
                    self._consider(uid, study)
                except Exception:  # one study's trouble (disk, Redis) must not stop the others: retried next tick
                    logger.exception("study %s: could not be handled; trying again", study.uid_hash)

    def _consider(self, uid: str, study: _Study) -> None:
        now = self._clock()
        quiet = now - study.last_at
        if study.version == study.decided:  # every instance received is accounted for
            if quiet > self.config.keep_s:
                self._forget(uid, study)
            return
        if quiet < self.config.settle_s:
            return
        idle = quiet >= self.config.idle_timeout_s
        if study.version == study.scanned and not idle:
            return  # refused by the reader, nothing new: wait for more instances or the idle timeout
        snapshot, received, version = self._snapshot(study)
        try:
            try:
                index = self._scan(received.folder)
            except StudyError as exc:
                study.scanned, study.error = version, exc
                if idle:
                    self._decide_refused(study, received, exc)
                    study.decided = version
                else:
                    logger.info("study %s: not ready after %d instances (%s); waiting", study.uid_hash,
                                received.files, exc.code)
                return
            study.scanned, study.error = version, None
            self._decide_ready(study, received, index)
            study.decided = version
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def _decide_ready(self, study: _Study, received: ReceivedStudy, index: StudyIndex) -> None:
        if study.job_id is None:
            manifest = self._submit(received, study.calling_ae, index)
            self._made(study, manifest, received)
            return
        changed = received.content_hash != study.job_hash
        arrival = LateArrival(at=time.time(), instances=study.late, changed=changed)
        previous = study.job_id
        if changed and self.config.rerun_on_change:
            manifest = self._submit(received, study.calling_ae, index)
            arrival.rerun_job = manifest.id
            self._made(study, manifest, received)
        else:
            study.late = 0
        self._note_late(previous, arrival)
        logger.info("study %s: %d late instance(s) for job %s, content %s%s", study.uid_hash, arrival.instances,
                    previous, "changed" if changed else "unchanged",
                    f": job {arrival.rerun_job}" if arrival.rerun_job else "")

    def _decide_refused(self, study: _Study, received: ReceivedStudy, error: StudyError) -> None:
        if study.job_id is not None:  # a late instance made a submitted study invalid: recorded, nothing run
            self._note_late(study.job_id, LateArrival(at=time.time(), instances=study.late, changed=True))
            study.late = 0
            return
        manifest = self._refuse(received, study.calling_ae, error)
        self._made(study, manifest, received)

    @staticmethod
    def _made(study: _Study, manifest: Manifest, received: ReceivedStudy) -> None:
        study.job_id, study.job_hash, study.late = manifest.id, received.content_hash, 0

    def _snapshot(self, study: _Study) -> tuple[Path, ReceivedStudy, int]:
        """Hard links to the study's files as they are now, in a staging folder of the job store."""
        snapshot = self.store.staging / f"dicom-{secrets.token_hex(8)}"
        received = ReceivedStudy(snapshot / "input")
        received.folder.mkdir(parents=True)
        with self._lock:
            for item in sorted(study.files.values(), key=lambda f: f.name):
                os.link(study.folder / item.name, received.folder / item.name)
                received.digests.append(item.digest)
                received.bytes += item.size
            return snapshot, received, study.version

    def _forget(self, uid: str, study: _Study) -> None:
        with self._lock:
            if self._studies.get(uid) is study and study.version == study.decided:
                del self._studies[uid]
        shutil.rmtree(study.folder, ignore_errors=True)
        logger.info("study %s: instances of job %s removed after %g s", study.uid_hash, study.job_id,
                    self.config.keep_s)

    # -- state -------------------------------------------------------------------------------------------------------
    def pending(self) -> int:
        """Studies received and not yet made into a job (or refused)."""
        with self._lock:
            return sum(1 for s in self._studies.values() if s.job_id is None)

    def recover(self) -> int:
        """Take back the studies left in ``incoming/`` by a previous run (their files, as if just received); a study
        already made into a job is matched to that job by the intake's idempotency. Returns how many."""
        recovered = 0
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != PARTIAL):
            for path in sorted(folder.glob("*.dcm")):
                header = read_header(path)
                if isinstance(header, InstanceHeader):
                    data = path.read_bytes()
                    with contextlib.suppress(InstanceRefused):
                        self._file(header, path, hashlib.sha256(data).hexdigest(), len(data), None)
            shutil.rmtree(folder, ignore_errors=True)
            recovered += 1
        for path in self.partial.iterdir():
            path.unlink(missing_ok=True)
        return recovered


def _check_pixels(header: InstanceHeader) -> None:
    """Uncompressed pixel data must hold every pixel the header declares; anything else (compressed, or no pixel data
    at all) must decode, with the decoder of the job (``dicomrt.reader.decode_slice``): an instance the job would
    refuse is refused now, 0xC000, instead of being stored and the study refused later."""
    if header.native_pixels is None:
        try:
            decode_slice(header)
        except (PixelDecodeError, ImplausiblePixelDataError) as exc:
            raise InstanceRefused(CANNOT_UNDERSTAND, f"the pixel data {exc}") from None
        return
    expected = header.rows * header.columns * header.samples_per_pixel * (header.bits_allocated // 8) \
        * max(header.number_of_frames, 1)
    offset, length = header.native_pixels
    held = min(length, header.file_size - offset)
    if held < expected:
        raise InstanceRefused(CANNOT_UNDERSTAND, f"the pixel data holds {held} bytes, the header declares "
                                                 f"{expected}")
