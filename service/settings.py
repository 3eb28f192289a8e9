"""The service's settings: one pydantic-settings class read from ``ITVSAM_*`` environment variables.

Gateway, worker and CLI build it through the cached ``get_settings()``, never at import time. Celery is configured
from the same object (``workers.celery_app``). Every field is documented in the README's service section.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.dicom.peers import AETitle, Destination, Peer, parse_destinations, parse_peers

GiB = 1024**3
_HEX = set("0123456789abcdef")


def hash_api_key(key: str) -> str:
    """The at-rest form of a bearer API key: its SHA-256 as 64 lowercase hex digits (keys are long random tokens,
    so a fast hash is enough; what matters is that the settings never hold a usable key)."""
    return hashlib.sha256(key.encode()).hexdigest()


class Settings(BaseSettings):
    """Everything the gateway and the workers are configured with. Sizes in bytes, durations in seconds."""

    model_config = SettingsConfigDict(env_prefix="ITVSAM_", extra="ignore", frozen=True)

    # Where jobs live (a shared volume when workers run on other machines) and the broker.
    store_dir: Path = Path("itvsam-store")
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "gpu"

    # Auth: SHA-256 hex digests of the accepted bearer keys (`itvsam apikey` makes a key and its digest);
    # a JSON list or comma-separated. With none configured, every authenticated request is refused.
    api_key_hashes: Annotated[tuple[str, ...], NoDecode] = ()
    open_health: bool = True  # /healthz, /readyz and /metrics without a key

    # Upload limits.
    max_upload_bytes: int = Field(4 * GiB, gt=0)  # the request body (zip or multipart) as sent
    max_study_bytes: int = Field(8 * GiB, gt=0)  # the files of one study after unpacking
    max_files: int = Field(20_000, gt=0)  # files (zip entries, multipart parts) in one upload
    max_zip_ratio: float = Field(100.0, gt=1)  # uncompressed / compressed size of any zip entry
    max_options_bytes: int = Field(64 * 1024, gt=0)
    upload_timeout_s: float = Field(900.0, gt=0)  # the whole request body must arrive within this

    # The job store.
    retention_days: float = Field(7.0, gt=0)  # finished jobs (results included) are removed after this
    min_free_bytes: int = Field(2 * GiB, ge=0)  # disk watermark: below it uploads are refused and readyz fails
    min_free_fraction: float = Field(0.05, ge=0, lt=1)
    maintenance_interval_s: float = Field(30.0, gt=0)  # gateway: requeue lost jobs, apply retention
    events_poll_s: float = Field(0.5, gt=0)  # SSE: how often a job's manifest is looked at

    # The worker: model, reliability, time limits.
    model_dir: Path | None = None
    adapter_dir: Path | None = None
    device: str = "cuda"
    model_load_timeout_s: float = Field(600.0, gt=0)  # a worker process that has not loaded its model by then is killed
    job_soft_time_limit_s: float = Field(3600.0, gt=0)  # the job is failed with `time_limit` after this
    job_time_limit_s: float = Field(3900.0, gt=0)  # the worker process is killed after this
    visibility_timeout_s: float = Field(7200.0, gt=0)  # a message unacknowledged this long goes back to the queue
    max_attempts: int = Field(2, ge=1)  # runs of one job that may end with its worker lost before it fails
    max_retries: int = Field(3, ge=0)  # retries after a transient error (I/O, broker, out of GPU memory)
    retry_backoff_s: float = Field(30.0, ge=0)
    lease_s: float = Field(60.0, gt=0)  # a running job whose worker has not renewed its lease for this is lost
    heartbeat_ttl_s: float = Field(30.0, gt=0)  # a worker whose heartbeat is older is gone
    unacked_restore_interval_s: float = Field(10.0, gt=0)  # how often workers look for abandoned messages

    # The DICOM listener (`itvsam scp`): who may send (calling AE title and source address, both must match; none
    # configured: every association is refused), limits and timeouts, and when a received study is ready.
    scp_ae_title: AETitle = "ITVSAM"
    scp_host: str = "0.0.0.0"
    scp_port: int = Field(11112, ge=0, lt=65536)
    scp_peers: Annotated[tuple[Peer, ...], NoDecode] = ()
    scp_tls_cert: Path | None = None  # PEM certificate chain and key: TLS on the listening port
    scp_tls_key: Path | None = None
    scp_tls_ca: Path | None = None  # with it, peers must present a certificate signed by this CA
    scp_max_associations: int = Field(8, ge=1)
    scp_max_pdu_bytes: int = Field(262_144, ge=0)  # 0: unlimited
    scp_acse_timeout_s: float = Field(30.0, gt=0)
    scp_dimse_timeout_s: float = Field(60.0, gt=0)
    scp_network_timeout_s: float = Field(120.0, gt=0)
    scp_settle_s: float = Field(10.0, ge=0)  # a complete 4DCT is submitted once no instance came for this long
    scp_idle_timeout_s: float = Field(300.0, gt=0)  # an incomplete study is validated (and refused) after this
    scp_rerun_on_change: bool = True  # late instances that change a submitted study start a new job
    scp_keep_s: float = Field(86_400.0, gt=0)  # a submitted study's instances are kept this long for late arrivals
    scp_options: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)  # job options of listener jobs
    submit_direct: bool = False  # `itvsam submit-dir`: enqueue into the store and Redis, not through the gateway

    # Results sent back by C-STORE (the `itvsam scp` process delivers them).
    destinations: Annotated[tuple[Destination, ...], NoDecode] = ()
    delivery_attempts: int = Field(6, ge=1)
    delivery_backoff_s: float = Field(30.0, ge=0)  # doubled after each failed attempt, up to delivery_max_backoff_s
    delivery_max_backoff_s: float = Field(600.0, ge=0)

    @field_validator("scp_peers", mode="before")
    @classmethod
    def _peers(cls, value: object) -> object:
        return parse_peers(value)

    @field_validator("destinations", mode="before")
    @classmethod
    def _destinations(cls, value: object) -> object:
        return parse_destinations(value)

    @field_validator("scp_options", mode="before")
    @classmethod
    def _options(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) and value.strip() else ({} if value == "" else value)

    @field_validator("model_dir", "adapter_dir", "scp_tls_cert", "scp_tls_key", "scp_tls_ca", mode="before")
    @classmethod
    def _no_path(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _split_hashes(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        return value

    @field_validator("api_key_hashes")
    @classmethod
    def _check_hashes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(v.strip().lower().removeprefix("sha256:") for v in value)
        for digest in cleaned:
            if len(digest) != 64 or not set(digest) <= _HEX:
                raise ValueError(f"api_key_hashes must be SHA-256 hex digests (64 hex digits; `itvsam apikey` makes "
                                 f"one), got one of {len(digest)} characters starting {digest[:4]!r}")
        return cleaned

    @model_validator(mode="after")
    def _check_time_limits(self) -> Self:
        if not self.job_soft_time_limit_s < self.job_time_limit_s < self.visibility_timeout_s:
            raise ValueError(
                "time limits must satisfy job_soft_time_limit_s < job_time_limit_s < visibility_timeout_s (a message "
                "must not be redelivered while its job may still run), got "
                f"{self.job_soft_time_limit_s} < {self.job_time_limit_s} < {self.visibility_timeout_s}")
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if (self.scp_tls_cert is None) != (self.scp_tls_key is None):
            raise ValueError("TLS needs both scp_tls_cert and scp_tls_key, got only "
                             f"{'scp_tls_cert' if self.scp_tls_cert else 'scp_tls_key'}")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique, got {names}")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
