"""``POST /dicomweb/studies``: STOW-RS (PS3.18 10.5) into the same job path as ``POST /v1/jobs``.

The response is the standard Store Instances Response Module as ``application/dicom+json``: ReferencedSOPSequence for
the stored CT instances (each with the job's URL as RetrieveURL), FailedSOPSequence for the rest with a FailureReason.
200: every instance stored (or the same study already had a live job); 202: some instances failed (non-CT
objects are not stored); 409: none stored, e.g. the study is refused by the reader, whose code and message come in a
``Warning: 299`` header. Request-level problems (auth, limits, malformed body) use the gateway's JSON error body.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pydicom
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from dicomrt.errors import StudyError
from dicomrt.identifiers import is_valid_uid
from dicomrt.instances import MALFORMED_DICOM_ERRORS, InstanceHeader, Skip, read_header
from service.api.deps import ApiKeyDep, JobStoreDep, MetricsDep, QueueDep, SettingsDep
from service.api.errors import ApiError
from service.api.intake import accept_study, check_disk, parse_options
from service.api.routes.jobs import job_url
from service.api.schemas import ERRORS, ErrorBody
from service.uploads import ReceivedStudy, UploadLimits, check_declared_length, receive_multipart

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"], responses=ERRORS)

DICOM_JSON = "application/dicom+json"
# PS3.4 Annex GG / PS3.18 failure reasons.
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000

_STOW_BODY = {
    "requestBody": {
        "required": True,
        "description": 'multipart/related; type="application/dicom": one DICOM Part 10 file per part.',
        "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string",
                                                                              "format": "binary"}}},
    }
}


@dataclass(frozen=True)
class Instance:
    sop_class_uid: str
    sop_instance_uid: str
    failure: int | None  # None: stored


def _classify(received: ReceivedStudy) -> tuple[list[Instance], ReceivedStudy]:
    """Each part as stored or failed (non-CT objects and non-DICOM parts are removed from the study's files)."""
    instances = []
    kept = ReceivedStudy(received.folder, body_bytes=received.body_bytes)
    for number, digest in enumerate(received.digests, start=1):
        path = received.folder / f"{number:06d}.dcm"
        header = read_header(path)
        if isinstance(header, InstanceHeader):
            instances.append(Instance(header.sop_class_uid, header.sop_instance_uid, None))
            target = kept.next_path()
            path.rename(target)
            kept.digests.append(digest)
            kept.bytes += target.stat().st_size
            continue
        uids = _uids(path) if header is Skip.NOT_CT else ("", "")
        instances.append(Instance(*uids, SOP_CLASS_NOT_SUPPORTED if header is Skip.NOT_CT else CANNOT_UNDERSTAND))
        path.unlink()
    return instances, kept


def _uids(path: Path) -> tuple[str, str]:
    """The part's SOP class and instance UIDs for the STOW response, "" where they cannot be read (a part called
    "not CT" may still be malformed: its values are parsed lazily, so they are read inside the guard too)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        sop_class, sop_instance = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    except MALFORMED_DICOM_ERRORS:
        return "", ""
    return (sop_class if is_valid_uid(sop_class) else ""), (sop_instance if is_valid_uid(sop_instance) else "")


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def store_response(instances: list[Instance], url: str | None, refused: bool) -> dict[str, Any]:
    """The Store Instances Response Module in DICOM JSON."""
    referenced, failed = [], []
    for instance in instances:
        item = {"00081150": _ui(instance.sop_class_uid), "00081155": _ui(instance.sop_instance_uid)}
        if instance.failure is None and not refused:
            referenced.append({**item, **({"00081190": {"vr": "UR", "Value": [url]}} if url else {})})
        else:
            reason = PROCESSING_FAILURE if instance.failure is None else instance.failure
            failed.append({**item, "00081197": {"vr": "US", "Value": [reason]}})
    body: dict[str, Any] = {}
    if url and not refused:
        body["00081190"] = {"vr": "UR", "Value": [url]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    return body


@router.post("/studies", openapi_extra=_STOW_BODY,
             responses={200: {"content": {DICOM_JSON: {}}, "description": "All instances stored; job created."},
                        202: {"content": {DICOM_JSON: {}}, "description": "Some instances failed (not CT)."},
                        409: {"content": {DICOM_JSON: {}}, "description": "Nothing stored: the study is refused "
                                                                              "(see the Warning header)."},
                        413: {"model": ErrorBody, "description": "Over an upload limit."},
                        415: {"model": ErrorBody, "description": "Not multipart/related of application/dicom."}})
async def store_instances(
    request: Request, settings: SettingsDep, store: JobStoreDep, queue: QueueDep, metrics: MetricsDep, _: ApiKeyDep,
    options: Annotated[str | None, Query(description="Job options as a JSON object.")] = None,
    force: Annotated[bool, Query(description="Make a new job even if the same study already has one.")] = False,
) -> JSONResponse:
    """Store the instances of one 4DCT study and run a job on it (Location: the job's URL)."""
    content_type = request.headers.get("content-type", "")
    media, _sep, params = content_type.partition(";")
    kind = next((p.split("=", 1)[1].strip().strip('"').lower() for p in params.split(";")
                 if p.strip().lower().startswith("type=")), "")
    if media.strip().lower() != "multipart/related" or kind != "application/dicom":
        raise ApiError(415, "unsupported_media_type",
                       f'STOW-RS takes multipart/related; type="application/dicom", got {content_type!r}')
    limits = UploadLimits.from_settings(settings)
    check_declared_length(request.headers.get("content-length"), limits)
    check_disk(store, settings)
    job_options = parse_options(options, settings)
    with store.staging_dir() as folder:
        try:
            received = await receive_multipart(request.stream(), content_type, folder, limits)
        except Exception:
            metrics.uploads.labels("refused").inc()
            raise
        metrics.upload_bytes.inc(received.body_bytes)
        instances, kept = await run_in_threadpool(_classify, received)
        failures = any(i.failure is not None for i in instances)
        try:
            manifest, created = await accept_study(kept, "stow", job_options, force, store, queue)
        except StudyError as exc:
            metrics.uploads.labels("refused").inc()
            return JSONResponse(store_response(instances, None, refused=True), status_code=409,
                                media_type=DICOM_JSON, headers={"Warning": _warning(exc)})
    metrics.uploads.labels("created" if created else "existing").inc()
    url = job_url(request, manifest.id)
    return JSONResponse(store_response(instances, url, refused=False), status_code=202 if failures else 200,
                        media_type=DICOM_JSON, headers={"Location": url})


def _warning(exc: StudyError) -> str:
    text = f"[{exc.code}] {exc}".replace('"', "'").replace("\n", " ")
    return f'299 itvsam "{text}"'.encode("latin-1", "replace").decode("latin-1")
