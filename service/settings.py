"""The service's settings, read from ``ITVSAM_*`` environment variables: one class per process on the common part
(``jobs.settings.CommonSettings``): the gateway's and the listener's, both on the intake limits they share.

Each process builds its own through a cached getter, never at import time. Every field is documented in the README's
service section. Sizes in bytes, durations in seconds.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from jobs.options import JobOptions, parse_options
from jobs.settings import CommonSettings
from service.dicom.peers import AETitle, Destination, Peer, parse_destinations, parse_peers

GiB = 1024**3
_HEX = set("0123456789abcdef")


def hash_api_key(key: str) -> str:
    """The at-rest form of a bearer API key: its SHA-256 as 64 lowercase hex digits (keys are long random tokens,
    so a fast hash is enough; what matters is that the settings never hold a usable key)."""
    return hashlib.sha256(key.encode()).hexdigest()


class IntakeSettings(CommonSettings):
    """What every process that accepts studies shares (gateway, listener, ``itvsam submit-dir``): upload limits and
    the store's disk watermark."""

    max_upload_bytes: int = Field(4 * GiB, gt=0)  # the request body (zip or multipart) as sent
    max_study_bytes: int = Field(8 * GiB, gt=0)  # the files of one study after unpacking
    max_files: int = Field(20_000, gt=0)  # files (zip entries, multipart parts) in one upload
    max_zip_ratio: float = Field(100.0, gt=1)  # uncompressed / compressed size of any zip entry
    max_options_bytes: int = Field(64 * 1024, gt=0)
    upload_timeout_s: float = Field(900.0, gt=0)  # the whole request body must arrive within this
    min_free_bytes: int = Field(2 * GiB, ge=0)  # disk watermark: below it uploads are refused and readyz fails
    min_free_fraction: float = Field(0.05, ge=0, lt=1)


class GatewaySettings(IntakeSettings):
    """What ``itvsam serve`` (the HTTP gateway) is configured with."""

    # Auth: SHA-256 hex digests of the accepted bearer keys (`itvsam apikey` makes a key and its digest);
    # a JSON list or comma-separated. With none configured, every authenticated request is refused.
    api_key_hashes: Annotated[tuple[str, ...], NoDecode] = ()
    open_health: bool = True  # /healthz, /readyz and /metrics without a key
    retention_days: float = Field(7.0, gt=0)  # finished jobs (results included) are removed after this
    maintenance_interval_s: float = Field(30.0, gt=0)  # requeue lost jobs, apply retention
    events_poll_s: float = Field(0.5, gt=0)  # SSE: how often a job's manifest is looked at

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


class ListenerSettings(IntakeSettings):
    """What ``itvsam scp`` (the DICOM listener and its deliveries), ``itvsam submit-dir`` and ``itvsam echo`` are
    configured with: who may send (calling AE title and source address, both must match; none configured: every
    association is refused), limits and timeouts, when a received study is ready, and where results go."""

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
    scp_options: Annotated[JobOptions, NoDecode] = Field(default_factory=JobOptions)  # options of listener jobs
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
        if isinstance(value, JobOptions):
            return value
        if isinstance(value, str):  # JSON (a decoding error is a ValueError: reported with the setting's name)
            value = json.loads(value) if value.strip() else {}
        return parse_options(value)

    @field_validator("scp_tls_cert", "scp_tls_key", "scp_tls_ca", mode="before")
    @classmethod
    def _no_path(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

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
def get_gateway_settings() -> GatewaySettings:
    """The gateway process's settings, read from the environment once."""
    return GatewaySettings()


@lru_cache
def get_listener_settings() -> ListenerSettings:
    """The listener's (and ``submit-dir``'s, ``echo``'s) settings, read from the environment once."""
    return ListenerSettings()
