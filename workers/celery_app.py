"""The worker's Celery app: the shared queue configuration (``jobs.queue.celery_config``) plus the worker's time
limits, read from ``workers.settings`` when the configuration is first needed (not at import).

`celery -A workers.celery_app worker` and `itvsam worker` use ``celery_app``; the tasks are in ``workers.tasks``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from jobs.queue import celery_config
from workers.settings import WorkerSettings, get_worker_settings


def worker_config(settings: WorkerSettings) -> dict[str, Any]:
    """Celery's settings of a worker: the queue's, and its time limits."""
    return {
        **celery_config(settings),
        # A pool process loads the model in worker_process_init before it reports up (Celery's default wait: 4 s).
        "worker_proc_alive_timeout": settings.model_load_timeout_s,
        "task_soft_time_limit": settings.job_soft_time_limit_s,
        "task_time_limit": settings.job_time_limit_s,
    }


celery_app = Celery("itvsam", include=["workers.tasks"])
celery_app.add_defaults(lambda: worker_config(get_worker_settings()))
