"""The settings every process shares (``ITVSAM_*`` environment variables): where jobs live and the queue.

Each process has its own class built on this one (``service.settings.GatewaySettings`` / ``ListenerSettings``,
``workers.settings.WorkerSettings``), read once by that process's cached getter, never at import time; each validates
only what it uses. Every field is documented in the README's service section. Sizes in bytes, durations in seconds.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """The job store, the broker and the queue (and the broker's redelivery of unacknowledged messages, which the
    sender and the worker must agree on)."""

    model_config = SettingsConfigDict(env_prefix="ITVSAM_", extra="ignore", frozen=True)

    store_dir: Path = Path("itvsam-store")  # a shared volume when workers run on other machines
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "gpu"
    visibility_timeout_s: float = Field(7200.0, gt=0)  # a message unacknowledged this long goes back to the queue
    unacked_restore_interval_s: float = Field(10.0, gt=0)  # how often abandoned messages are looked for
