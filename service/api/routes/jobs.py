"""``/v1/jobs``: submit a study, follow a job (JSON or server-sent events), fetch its results, cancel or delete it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import redis
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from dicomrt.errors import StudyError
from dicomrt.layout import REFERENCE_RTSTRUCT, REPORT, SUMMARY
from jobs.manifest import JobState, Manifest
from jobs.store import JobNotFoundError, JobStore
from service.api.deps import ApiKeyDep, JobStoreDep, MetricsDep, QueueDep, SettingsDep
from service.api.errors import ApiError
from service.api.intake import accept_study, check_disk, parse_options
from service.api.schemas import ERRORS, ErrorBody, JobCreated, JobList, JobPublic
from service.api.telemetry import GatewayMetrics
from service.uploads import ReceivedStudy, UploadLimits, check_declared_length, receive_multipart, receive_zip

logger = logging.getLogger(__name__)

T = TypeVar("T")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)

ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The study: a zip of its DICOM files, or multipart/form-data with one or more `files` parts "
                       "(DICOM files) and an optional `options` part (a JSON object).",
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "options": {"type": "string", "description": "job options as a JSON object"}}}},
        },
    }
}


def job_url(request: Request, job_id: str) -> str:
    return str(request.url_for("get_job", job_id=job_id))


@router.post(
    "", status_code=202, response_model=JobCreated, openapi_extra=_UPLOAD_BODY,
    responses={200: {"model": JobCreated, "description": "The same study (and options) already has a live job."},
               400: {"model": ErrorBody, "description": "Malformed or empty upload, unsafe zip path."},
               413: {"model": ErrorBody, "description": "Upload, study, file count or zip ratio over a limit."},
               415: {"model": ErrorBody, "description": "Neither a zip nor multipart/form-data."},
               422: {"model": ErrorBody, "description": "The study is refused by the reader (its headers, or pixel "
                                                        "data that cannot be decoded), or an option is invalid (the "
                                                        "message says why and names the field)."},
               507: {"model": ErrorBody, "description": "The job store is below its disk watermark."}})
async def create_job(
    request: Request, settings: SettingsDep, store: JobStoreDep, queue: QueueDep, metrics: MetricsDep, _: ApiKeyDep,
    options: Annotated[str | None, Query(description="Job options as a JSON object (zip uploads; multipart uploads "
                                                     "send an `options` part).")] = None,
    force: Annotated[bool, Query(description="Make a new job even if the same study already has one.")] = False,
) -> JSONResponse:
    """Submit a 4DCT study. Streamed to disk, checked by the DICOM reader before anything is queued; answers 202 with
    the job's id and URL (or 200 with the live job already made from the same files and options)."""
    limits = UploadLimits.from_settings(settings)
    check_declared_length(request.headers.get("content-length"), limits)
    check_disk(store, settings)
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    with store.staging_dir() as folder:
        if media in ZIP_TYPES:
            job_options = _refusing(parse_options, options, settings, metrics=metrics)  # before the body is read
            received, source = await _counted(receive_zip(request.stream(), folder, limits), metrics), "zip"
        elif media == "multipart/form-data":
            received = await _counted(receive_multipart(request.stream(), content_type, folder, limits), metrics)
            source = "multipart"
            job_options = _refusing(parse_options, received.fields.get("options", options), settings,
                                    metrics=metrics)
        else:
            metrics.uploads.labels("refused").inc()
            raise ApiError(415, "unsupported_media_type",
                           f"send a zip (application/zip) or multipart/form-data, got {media or 'no content type'!r}")
        try:
            manifest, created = await accept_study(received, source, job_options, force, store, queue)
        except StudyError as exc:
            metrics.uploads.labels("refused").inc()
            raise ApiError(422, exc.code, str(exc)) from None
    metrics.uploads.labels("created" if created else "existing").inc()
    url = job_url(request, manifest.id)
    body = JobCreated(id=manifest.id, url=url, state=manifest.state.value, created=created)
    return JSONResponse(body.model_dump(), status_code=202 if created else 200, headers={"Location": url})


def _refusing(parse: Callable[..., T], *args: Any, metrics: GatewayMetrics) -> T:
    """``parse(*args)``, counting a refusal in the upload metrics."""
    try:
        return parse(*args)
    except ApiError:
        metrics.uploads.labels("refused").inc()
        raise


async def _counted(receiving: Awaitable[ReceivedStudy], metrics: GatewayMetrics) -> ReceivedStudy:
    try:
        received = await receiving
    except Exception:
        metrics.uploads.labels("refused").inc()
        raise
    metrics.upload_bytes.inc(received.body_bytes)
    return received


