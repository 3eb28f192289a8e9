"""The gateway's app factory: ``uvicorn --factory service.api.app:create_app`` (``itvsam serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from dicomrt.provenance import software_version
from jobs.queue import JobQueue, celery_queue
from jobs.store import JobStore
from service.api.errors import install_error_handlers
from service.api.maintenance import maintenance_loop
from service.api.routes import dicomweb, health, jobs, metrics
from service.api.telemetry import GatewayMetrics
from service.settings import GatewaySettings, get_gateway_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """4DCT in, RTSTRUCT out. Submit a study (zip, multipart or STOW-RS), follow the job, download the
RTSTRUCTs, DICOM SEG, QA report and JSON summary. Every request except health and metrics needs a bearer API key.
Errors share one body: `{"error": {"code": ..., "message": ...}}`."""


def default_queue(settings: GatewaySettings) -> JobQueue:
    return celery_queue(settings)  # the gateway queues by task name


def create_app(settings: GatewaySettings | None = None, queue: JobQueue | None = None,
               maintenance: bool = True) -> FastAPI:
    """The gateway for ``settings`` (default: from the environment) and ``queue`` (default: Celery on Redis).
    ``maintenance``: run the periodic requeue and retention task while the app serves."""
    settings = settings or get_gateway_settings()
    store = JobStore(settings.store_dir)
    queue = queue or default_queue(settings)
    if not settings.api_key_hashes:
        logger.warning("no API keys configured (ITVSAM_API_KEY_HASHES): every authenticated request is refused")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(maintenance_loop(store, queue, settings)) if maintenance else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="itvsam", version=software_version(), description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.queue = queue
    app.state.metrics = GatewayMetrics(store, queue)
    install_error_handlers(app)
    for module in (jobs, dicomweb, health, metrics):
        app.include_router(module.router)
    return app
