"""The Celery app, configured from ``service.settings`` when its configuration is first needed (not at import).

Torch-free: the gateway imports this module to send tasks by name; only the worker imports ``workers.tasks``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from service.broker import TASK_NAME
from service.settings import Settings, get_settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's settings for the itvsam queue: late acks, one message at a time, redelivery after a lost worker."""
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
        # A pool process loads the model in worker_process_init before it reports up (Celery's default wait: 4 s).
        "worker_proc_alive_timeout": settings.model_load_timeout_s,
        "task_soft_time_limit": settings.job_soft_time_limit_s,
        "task_time_limit": settings.job_time_limit_s,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
    }


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings``, or for ``get_settings()`` read when the configuration is first used."""
    app = Celery("itvsam", include=["workers.tasks"])
    app.add_defaults(celery_config(settings) if settings is not None else lambda: celery_config(get_settings()))
    return app


def job_sender(settings: Settings) -> Callable[[str], None]:
    """What the gateway queues jobs with: ``send(job_id)`` by task name (no task code imported)."""
    app = create_celery(settings)

    def send(job_id: str) -> None:
        app.send_task(TASK_NAME, args=[job_id], queue=settings.queue)

    return send


celery_app = create_celery()  # the worker's app: `celery -A workers.celery_app worker`, `itvsam worker`
