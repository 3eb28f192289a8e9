"""The manifest of one job: the authority on its state (Redis is only the queue).

Written by the gateway (creation, cancellation) and by the worker (claim, progress, result) through
``JobStore.update``, always atomically. Holds no patient data: the study is described by hashes and counts.
"""

from __future__ import annotations

import re
import secrets
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

JOB_ID = re.compile(r"^[0-9a-f]{24}$")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def new_job_id() -> str:
    """24 hex digits: milliseconds since the epoch (so names sort by creation) and 48 random bits."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


class JobError(BaseModel):
    code: str
    message: str


class JobProgress(BaseModel):
    stage: str = "queued"
    fraction: float = 0.0
    phase: int | None = None
    phases: int | None = None
    message: str = ""


class InputInfo(BaseModel):
    source: str  # "zip", "multipart", "stow", "dicom" (the listener) or "directory" (`itvsam submit-dir`)
    files: int
    bytes: int
    content_hash: str  # SHA-256 of the sorted SHA-256 digests of the files: the same study, however it was sent
    calling_ae: str | None = None  # the AE title that sent the study over DICOM


class DeliveryState(StrEnum):
    WAITING = "waiting"  # the job has not succeeded yet
    PENDING = "pending"  # to be sent (again, after ``next_attempt_at``)
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed, or the job did not succeed


class Delivery(BaseModel):
    """The results of a job sent by C-STORE to one destination."""

    destination: str  # its name in the settings
    ae_title: str
    host: str
    port: int
    outputs: list[str]  # the kinds of output chosen (reference, phases, ...)
    state: DeliveryState = DeliveryState.WAITING
    attempts: int = 0
    next_attempt_at: float | None = None
    delivered_at: float | None = None
    files: int = 0  # instances stored at the destination
    error: str | None = None  # the last failure


class LateArrival(BaseModel):
    """Instances of the job's study that arrived over DICOM after the job was made."""

    at: float
    instances: int
    changed: bool  # whether the study's content differs from the job's input
    rerun_job: str | None = None  # the job started for the changed study


class Manifest(BaseModel):
    id: str
    state: JobState = JobState.QUEUED
    created_at: float = Field(default_factory=time.time)  # epoch seconds
    updated_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    idempotency_key: str
    options: dict[str, Any] = Field(default_factory=dict)
    input: InputInfo
    study: dict[str, Any] = Field(default_factory=dict)  # phases, grid and hashes from the reader (no patient data)
    progress: JobProgress = Field(default_factory=JobProgress)
    stage_seconds: dict[str, float] = Field(default_factory=dict)  # time spent in each pipeline stage
    attempts: int = 0  # runs started (a redelivery after a lost worker is one more)
    retries: int = 0  # retries after transient errors
    worker: str | None = None
    lease_expires_at: float | None = None  # the running worker renews this; past it, the worker is taken as lost
    error: JobError | None = None
    outputs: list[str] = Field(default_factory=list)  # files of output/, relative, when succeeded
    deliveries: list[Delivery] = Field(default_factory=list)  # results sent by C-STORE, one per destination
    late_arrivals: list[LateArrival] = Field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """What the API shows of a job."""
        finished = self.finished_at or time.time()
        timings = {"queued_s": round((self.started_at or finished) - self.created_at, 3)}
        if self.started_at is not None:
            timings["run_s"] = round(finished - self.started_at, 3)
        timings.update({f"{k}_s": round(v, 3) for k, v in self.stage_seconds.items()})
        return {
            "id": self.id, "state": self.state.value, "stage": self.progress.stage,
            "fraction": round(self.progress.fraction, 4), "phase": self.progress.phase, "phases": self.progress.phases,
            "message": self.progress.message, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "timings": timings, "attempts": self.attempts, "options": self.options,
            "input": self.input.model_dump(exclude={"content_hash"}, exclude_none=True),
            "study": self.study, "outputs": self.outputs,
            "deliveries": [d.model_dump(mode="json") for d in self.deliveries],
            "late_arrivals": [a.model_dump(mode="json") for a in self.late_arrivals],
            "error": self.error.model_dump() if self.error else None,
        }
