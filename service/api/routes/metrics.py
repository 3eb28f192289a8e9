"""``/metrics``: Prometheus text exposition of the gateway's registry (see ``service.api.telemetry``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import MetricsDep, require_api_key_unless_open

router = APIRouter(tags=["metrics"], dependencies=[Depends(require_api_key_unless_open)])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(gateway: MetricsDep) -> Response:
    """Jobs by state, queue depth, stage durations, upload bytes, worker heartbeats."""
    return Response(await run_in_threadpool(generate_latest, gateway.registry), media_type=CONTENT_TYPE_LATEST)
