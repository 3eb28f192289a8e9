"""Response schemas of the jobs API (requests are bodies of files: see the routes' OpenAPI request bodies)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from jobs.manifest import Manifest


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobTimings(BaseModel):
    model_config = {"extra": "allow"}  # plus "<stage>_s" for every stage run so far

    queued_s: float
    run_s: float | None = None


class JobPublic(BaseModel):
    id: str
    url: str
    state: str  # queued, running, succeeded, failed, cancelled
    stage: str
    fraction: float
    phase: int | None
    phases: int | None
    message: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    timings: JobTimings
    attempts: int
    options: dict[str, Any]
    input: dict[str, Any]
    study: dict[str, Any]
    outputs: list[str]
    deliveries: list[dict[str, Any]] = []  # C-STORE of the results to each destination
    late_arrivals: list[dict[str, Any]] = []  # instances of the study received over DICOM after the job was made
    error: ErrorDetail | None

    @classmethod
    def of(cls, manifest: Manifest, url: str) -> JobPublic:
        return cls(url=url, **manifest.public())


class JobCreated(BaseModel):
    id: str
    url: str
    state: str
    created: bool  # False: the same study (and options) already had a live job, which is returned


class JobList(BaseModel):
    data: list[JobPublic]
    count: int  # jobs matching, all pages
    offset: int
    limit: int


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in {
        401: "No bearer API key.", 403: "The API key is not accepted.", 404: "No such job.",
    }.items()
}
