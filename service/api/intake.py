"""The gateway's side of the one intake path (``service.intake``), shared by ``POST /v1/jobs`` and STOW-RS: the disk
watermark and options as HTTP refusals, and ``accept_study`` off the event loop."""

from __future__ import annotations

import json

from fastapi.concurrency import run_in_threadpool

from jobs.manifest import Manifest
from jobs.options import InvalidOptionsError, JobOptions
from jobs.options import parse_options as parse_job_options
from jobs.queue import JobQueue
from jobs.store import JobStore
from service import intake
from service.api.errors import ApiError
from service.settings import IntakeSettings
from service.uploads import ReceivedStudy


def check_disk(store: JobStore, settings: IntakeSettings) -> None:
    """507 when the store is below its disk watermark (new uploads would fill it)."""
    problem = intake.disk_problem(store, settings)
    if problem is not None:
        raise ApiError(507, "insufficient_storage", problem)


def parse_options(text: str | None, settings: IntakeSettings) -> JobOptions:
    """The job options: a JSON object checked against the job contract (``jobs.options``), or none (the defaults).
    A bad option is a 422 naming the field, before anything is stored."""
    if not text:
        return JobOptions()
    if len(text.encode()) > settings.max_options_bytes:
        raise ApiError(413, "options_too_large", f"options must be at most {settings.max_options_bytes} bytes")
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_options", f"options must be a JSON object, got invalid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ApiError(422, "invalid_options", f"options must be a JSON object, got {type(options).__name__}")
    try:
        return parse_job_options(options)
    except InvalidOptionsError as exc:
        raise ApiError(422, exc.code, str(exc)) from None


async def accept_study(received: ReceivedStudy, source: str, options: JobOptions, force: bool,
                       store: JobStore, queue: JobQueue) -> tuple[Manifest, bool]:
    """Validate the received study (its headers, then every image's pixel data decoded, one image at a time: in a
    worker thread, so the event loop goes on serving) and make (and queue) its job, or return the live job made from
    the same files and options. Raises ``StudyError`` for a refused study."""
    return await run_in_threadpool(intake.accept_study, received, source, options, force, store, queue)