@router.get("", response_model=JobList)
def list_jobs(
    request: Request, store: JobStoreDep, _: ApiKeyDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    state: JobState | None = None,
) -> JobList:
    """Jobs, newest first, a page at a time."""
    page, count = store.page(offset, limit, state)
    return JobList(data=[JobPublic.of(m, job_url(request, m.id)) for m in page], count=count, offset=offset,
                   limit=limit)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, request: Request, store: JobStoreDep, _: ApiKeyDep) -> JobPublic:
    """A job's state, stage, phase i/n, fraction, timings, and error code and message when it failed."""
    return JobPublic.of(store.read(job_id), job_url(request, job_id))


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`job` events (the job as in GET /v1/jobs/{id}) whenever it changes, "
                                            "ending after a finished state; `deleted` if the job is removed."}})
async def job_events(job_id: str, request: Request, store: JobStoreDep, settings: SettingsDep,
                     _: ApiKeyDep) -> StreamingResponse:
    """Server-sent events of the job's state until it is finished."""
    store.read(job_id)
    url = job_url(request, job_id)
    return StreamingResponse(_events(request, store, job_id, url, settings.events_poll_s),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, store: JobStore, job_id: str, url: str, poll_s: float) -> AsyncIterator[str]:
    last_update = None
    last_sent = time.monotonic()
    number = 0
    while not await request.is_disconnected():
        try:
            manifest = await run_in_threadpool(store.read, job_id)
        except JobNotFoundError:
            yield f"event: deleted\ndata: {json.dumps({'id': job_id})}\n\n"
            return
        if manifest.updated_at != last_update:
            last_update, last_sent, number = manifest.updated_at, time.monotonic(), number + 1
            yield f"id: {number}\nevent: job\ndata: {JobPublic.of(manifest, url).model_dump_json()}\n\n"
            if manifest.state.finished:
                return
        elif time.monotonic() - last_sent > 15:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_s)


def _succeeded(store: JobStore, job_id: str) -> Manifest:
    manifest = store.read(job_id)
    if manifest.state is not JobState.SUCCEEDED:
        raise ApiError(409, "not_ready", f"job {job_id} is {manifest.state.value}: its results exist once it has "
                                         "succeeded")
    return manifest


def _output(store: JobStore, job_id: str, name: str) -> Path:
    _succeeded(store, job_id)
    path = store.output_dir(job_id) / name
    if not path.is_file():
        raise ApiError(404, "output_not_found", f"job {job_id} has no {name}")
    return path


_CONFLICT = {409: {"model": ErrorBody, "description": "The job has not succeeded."}}


@router.get("/{job_id}/result", response_class=FileResponse, responses=_CONFLICT)
async def get_result(job_id: str, store: JobStoreDep, _: ApiKeyDep) -> FileResponse:
    """Every output of the job as one zip."""
    _succeeded(store, job_id)
    path = await run_in_threadpool(store.result_zip, job_id)
    return FileResponse(path, media_type="application/zip", filename=f"itvsam-{job_id}.zip")


@router.get("/{job_id}/rtstruct", response_class=FileResponse, responses=_CONFLICT)
def get_rtstruct(job_id: str, store: JobStoreDep, _: ApiKeyDep) -> FileResponse:
    """The RTSTRUCT on the reference series (the ITV and every phase's target)."""
    return FileResponse(_output(store, job_id, REFERENCE_RTSTRUCT), media_type="application/dicom",
                        filename=f"{Path(REFERENCE_RTSTRUCT).stem}-{job_id}.dcm")


@router.get("/{job_id}/report", response_class=FileResponse, responses=_CONFLICT)
def get_report(job_id: str, store: JobStoreDep, _: ApiKeyDep) -> FileResponse:
    """The QA picture (PNG)."""
    return FileResponse(_output(store, job_id, REPORT), media_type="image/png")


@router.get("/{job_id}/summary", responses=_CONFLICT)
def get_summary(job_id: str, store: JobStoreDep, _: ApiKeyDep) -> Response:
    """The job's JSON summary: structures, volumes, motion, timings, model identity."""
    return Response(_output(store, job_id, SUMMARY).read_bytes(), media_type="application/json")


@router.delete("/{job_id}", status_code=204,
               responses={202: {"model": JobPublic, "description": "The queued or running job was cancelled."},
                          204: {"description": "The finished job and its files were deleted."}})
def delete_job(job_id: str, request: Request, store: JobStoreDep, queue: QueueDep, _: ApiKeyDep) -> Response:
    """Cancel a queued or running job (202; a running job stops at its next progress report), or delete a finished
    one with its files (204)."""

    def cancel(manifest: Manifest) -> None:
        if not manifest.state.finished:
            manifest.state = JobState.CANCELLED
            manifest.finished_at = time.time()
            manifest.lease_expires_at = None

    before = store.read(job_id)
    if before.state.finished:
        store.delete(job_id)
        return Response(status_code=204)
    manifest = store.update(job_id, cancel)
    try:
        queue.forget(job_id)
    except redis.RedisError as exc:  # harmless: a worker skips the message of a cancelled job
        logger.warning("job %s cancelled; its queue marker stays until Redis is back: %s", job_id, exc)
    return JSONResponse(JobPublic.of(manifest, job_url(request, job_id)).model_dump(), status_code=202)
