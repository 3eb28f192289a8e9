"""The worker's settings (``ITVSAM_*``): the model, reliability and time limits, on top of the common part."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator

from jobs.settings import CommonSettings


class WorkerSettings(CommonSettings):
    """What ``itvsam worker`` is configured with. Sizes in bytes, durations in seconds."""

    model_dir: Path | None = None
    adapter_dir: Path | None = None
    device: str = "cuda"
    model_load_timeout_s: float = Field(600.0, gt=0)  # a worker process that has not loaded its model by then is killed
    job_soft_time_limit_s: float = Field(3600.0, gt=0)  # the job is failed with `time_limit` after this
    job_time_limit_s: float = Field(3900.0, gt=0)  # the worker process is killed after this
    max_attempts: int = Field(2, ge=1)  # runs of one job that may end with its worker lost before it fails
    max_retries: int = Field(3, ge=0)  # retries after a transient error (I/O, broker, out of GPU memory)
    retry_backoff_s: float = Field(30.0, ge=0)
    lease_s: float = Field(60.0, gt=0)  # a running job whose worker has not renewed its lease for this is lost
    heartbeat_ttl_s: float = Field(30.0, gt=0)  # a worker whose heartbeat is older is gone

    @field_validator("model_dir", "adapter_dir", mode="before")
    @classmethod
    def _no_path(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_time_limits(self) -> Self:
        if not self.job_soft_time_limit_s < self.job_time_limit_s < self.visibility_timeout_s:
            raise ValueError(
                "time limits must satisfy job_soft_time_limit_s < job_time_limit_s < visibility_timeout_s (a message "
                "must not be redelivered while its job may still run), got "
                f"{self.job_soft_time_limit_s} < {self.job_time_limit_s} < {self.visibility_timeout_s}")
        return self


@lru_cache
def get_worker_settings() -> WorkerSettings:
    """The worker process's settings, read from the environment once."""
    return WorkerSettings()
