"""``/healthz`` (the process is alive) and ``/readyz`` (it can take jobs and have them run)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from jobs.queue import JobQueue
from jobs.store import JobStore
from service.api.deps import JobStoreDep, QueueDep, SettingsDep, require_api_key_unless_open
from service.settings import GatewaySettings

router = APIRouter(tags=["health"], dependencies=[Depends(require_api_key_unless_open)])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Alive: answers as long as the gateway process serves requests."""
    return {"status": "ok"}


def readiness(settings: GatewaySettings, store: JobStore, queue: JobQueue) -> tuple[bool, dict[str, Any]]:
    """Each check with its own verdict: Redis answers, at least one worker holds its model, the store is writable and
    above its disk watermark."""
    checks: dict[str, Any] = {}
    redis_ok = queue.ping()
    checks["redis"] = {"ok": redis_ok}
    beats = queue.workers() if redis_ok else []
    loaded = [b for b in beats if b.model_loaded]
    checks["workers"] = {
        "ok": bool(loaded), "count": len(beats), "model_loaded": len(loaded),
        "workers": [{"worker": b.worker, "model_loaded": b.model_loaded, "device": b.device, "busy": b.job is not None,
                     "heartbeat_age_s": round(b.age_s, 1), "identity": b.identity, "error": b.error} for b in beats],
    }
    space = store.disk_space()
    writable = store.writable()
    above = space.free_bytes >= settings.min_free_bytes and space.free_fraction >= settings.min_free_fraction
    checks["store"] = {"ok": writable and above, "writable": writable, "free_bytes": space.free_bytes,
                       "free_fraction": round(space.free_fraction, 4)}
    return all(c["ok"] for c in checks.values()), checks


@router.get("/readyz", responses={503: {"description": "Not ready: the failing checks are named."}})
async def readyz(settings: SettingsDep, store: JobStoreDep, queue: QueueDep) -> JSONResponse:
    """Ready: Redis reachable, a worker with its model loaded, the job store writable and below its watermark."""
    ready, checks = await run_in_threadpool(readiness, settings, store, queue)
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    failing = ", ".join(name for name, check in checks.items() if not check["ok"])
    return JSONResponse({"error": {"code": "not_ready", "message": f"failing checks: {failing}"}, "checks": checks},
                        status_code=503)
