"""The worker's task: run one job (by id) with the engine this worker process loaded once.

- The engine (``workers.pipeline.load_engine``) is loaded when the pool starts the process (``worker_process_init``),
  or on the first job with the solo pool; a heartbeat thread then publishes the worker's model identity to Redis and
  renews the lease of the job it runs.
- The manifest decides what a message means (``jobs.claims``): a finished job is skipped, a job under another
  live lease is retried later, a job whose runs killed their worker ``max_attempts`` times is failed.
- Bad input (``StudyError``, ``RTError``, invalid options) fails the job at once; transient errors (I/O, the broker,
  GPU out of memory) are retried ``max_retries`` times; anything else fails the job with its reason. A failed task
  raises after recording the failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_process_shutdown

from dicomrt.errors import StudyError
from dicomrt.rt_errors import RTError
from jobs.claims import ClaimOutcome, claim, finish, release_for_retry, renew
from jobs.manifest import JobError, JobProgress, JobState, Manifest
from jobs.options import InvalidOptionsError, parse_options
from jobs.queue import TASK_NAME, WorkerBeat, heartbeat_key, marker_key, publish_heartbeat
from jobs.store import JobNotFoundError, JobStore
from workers.celery_app import celery_app
from workers.settings import WorkerSettings, get_worker_settings

logger = logging.getLogger(__name__)


class JobCancelledError(Exception):
    """Raised from the progress callback when the job was cancelled while it ran."""


@dataclass
class WorkerProcess:
    """What one worker process holds: the engine (or why it could not be loaded) and the job it runs."""

    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    engine: Any = None
    identity: dict[str, Any] = field(default_factory=dict)
    load_error: str | None = None
    job: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


_process = WorkerProcess()


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError | redis.RedisError) or type(exc).__name__ == "OutOfMemoryError"


def load_engine(settings: WorkerSettings) -> None:
    """Load the model into this process (once); record the error instead of raising, so the heartbeat can tell."""
    if _process.engine is not None:
        return
    from workers import pipeline  # torch: only in the worker

    try:
        if settings.model_dir is None:
            raise ValueError("ITVSAM_MODEL_DIR is not set: the worker needs the SAM 3 model folder")
        started = time.perf_counter()
        _process.engine = pipeline.load_engine(settings.model_dir, settings.adapter_dir, settings.device)
        _process.identity = _process.engine.identity.to_dict()
        _process.load_error = None
        logger.info("worker %s loaded the model in %.1f s on %s", _process.worker, time.perf_counter() - started,
                    settings.device)
    except Exception as exc:
        _process.load_error = f"{type(exc).__name__}: {exc}"
        logger.exception("worker %s could not load the model", _process.worker)


def _beat(settings: WorkerSettings, client: redis.Redis, store: JobStore) -> None:
    publish_heartbeat(client, WorkerBeat(
        worker=_process.worker, model_loaded=_process.engine is not None, identity=_process.identity,
        device=settings.device, job=_process.job, at=time.time(), error=_process.load_error), settings.heartbeat_ttl_s)
    if _process.job is not None:
        with contextlib.suppress(JobNotFoundError):
            renew(store, _process.job, _process.worker, settings.lease_s)


def _heartbeat_loop(settings: WorkerSettings) -> None:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    store = JobStore(settings.store_dir)
    interval = min(settings.heartbeat_ttl_s, settings.lease_s) / 3
    while not _process.stop.is_set():
        try:
            _beat(settings, client, store)
        except (redis.RedisError, OSError) as exc:
            logger.warning("worker %s heartbeat failed: %s", _process.worker, exc)
        _process.stop.wait(interval)
    with contextlib.suppress(redis.RedisError):
        client.delete(heartbeat_key(_process.worker))


def start_process(settings: WorkerSettings) -> None:
    """Load the engine and start the heartbeat thread of this worker process."""
    _process.worker = f"{socket.gethostname()}:{os.getpid()}"
    load_engine(settings)
    if _process.thread is None or not _process.thread.is_alive():
        _process.stop.clear()
        _process.thread = threading.Thread(target=_heartbeat_loop, args=(settings,), name="itvsam-heartbeat",
                                           daemon=True)
        _process.thread.start()


@worker_process_init.connect
def _on_process_init(**_: object) -> None:
    start_process(get_worker_settings())


@worker_process_shutdown.connect
def _on_process_shutdown(**_: object) -> None:
    _process.stop.set()
    if _process.thread is not None:
        _process.thread.join(timeout=5)


class ProgressWriter:
    """The pipeline's progress callback: stage, phase and fraction into the manifest (at most every
    ``min_interval_s`` unless the stage or phase changes), time per stage, and cancellation."""

    def __init__(self, store: JobStore, job_id: str, worker: str, min_interval_s: float = 0.5) -> None:
        self.store = store
        self.job_id = job_id
        self.worker = worker
        self.min_interval_s = min_interval_s
        self.stage: str | None = None
        self.stage_started = time.monotonic()
        self.seconds: dict[str, float] = {}
        self.last_write = 0.0
        self.last_key: tuple = ()

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        if progress.stage != self.stage:
            self._close_stage(now)
            self.stage = progress.stage
        key = (progress.stage, progress.phase)
        if key == self.last_key and now - self.last_write < self.min_interval_s:
            return
        self.last_key, self.last_write = key, now
        seconds = dict(self.seconds)

        def change(manifest: Manifest) -> None:
            if manifest.state is not JobState.RUNNING or manifest.worker != self.worker:
                return
            manifest.progress = JobProgress(stage=progress.stage, fraction=float(progress.fraction),
                                            phase=progress.phase, phases=progress.phases, message=progress.message)
            manifest.stage_seconds = seconds

        manifest = self.store.update(self.job_id, change)
        if manifest.state is JobState.CANCELLED:
            raise JobCancelledError(f"job {self.job_id} was cancelled")

    def _close_stage(self, now: float) -> None:
        if self.stage is not None and self.stage != "done":
            self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + now - self.stage_started
        self.stage_started = now

    def close(self) -> dict[str, float]:
        self._close_stage(time.monotonic())
        self.stage = None
        return self.seconds


def _forget_marker(settings: WorkerSettings, job_id: str) -> None:
    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=5).delete(marker_key(job_id))
    except redis.RedisError as exc:  # the gateway's requeue skips finished jobs, so a stale marker is harmless
        logger.warning("job %s: could not remove its queue marker: %s", job_id, exc)


def _record_stage_seconds(store: JobStore, job_id: str, seconds: dict[str, float]) -> None:
    def change(manifest: Manifest) -> None:
        manifest.stage_seconds = seconds

    store.update(job_id, change)


# Refusals of the input: recorded on the job as failed with their code, raised so that Celery counts the task as
# failed, and logged by Celery as expected ("raised expected", no traceback) instead of as a crash.
REFUSALS = (StudyError, RTError, InvalidOptionsError)


@celery_app.task(name=TASK_NAME, bind=True, throws=REFUSALS)
def run_job(self: Task, job_id: str) -> str:
    """Run job ``job_id`` from the job store; returns what happened ("succeeded", "skipped: ...")."""
    settings = get_worker_settings()
    store = JobStore(settings.store_dir)
    if _process.thread is None:  # the solo pool sends no worker_process_init
        start_process(settings)
    if _process.engine is None:
        logger.error("worker %s has no model (%s): job %s goes back to the queue", _process.worker,
                     _process.load_error, job_id)
        raise self.retry(countdown=settings.retry_backoff_s, max_retries=None)
    try:
        held = claim(store, job_id, _process.worker, settings.lease_s, settings.max_attempts)
    except JobNotFoundError:
        logger.info("job %s no longer exists: message dropped", job_id)
        return "skipped: deleted"
    if held.outcome is ClaimOutcome.BUSY:
        raise self.retry(countdown=held.retry_in_s + 1.0, max_retries=None)
    if held.outcome is not ClaimOutcome.CLAIMED:
        _forget_marker(settings, job_id)
        logger.warning("job %s not run: %s (%s)", job_id, held.outcome.value, held.manifest.state.value)
        return f"skipped: {held.outcome.value}"
    _process.job = job_id
    try:
        return _run_claimed(self, settings, store, held.manifest)
    finally:
        _process.job = None


def _run_claimed(task: Task, settings: WorkerSettings, store: JobStore, manifest: Manifest) -> str:
    from workers import pipeline  # torch: only in the worker

    job_id, worker = manifest.id, _process.worker
    logger.info("job %s: attempt %d on %s", job_id, manifest.attempts, worker)
    progress = ProgressWriter(store, job_id, worker)
    out = store.reset_output(job_id)
    try:  # checked when the job was made; a manifest written by another version may still hold stale ones
        options = parse_options(manifest.options)
    except InvalidOptionsError as exc:
        _fail(settings, store, job_id, worker, exc.code, f"the job's options are invalid: {exc}")
        raise
    try:
        pipeline.run_job(store.input_dir(job_id), out, _process.engine, options, progress=progress)
    except JobCancelledError:
        _forget_marker(settings, job_id)
        _record_stage_seconds(store, job_id, progress.close())
        logger.info("job %s cancelled while running", job_id)
        return "cancelled"
    except (StudyError, RTError) as exc:
        _fail(settings, store, job_id, worker, exc.code, str(exc))
        raise
    except SoftTimeLimitExceeded:
        _fail(settings, store, job_id, worker, "time_limit",
              f"the job ran longer than its time limit of {settings.job_soft_time_limit_s:g} s")
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if _transient(exc) and store.read(job_id).retries < settings.max_retries:
            release_for_retry(store, job_id, worker, reason)
            logger.warning("job %s: transient error, retrying: %s", job_id, reason)
            raise task.retry(exc=exc, countdown=settings.retry_backoff_s, max_retries=None) from exc
        _fail(settings, store, job_id, worker, "job_failed", f"the job failed: {reason}")
        raise
    seconds = progress.close()
    _record_stage_seconds(store, job_id, seconds)
    outputs = sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*") if p.is_file())
    finish(store, job_id, worker, JobState.SUCCEEDED, outputs=outputs)
    _forget_marker(settings, job_id)
    logger.info("job %s succeeded: %d files", job_id, len(outputs))
    return "succeeded"


def _fail(settings: WorkerSettings, store: JobStore, job_id: str, worker: str, code: str, message: str) -> None:
    finish(store, job_id, worker, JobState.FAILED, error=JobError(code=code, message=message))
    _forget_marker(settings, job_id)
    logger.warning("job %s failed [%s]: %s", job_id, code, message)
