"""Prometheus metrics of the gateway: counters it keeps, and gauges read from the job store and Redis at scrape time.

- ``itvsam_jobs{state}``: jobs in the store by state;
- ``itvsam_queue_depth``: messages waiting in the queue;
- ``itvsam_stage_duration_seconds{stage}``: time of each pipeline stage (sum and count over the finished jobs
  in the store);
- ``itvsam_upload_bytes_total``, ``itvsam_uploads_total{outcome}``: request bodies received;
- ``itvsam_workers{model_loaded}``, ``itvsam_worker_heartbeat_age_seconds{worker}``, ``itvsam_worker_info``.

Each app has its own registry (no process-global state), so several apps can live in one test process.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from jobs.manifest import JobState
from jobs.queue import JobQueue
from jobs.store import JobStore

logger = logging.getLogger(__name__)


class StoreCollector(Collector):
    """Jobs by state and stage durations, read from the manifests at each scrape."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        states: Tally[str] = Tally()
        stage_sum: Tally[str] = Tally()
        stage_count: Tally[str] = Tally()
        for manifest in self.store.manifests():
            states[manifest.state.value] += 1
            if manifest.state.finished:
                for stage, seconds in manifest.stage_seconds.items():
                    stage_sum[stage] += seconds
                    stage_count[stage] += 1
        jobs = GaugeMetricFamily("itvsam_jobs", "Jobs in the job store by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], states[state.value])
        yield jobs
        stages = SummaryMetricFamily("itvsam_stage_duration_seconds",
                                     "Time spent in each pipeline stage by the finished jobs in the store.",
                                     labels=["stage"])
        for stage in sorted(stage_count):
            stages.add_metric([stage], stage_count[stage], stage_sum[stage])
        yield stages


class QueueCollector(Collector):
    """Queue depth and worker heartbeats, read from Redis at each scrape (absent when Redis is unreachable)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("itvsam_redis_up", "Whether the gateway reached Redis at this scrape.")
        try:
            depth = self.queue.depth()
            beats = self.queue.workers()
        except redis.RedisError as exc:
            logger.warning("metrics: Redis unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("itvsam_queue_depth", "Jobs waiting in the queue.", value=depth)
        workers = GaugeMetricFamily("itvsam_workers", "Workers with a live heartbeat.", labels=["model_loaded"])
        loaded = sum(b.model_loaded for b in beats)
        workers.add_metric(["true"], loaded)
        workers.add_metric(["false"], len(beats) - loaded)
        yield workers
        age = GaugeMetricFamily("itvsam_worker_heartbeat_age_seconds", "Age of each worker's last heartbeat.",
                                labels=["worker"])
        info = InfoMetricFamily("itvsam_worker", "Each worker's device and model identity.",
                                labels=["worker"])
        for beat in beats:
            age.add_metric([beat.worker], beat.age_s)
            identity = {k: str(v) for k, v in beat.identity.items() if isinstance(v, str | int | float)}
            info.add_metric([beat.worker], {"device": beat.device, "busy": str(beat.job is not None).lower(),
                                            **identity})
        yield age
        yield info


class GatewayMetrics:
    """The registry of one gateway app and the counters its routes update."""

    def __init__(self, store: JobStore, queue: JobQueue) -> None:
        self.registry = CollectorRegistry()
        self.upload_bytes = Counter("itvsam_upload_bytes", "Bytes of request bodies received by uploads.",
                                    registry=self.registry)
        self.uploads = Counter("itvsam_uploads", "Uploads by outcome (created, existing, refused).",
                               ["outcome"], registry=self.registry)
        self.registry.register(StoreCollector(store))
        self.registry.register(QueueCollector(queue))
