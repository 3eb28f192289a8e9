"""The one path from received files to a queued job, shared by ``POST /v1/jobs`` and STOW-RS.

Check the disk watermark, read the study's headers with ``dicomrt.reader.scan_study`` (a refusal raises
``StudyError``: nothing is stored, nothing queued), find a live job made from the same files and options
(idempotency), else create the job and queue it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from fastapi.concurrency import run_in_threadpool

from dicomrt.reader import scan_study
from dicomrt.study import StudyIndex, index_summary
from service.api.errors import ApiError
from service.broker import JobQueue
from service.jobstore import JobStore
from service.manifest import InputInfo, Manifest, new_job_id
from service.settings import Settings
from service.uploads import ReceivedStudy

logger = logging.getLogger(__name__)


def check_disk(store: JobStore, settings: Settings) -> None:
    """507 when the store is below its disk watermark (new uploads would fill it)."""
    space = store.disk_space()
    if space.free_bytes < settings.min_free_bytes or space.free_fraction < settings.min_free_fraction:
        raise ApiError(507, "insufficient_storage",
                       f"the job store has {space.free_bytes} bytes free ({space.free_fraction:.1%}), below its "
                       f"watermark of {settings.min_free_bytes} bytes or {settings.min_free_fraction:.1%}")


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


def study_brief(index: StudyIndex) -> dict[str, Any]:
    """What a job shows of its study: hashes, phases, grid and warnings (no patient data)."""
    summary = index_summary(index)
    return {
        "study_uid_hash": summary["study_uid_hash"], "is_4d": summary["is_4d"],
        "phases": [p["label"] for p in summary["phases"]], "derived": [d["label"] for d in summary["derived"]],
        "reference": summary["reference"]["label"], "shape_zyx": summary["geometry"]["shape_zyx"],
        "spacing_mm_zyx": summary["geometry"]["spacing_mm_zyx"], "warnings": summary["warnings"],
        "ct_instances": summary["files"]["ct_instances"],
    }


def idempotency_key(received: ReceivedStudy, options: dict[str, Any]) -> str:
    text = f"{received.content_hash}\n{json.dumps(options, sort_keys=True, separators=(',', ':'))}"
    return hashlib.sha256(text.encode()).hexdigest()


async def accept_study(received: ReceivedStudy, source: str, options: dict[str, Any], force: bool,
                       store: JobStore, queue: JobQueue) -> tuple[Manifest, bool]:
    """Validate the received study and make (and queue) its job, or return the live job made from the same files
    and options. Raises ``StudyError`` for a refused study."""
    index = await run_in_threadpool(scan_study, received.folder)
    manifest = Manifest(
        id=new_job_id(), idempotency_key=idempotency_key(received, options), options=options,
        input=InputInfo(source=source, files=received.files, bytes=received.bytes,
                        content_hash=received.content_hash),
        study=study_brief(index))
    manifest, created = await run_in_threadpool(store.create_or_get, received.folder, manifest, force)
    if created:
        try:
            await run_in_threadpool(queue.enqueue, manifest.id)
        except Exception as exc:  # the manifest holds the job: the gateway's requeue sends it when Redis is back
            logger.warning("job %s stored but not queued (Redis unreachable?): %s", manifest.id, exc)
        logger.info("job %s created from %s: %d files, study %s", manifest.id, source, received.files,
                    manifest.study["study_uid_hash"])
    else:
        logger.info("upload matched live job %s (same files and options)", manifest.id)
    return manifest, created
