"""The job store: atomic manifests, concurrent updates from several processes, idempotency, paging, retention."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from jobs.manifest import InputInfo, JobState, Manifest, new_job_id
from jobs.store import JobNotFoundError, JobStore, write_atomically


def make_job(store: JobStore, key: str = "a" * 64, force: bool = False) -> tuple[Manifest, bool]:
    staged = store.staging / f"s{time.monotonic_ns()}"
    staged.mkdir()
    (staged / "000001.dcm").write_bytes(b"x")
    manifest = Manifest(id=new_job_id(), idempotency_key=key,
                        input=InputInfo(source="zip", files=1, bytes=1, content_hash="h"))
    return store.create_or_get(staged, manifest, force)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "manifest.json"
    write_atomically(target, b"one")
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def _increment(root: str, job_id: str, times: int) -> None:
    store = JobStore(root)
    for _ in range(times):
        store.update(job_id, lambda m: setattr(m, "retries", m.retries + 1))


def test_updates_from_several_processes_are_not_lost(tmp_path):
    store = JobStore(tmp_path)
    job, _ = make_job(store)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_increment, args=(str(tmp_path), job.id, 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert store.read(job.id).retries == 120


def test_idempotency_matches_live_jobs_only(tmp_path):
    store = JobStore(tmp_path)
    first, created = make_job(store)
    assert created and (store.input_dir(first.id) / "000001.dcm").exists()
    same, created = make_job(store)
    assert not created and same.id == first.id
    forced, created = make_job(store, force=True)
    assert created and forced.id != first.id
    store.update(forced.id, lambda m: setattr(m, "state", JobState.FAILED))
    after_failure, created = make_job(store)
    assert created and after_failure.id not in (first.id, forced.id)


def test_ids_are_ours_only(tmp_path):
    store = JobStore(tmp_path)
    for bad in ("../../etc", "0123", "0123456789ABCDEF01234567", "0123456789abcdef0123456/"):
        with pytest.raises(JobNotFoundError, match="job ids are 24 hex digits"):
            store.job_dir(bad)


def test_paging_and_delete(tmp_path):
    store = JobStore(tmp_path)
    ids = [make_job(store, key=str(k) * 64)[0].id for k in range(5)]
    page, count = store.page(1, 2)
    assert count == 5 and [m.id for m in page] == ids[::-1][1:3]
    store.delete(ids[0])
    assert store.ids() == ids[:0:-1]
    assert not (store.index / ("0" * 64)).exists()
    with pytest.raises(JobNotFoundError):
        store.read(ids[0])


def test_retention_removes_finished_jobs_past_their_time(tmp_path):
    store = JobStore(tmp_path)
    old, _ = make_job(store, key="1" * 64)
    recent, _ = make_job(store, key="2" * 64)
    running, _ = make_job(store, key="3" * 64)
    now = time.time()
    for job_id, finished in ((old.id, now - 10 * 86400), (recent.id, now - 3600)):
        store.update(job_id, lambda m, t=finished: (setattr(m, "state", JobState.SUCCEEDED),
                                                    setattr(m, "finished_at", t)))
    store.update(running.id, lambda m: setattr(m, "state", JobState.RUNNING))
    assert store.purge_expired(7 * 86400, now=now) == [old.id]
    assert sorted(store.ids()) == sorted([recent.id, running.id])


def test_result_zip_is_made_once(tmp_path):
    store = JobStore(tmp_path)
    job, _ = make_job(store)
    (store.output_dir(job.id) / "RS_reference.dcm").write_bytes(b"rs")
    path = store.result_zip(job.id)
    assert store.result_zip(job.id) == path and path.stat().st_size > 0
    assert store.reset_output(job.id).exists() and not path.exists()
