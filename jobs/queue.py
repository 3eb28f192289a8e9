"""The queue: Celery's configuration and task name, and what gateway and workers keep in Redis besides Celery's
queue (worker heartbeats and "job is in the queue" markers).

Redis is only the queue: everything here can be lost (a Redis restart without persistence) and is rebuilt. A job's
marker lives in the same Redis as its message, so both survive or both vanish; it holds the time its message was
sent. ``requeue_lost`` (run periodically by the gateway) sends again every queued job without a marker, and every
running job whose worker's lease ran out, unless its marker is younger than that expiry: a marker older than the
expiry belongs to the message the dead worker held, which sits in Celery's ``unacked`` set until the visibility
timeout (two hours: above the longest job) when a whole worker dies, so waiting for it would leave the job
``running`` that long. Workers skip a message for a job that is finished or held by a live lease, so a message sent
twice (the old one coming back after the visibility timeout) never runs a job twice. A job whose worker died is thus
run again within about the lease plus the gateway's maintenance interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from jobs.manifest import JobState
from jobs.settings import CommonSettings
from jobs.store import JobStore

logger = logging.getLogger(__name__)

TASK_NAME = "itvsam.run_job"
HEARTBEAT_PREFIX = "itvsam:worker:"
MARKER_PREFIX = "itvsam:queued:"


def marker_key(job_id: str) -> str:
    return f"{MARKER_PREFIX}{job_id}"


def heartbeat_key(worker: str) -> str:
    return f"{HEARTBEAT_PREFIX}{worker}"


@dataclass(frozen=True)
class WorkerBeat:
    """One worker process as its last heartbeat described it."""

    worker: str
    model_loaded: bool
    identity: dict[str, Any]
    device: str
    job: str | None
    at: float  # epoch seconds of the heartbeat
    error: str | None = None

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.at)


def publish_heartbeat(client: redis.Redis, beat: WorkerBeat, ttl_s: float) -> None:
    client.set(heartbeat_key(beat.worker), json.dumps(beat.__dict__), px=int(ttl_s * 1000))


def read_heartbeats(client: redis.Redis) -> list[WorkerBeat]:
    """Every worker whose heartbeat has not expired."""
    keys = sorted(client.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=200))
    beats = []
    for raw in client.mget(keys) if keys else []:
        if raw is not None:
            data = json.loads(raw)
            beats.append(WorkerBeat(**data))
    return beats


class JobQueue:
    """Sends jobs to the workers by task name (the gateway imports no task code) and keeps the markers."""

    def __init__(self, client: redis.Redis, send: Callable[[str], None], queue_name: str) -> None:
        self.client = client
        self._send = send
        self.queue_name = queue_name

    def enqueue(self, job_id: str) -> bool:
        """Put the job in the queue unless its marker says it is there already. Returns whether a message was sent.
        Raises ``redis.RedisError`` (or the broker's error) when Redis is unreachable: the job stays queued in its
        manifest and ``requeue_lost`` sends it later."""
        if not self.client.set(marker_key(job_id), str(time.time()), nx=True):
            return False
        try:
            self._send(job_id)
        except BaseException:
            self.client.delete(marker_key(job_id))
            raise
        return True

    def forget(self, job_id: str) -> None:
        self.client.delete(marker_key(job_id))

    def depth(self) -> int:
        """Messages waiting in the queue (not those a worker holds)."""
        return int(self.client.llen(self.queue_name))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def workers(self) -> list[WorkerBeat]:
        return read_heartbeats(self.client)

    def requeue_lost(self, store: JobStore, now: float | None = None) -> list[str]:
        """Send again the jobs the queue lost (see the module docstring). Returns their ids."""
        now = time.time() if now is None else now
        sent = []
        for manifest in store.manifests():
            expired = manifest.state is JobState.RUNNING and (manifest.lease_expires_at or 0.0) < now
            if manifest.state is not JobState.QUEUED and not expired:
                continue
            marker = self.client.get(marker_key(manifest.id))
            if marker is None:
                resent = self.enqueue(manifest.id)
            elif expired and float(marker) < (manifest.lease_expires_at or 0.0):
                resent = self._replace(manifest.id, marker)
            else:
                continue
            if resent:
                logger.warning("job %s (%s) had no live message in the queue: sent again", manifest.id,
                               manifest.state.value)
                sent.append(manifest.id)
        return sent

    def _replace(self, job_id: str, stale: bytes) -> bool:
        """Send a new message for a job whose marker is still ``stale`` (compare-and-set, so that of several
        gateways running the maintenance at once only one sends)."""
        key = marker_key(job_id)
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != stale:
                    return False
                pipe.multi()
                pipe.set(key, str(time.time()))
                pipe.execute()
            except redis.WatchError:
                return False
        try:
            self._send(job_id)
        except BaseException:
            self.client.delete(key)
            raise
        return True


def celery_config(settings: CommonSettings) -> dict[str, Any]:
    """Celery's settings for the itvsam queue, shared by senders and workers: late acks, one message at a time,
    redelivery after a lost worker (the worker adds its time limits, ``workers.celery_app``)."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # A message not acknowledged for this long (its worker died) goes back to the queue: above the longest job.
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
        },
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the job's manifest is its result
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
    }


def celery_queue(settings: CommonSettings) -> JobQueue:
    """The queue of the gateway, the listener and ``itvsam submit-dir``: Celery on Redis, jobs sent by task name (no
    task code is imported)."""
    app = Celery("itvsam")
    app.conf.update(celery_config(settings))

    def send(job_id: str) -> None:
        app.send_task(TASK_NAME, args=[job_id], queue=settings.queue)

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    return JobQueue(client, send, settings.queue)
