"""``JobQueue.requeue_lost`` against a real redis-server: what the gateway's maintenance sends again, and only once."""

from __future__ import annotations

import time

import pytest
import redis

from jobs.claims import claim
from jobs.manifest import InputInfo, Manifest, new_job_id
from jobs.queue import JobQueue, marker_key
from jobs.store import JobStore
from tests.conftest import require_tool
from tests.support.service import RedisServer


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    require_tool("redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield redis.Redis(port=server.port)
    finally:
        server.stop()


@pytest.fixture
def setup(client, tmp_path):
    client.flushdb()
    sent: list[str] = []
    store = JobStore(tmp_path)
    return store, JobQueue(client, sent.append, "itvsam"), sent


def _job(store: JobStore) -> str:
    staged = store.root / f"staged-{time.monotonic_ns()}"
    staged.mkdir()
    manifest = Manifest(id=new_job_id(), idempotency_key=new_job_id() * 2,
                        input=InputInfo(source="zip", files=1, bytes=1, content_hash="h"))
    store.create_or_get(staged, manifest)
    return manifest.id


def test_a_queued_job_is_sent_again_only_without_a_marker(setup) -> None:
    store, queue, sent = setup
    job_id = _job(store)
    assert queue.enqueue(job_id) and sent == [job_id]
    assert queue.requeue_lost(store) == []  # its message is in the queue
    queue.forget(job_id)  # Redis lost it
    assert queue.requeue_lost(store) == [job_id] and sent == [job_id, job_id]


def test_a_job_whose_whole_worker_died_is_sent_again_once_though_its_message_is_still_held(setup, client) -> None:
    store, queue, sent = setup
    job_id = _job(store)
    queue.enqueue(job_id)  # the message the worker took: Celery keeps it in "unacked" for the visibility timeout
    claim(store, job_id, "w1", lease_s=0.2, max_attempts=3)
    assert queue.requeue_lost(store) == []  # the lease is alive
    time.sleep(0.3)  # the worker died: nobody renews
    assert queue.requeue_lost(store) == [job_id]
    assert queue.requeue_lost(store) == [] and sent == [job_id, job_id]  # the new message's marker is younger
    assert float(client.get(marker_key(job_id))) > store.read(job_id).lease_expires_at
    claim(store, job_id, "w2", lease_s=0.2, max_attempts=3)  # attempt 2 takes it over, then dies too
    time.sleep(0.3)
    assert queue.requeue_lost(store) == [job_id] and len(sent) == 3


def test_of_several_gateways_only_one_sends(setup, client) -> None:
    store, first, sent = setup
    second = JobQueue(client, sent.append, "itvsam")
    job_id = _job(store)
    first.enqueue(job_id)
    claim(store, job_id, "w1", lease_s=0.1, max_attempts=3)
    time.sleep(0.2)
    stale = client.get(marker_key(job_id))
    assert first._replace(job_id, stale) and not second._replace(job_id, stale)
    assert second.requeue_lost(store) == [] and sent == [job_id, job_id]


def test_a_marker_is_released_when_the_send_fails(setup, client) -> None:
    store, _, _ = setup
    job_id = _job(store)

    def broken(_: str) -> None:
        raise redis.ConnectionError("broker down")

    queue = JobQueue(client, broken, "itvsam")
    with pytest.raises(redis.ConnectionError):
        queue.enqueue(job_id)
    assert client.get(marker_key(job_id)) is None
