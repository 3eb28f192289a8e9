"""The gateway's periodic task: send again the jobs Redis lost, and remove jobs past their retention.

Idempotent, so several gateways may run it at once (a job's queue marker is taken with SET NX).
"""

from __future__ import annotations

import asyncio
import logging

import redis
from fastapi.concurrency import run_in_threadpool

from jobs.queue import JobQueue
from jobs.store import JobStore
from service.settings import GatewaySettings

logger = logging.getLogger(__name__)


def maintain(store: JobStore, queue: JobQueue, settings: GatewaySettings) -> None:
    """One round: requeue lost jobs, purge expired ones. Failures are logged and tried again next round."""
    try:
        queue.requeue_lost(store)
    except (redis.RedisError, OSError) as exc:
        logger.warning("requeue of lost jobs skipped this round: %s", exc)
    try:
        deleted = store.purge_expired(settings.retention_days * 86_400)
    except OSError as exc:
        logger.warning("retention skipped this round: %s", exc)
    else:
        if deleted:
            logger.info("retention: removed %d jobs older than %g days", len(deleted), settings.retention_days)


async def maintenance_loop(store: JobStore, queue: JobQueue, settings: GatewaySettings) -> None:
    while True:
        await run_in_threadpool(maintain, store, queue, settings)
        await asyncio.sleep(settings.maintenance_interval_s)
