"""The one path from received files to a queued job: HTTP uploads, STOW-RS, the DICOM listener and
``itvsam submit-dir`` all come through ``accept_study``.

Check the disk watermark (``disk_problem``), validate the study (``validate_study``: its headers with
``dicomrt.reader.scan_study``, then every image's pixel data decoded as the worker will, ``check_pixel_data``; a refusal
raises ``StudyError``: nothing is stored, nothing queued), find a live job made from the same files and options
(idempotency), else create the job and queue it. ``record_refusal`` keeps a refused study as a failed job, so that a
study that came over DICOM (where no HTTP answer can carry the reason) shows its refusal in the API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from dicomrt.errors import ImplausiblePixelDataError, PixelDecodeError, StudyError
from dicomrt.reader import decode_slice, describe_series, scan_study
from dicomrt.study import StudyIndex, index_summary
from jobs.manifest import Delivery, InputInfo, JobError, JobProgress, JobState, Manifest, new_job_id
from jobs.options import JobOptions
from jobs.store import JobStore
from service.settings import IntakeSettings
from service.uploads import ReceivedStudy

logger = logging.getLogger(__name__)


class Queue(Protocol):
    def enqueue(self, job_id: str) -> bool: ...


def disk_problem(store: JobStore, settings: IntakeSettings) -> str | None:
    """Why the store is too full for a new study (below its disk watermark), or None."""
    space = store.disk_space()
    if space.free_bytes < settings.min_free_bytes or space.free_fraction < settings.min_free_fraction:
        return (f"the job store has {space.free_bytes} bytes free ({space.free_fraction:.1%}), below its watermark "
                f"of {settings.min_free_bytes} bytes or {settings.min_free_fraction:.1%}")
    return None


def validate_study(folder: Path) -> StudyIndex:
    """The study in ``folder`` as the worker will read it: headers checked (``scan_study``), then the pixel data of
    every image of its phases and projections decoded (``check_pixel_data``). Raises ``StudyError``."""
    index = scan_study(folder)
    check_pixel_data(index)
    return index


def check_pixel_data(index: StudyIndex) -> None:
    """Decode every image of the study's phases and projections as the worker will (``dicomrt.reader.decode_slice``:
    the same decoders, the same refusals), one image at a time and nothing kept, so that a study whose pixel data
    cannot be decoded (e.g. RLE whose header claims more segments than the image has) is refused before a job is made:
    ``PixelDecodeError`` (``undecodable_pixel_data``) or ``ImplausiblePixelDataError``, naming the series, the slice
    and the file.

    Memory: one decoded image (its rows and columns are within the reader's limits, checked from the headers by
    ``scan_study``) and that one file's compressed data (within the upload limits) at a time."""
    for series in (*index.phases, *index.derived):
        for k, header in enumerate(series.instances):
            try:
                decode_slice(header)
            except (PixelDecodeError, ImplausiblePixelDataError) as exc:
                raise type(exc)(f"{describe_series(series)}: slice {k} {exc} (file {header.path.name} of the "
                                "upload)") from exc


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


def idempotency_key(received: ReceivedStudy, options: JobOptions) -> str:
    """The same files with the same normalised options (defaults spelled out or not) give the same key."""
    normalised = json.dumps(options.to_json(), sort_keys=True, separators=(",", ":"))
    text = f"{received.content_hash}\n{normalised}"
    return hashlib.sha256(text.encode()).hexdigest()


def _input(received: ReceivedStudy, source: str, calling_ae: str | None) -> InputInfo:
    return InputInfo(source=source, files=received.files, bytes=received.bytes, content_hash=received.content_hash,
                     calling_ae=calling_ae)


def accept_study(received: ReceivedStudy, source: str, options: JobOptions, force: bool, store: JobStore,
                 queue: Queue, *, calling_ae: str | None = None, deliveries: list[Delivery] | None = None,
                 index: StudyIndex | None = None) -> tuple[Manifest, bool]:
    """Validate the received study (``validate_study``; unless ``index``, its scan, is given: the listener scans the
    studies it collects itself) and make (and queue) its job, or return the live job made from the same files and
    options. ``received.folder`` is moved into a new job. Raises ``StudyError`` for a refused study."""
    index = index if index is not None else validate_study(received.folder)
    manifest = Manifest(id=new_job_id(), idempotency_key=idempotency_key(received, options), options=options.to_json(),
                        input=_input(received, source, calling_ae), study=study_brief(index),
                        deliveries=list(deliveries or []))
    manifest, created = store.create_or_get(received.folder, manifest, force)
    if created:
        try:
            queue.enqueue(manifest.id)
        except Exception as exc:  # the manifest holds the job: the gateway's requeue sends it when Redis is back
            logger.warning("job %s stored but not queued (Redis unreachable?): %s", manifest.id, exc)
        logger.info("job %s created from %s: %d files, study %s", manifest.id, source, received.files,
                    manifest.study["study_uid_hash"])
    else:
        logger.info("%s study matched live job %s (same files and options)", source, manifest.id)
    return manifest, created


def record_refusal(received: ReceivedStudy, source: str, options: JobOptions, error: StudyError,
                   store: JobStore, *, calling_ae: str | None = None) -> Manifest:
    """Keep a refused study as a failed job (never queued) whose error is the reader's code and message."""
    now = time.time()
    manifest = Manifest(id=new_job_id(), state=JobState.FAILED, finished_at=now,
                        idempotency_key=idempotency_key(received, options), options=options.to_json(),
                        input=_input(received, source, calling_ae),
                        progress=JobProgress(stage="reading", message=f"refused by the reader: {error.code}"),
                        error=JobError(code=error.code, message=str(error)))
    manifest, _ = store.create_or_get(received.folder, manifest, force=True)
    logger.warning("job %s: %s study refused [%s]: %s", manifest.id, source, error.code, error)
    return manifest
