"""Settings from ITVSAM_* variables: API key hashes, the ordering of time limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings, hash_api_key
from workers.celery_app import celery_config


def test_key_hashes_from_comma_list_or_json(monkeypatch):
    one, two = hash_api_key("a"), hash_api_key("b")
    monkeypatch.setenv("ITVSAM_API_KEY_HASHES", f"{one}, sha256:{two.upper()}")
    assert Settings().api_key_hashes == (one, two)
    monkeypatch.setenv("ITVSAM_API_KEY_HASHES", f'["{one}"]')
    assert Settings().api_key_hashes == (one,)


def test_a_plain_key_is_not_a_hash(monkeypatch):
    monkeypatch.setenv("ITVSAM_API_KEY_HASHES", "my-secret-key")
    with pytest.raises(ValidationError, match="SHA-256 hex digests"):
        Settings()


def test_visibility_timeout_must_exceed_the_job_time_limits():
    with pytest.raises(ValidationError, match="job_soft_time_limit_s < job_time_limit_s < visibility_timeout_s"):
        Settings(job_soft_time_limit_s=100, job_time_limit_s=200, visibility_timeout_s=150)


def test_celery_is_configured_from_the_settings():
    config = celery_config(Settings(redis_url="redis://example:1/2", queue="gpu", visibility_timeout_s=9000))
    assert config["broker_url"] == "redis://example:1/2"
    assert config["broker_transport_options"]["visibility_timeout"] == 9000
    assert (config["task_acks_late"], config["task_reject_on_worker_lost"], config["worker_prefetch_multiplier"]) \
        == (True, True, 1)
    assert config["task_routes"] == {"itvsam.run_job": {"queue": "gpu"}}
