"""A worker's hold on a job, kept in the job's manifest: claim (with the bounded run count), lease, and the end.

A message may arrive more than once (a redelivery after a lost worker, a requeue after Redis lost its queue); the
manifest decides what it means. Pure job store logic, no Celery, so it is tested without a broker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from jobs.manifest import JobError, JobProgress, JobState, Manifest
from jobs.store import JobStore


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # this worker runs the job now
    FINISHED = "finished"  # nothing to do: the job succeeded, failed or was cancelled
    BUSY = "busy"  # another worker holds a live lease on it: try again when the lease may have run out
    EXHAUSTED = "exhausted"  # its runs ended with a lost worker too often: it was failed now


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    manifest: Manifest
    retry_in_s: float = 0.0


def worker_lost_message(attempts: int) -> str:
    return (f"the job ended its worker {attempts} times (the worker process was killed, ran out of memory or "
            "crashed while running it); not retried again")


def claim(store: JobStore, job_id: str, worker: str, lease_s: float, max_attempts: int) -> Claim:
    """Take the job for ``worker`` if it is queued, or running under an expired lease (its worker was lost).

    Each claim is one more attempt; a claim beyond ``max_attempts`` fails the job with ``worker_lost`` instead.
    """
    result: list[Claim] = []

    def change(manifest: Manifest) -> None:
        now = time.time()
        if manifest.state.finished:
            result.append(Claim(ClaimOutcome.FINISHED, manifest))
            return
        lease = manifest.lease_expires_at or 0.0
        if manifest.state is JobState.RUNNING and lease > now and manifest.worker != worker:
            result.append(Claim(ClaimOutcome.BUSY, manifest, retry_in_s=lease - now))
            return
        if manifest.attempts >= max_attempts:
            manifest.state = JobState.FAILED
            manifest.finished_at = now
            manifest.lease_expires_at = None
            manifest.error = JobError(code="worker_lost", message=worker_lost_message(manifest.attempts))
            result.append(Claim(ClaimOutcome.EXHAUSTED, manifest))
            return
        manifest.attempts += 1
        manifest.state = JobState.RUNNING
        manifest.worker = worker
        manifest.started_at = now
        manifest.lease_expires_at = now + lease_s
        manifest.progress = JobProgress(stage="starting", message=f"attempt {manifest.attempts}")
        manifest.stage_seconds = {}
        manifest.error = None
        result.append(Claim(ClaimOutcome.CLAIMED, manifest))

    store.update(job_id, change)
    return result[0]


def renew(store: JobStore, job_id: str, worker: str, lease_s: float) -> Manifest:
    """Extend the lease if ``worker`` still runs the job (a cancelled job keeps its state)."""

    def change(manifest: Manifest) -> None:
        if manifest.state is JobState.RUNNING and manifest.worker == worker:
            manifest.lease_expires_at = time.time() + lease_s

    return store.update(job_id, change)


def finish(store: JobStore, job_id: str, worker: str, state: JobState, error: JobError | None = None,
           outputs: list[str] | None = None) -> Manifest:
    """Record the end of this worker's run; a job cancelled meanwhile stays cancelled."""

    def change(manifest: Manifest) -> None:
        if manifest.state is JobState.CANCELLED or manifest.worker != worker:
            return
        now = time.time()
        manifest.state = state
        manifest.finished_at = now
        manifest.lease_expires_at = None
        manifest.error = error
        if state is JobState.SUCCEEDED:
            manifest.progress = JobProgress(stage="done", fraction=1.0, phases=manifest.progress.phases,
                                            message="done")
            manifest.outputs = outputs or []

    return store.update(job_id, change)


def release_for_retry(store: JobStore, job_id: str, worker: str, reason: str) -> Manifest:
    """Put the job back to queued after a transient error (a retry, not a lost worker: the attempt is given back)."""

    def change(manifest: Manifest) -> None:
        if manifest.state is not JobState.RUNNING or manifest.worker != worker:
            return
        manifest.state = JobState.QUEUED
        manifest.retries += 1
        manifest.attempts = max(0, manifest.attempts - 1)
        manifest.worker = None
        manifest.lease_expires_at = None
        manifest.progress = JobProgress(stage="queued", message=f"retrying after a transient error: {reason}")

    return store.update(job_id, change)
