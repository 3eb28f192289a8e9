"""A worker's hold on a job through its manifest: claims, leases, the bounded run count, retries, the end."""

from __future__ import annotations

import time

import pytest

from jobs.claims import ClaimOutcome, claim, finish, release_for_retry, renew
from jobs.manifest import InputInfo, JobError, JobState, Manifest, new_job_id
from jobs.store import JobStore


@pytest.fixture
def job(tmp_path):
    store = JobStore(tmp_path)
    staged = tmp_path / "staged"
    staged.mkdir()
    manifest = Manifest(id=new_job_id(), idempotency_key="k" * 64,
                        input=InputInfo(source="zip", files=1, bytes=1, content_hash="h"))
    store.create_or_get(staged, manifest)
    return store, manifest.id


def test_claim_renew_finish(job):
    store, job_id = job
    held = claim(store, job_id, "w1", lease_s=30, max_attempts=2)
    assert held.outcome is ClaimOutcome.CLAIMED
    assert (held.manifest.state, held.manifest.attempts, held.manifest.worker) == (JobState.RUNNING, 1, "w1")
    assert claim(store, job_id, "w2", lease_s=30, max_attempts=2).outcome is ClaimOutcome.BUSY
    lease = store.read(job_id).lease_expires_at
    time.sleep(0.01)
    assert renew(store, job_id, "w1", 30).lease_expires_at > lease
    assert renew(store, job_id, "w2", 300).lease_expires_at < time.time() + 31  # only the holder renews
    done = finish(store, job_id, "w1", JobState.SUCCEEDED, outputs=["RS_reference.dcm"])
    assert (done.state, done.progress.fraction, done.outputs) == (JobState.SUCCEEDED, 1.0, ["RS_reference.dcm"])
    assert claim(store, job_id, "w2", 30, 2).outcome is ClaimOutcome.FINISHED


def test_an_expired_lease_is_a_lost_worker_and_runs_are_bounded(job):
    store, job_id = job
    assert claim(store, job_id, "w1", lease_s=0.0, max_attempts=2).outcome is ClaimOutcome.CLAIMED
    second = claim(store, job_id, "w2", lease_s=0.0, max_attempts=2)
    assert (second.outcome, second.manifest.attempts, second.manifest.worker) == (ClaimOutcome.CLAIMED, 2, "w2")
    third = claim(store, job_id, "w3", lease_s=0.0, max_attempts=2)
    assert third.outcome is ClaimOutcome.EXHAUSTED
    failed = store.read(job_id)
    assert failed.state is JobState.FAILED and failed.error.code == "worker_lost"
    assert failed.error.message.startswith("the job ended its worker 2 times")


def test_busy_says_when_to_try_again(job):
    store, job_id = job
    claim(store, job_id, "w1", lease_s=20, max_attempts=2)
    busy = claim(store, job_id, "w2", lease_s=20, max_attempts=2)
    assert busy.outcome is ClaimOutcome.BUSY and 19 < busy.retry_in_s <= 20


def test_a_transient_retry_gives_the_attempt_back(job):
    store, job_id = job
    claim(store, job_id, "w1", lease_s=30, max_attempts=1)
    queued = release_for_retry(store, job_id, "w1", "OSError: disk busy")
    assert (queued.state, queued.attempts, queued.retries, queued.worker) == (JobState.QUEUED, 0, 1, None)
    assert "OSError: disk busy" in queued.progress.message
    assert claim(store, job_id, "w2", lease_s=30, max_attempts=1).outcome is ClaimOutcome.CLAIMED


def test_a_cancelled_job_stays_cancelled(job):
    store, job_id = job
    claim(store, job_id, "w1", lease_s=30, max_attempts=2)
    store.update(job_id, lambda m: setattr(m, "state", JobState.CANCELLED))
    after = finish(store, job_id, "w1", JobState.FAILED, error=JobError(code="x", message="y"))
    assert after.state is JobState.CANCELLED and after.error is None
    assert claim(store, job_id, "w2", 30, 2).outcome is ClaimOutcome.FINISHED
