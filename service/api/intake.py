"""The gateway's side of the one intake path (``service.intake``), shared by ``POST /v1/jobs`` and STOW-RS: the disk
watermark and options as HTTP refusals, and ``accept_study`` off the event loop."""

from __future__ import annotations

import json
from typing import Any

from fastapi.concurrency import run_in_threadpool

from service import intake
from service.api.errors import ApiError
from service.broker import JobQueue
from service.jobstore import JobStore
from service.manifest import Manifest
from service.settings import Settings
from service.uploads import ReceivedStudy


def check_disk(store: JobStore, settings: Settings) -> None:
    """507 when the store is below its disk watermark (new uploads would fill it)."""
    problem = intake.disk_problem(store, settings)
    if problem is not None:
        raise ApiError(507, "insufficient_storage", problem)


def parse_options(text: str | None, settings: Settings) -> dict[str, Any]:
    """The job options: a JSON object (interpreted by the worker's pipeline), or none."""
    if not text:
        return {}
    if len(text.encode()) > settings.max_options_bytes:
        raise ApiError(413, "options_too_large", f"options must be at most {settings.max_options_bytes} bytes")
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_options", f"options must be a JSON object, got invalid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ApiError(422, "invalid_options", f"options must be a JSON object, got {type(options).__name__}")
    return options


async def accept_study(received: ReceivedStudy, source: str, options: dict[str, Any], force: bool,
                       store: JobStore, queue: JobQueue) -> tuple[Manifest, bool]:
    """Validate the received study and make (and queue) its job, or return the live job made from the same files
    and options. Raises ``StudyError`` for a refused study."""
    return await run_in_threadpool(intake.accept_study, received, source, options, force, store, queue)
