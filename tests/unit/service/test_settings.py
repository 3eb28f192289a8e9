"""Settings from ITVSAM_* variables, one class per process: API key hashes (gateway), the ordering of time limits
(worker), the listener's job options, and the Celery configuration every process shares."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.queue import celery_config
from jobs.settings import CommonSettings
from service.settings import GatewaySettings, ListenerSettings, hash_api_key
from workers.celery_app import worker_config
from workers.settings import WorkerSettings


def test_key_hashes_from_comma_list_or_json(monkeypatch):
    one, two = hash_api_key("a"), hash_api_key("b")
    monkeypatch.setenv("ITVSAM_API_KEY_HASHES", f"{one}, sha256:{two.upper()}")
    assert GatewaySettings().api_key_hashes == (one, two)
    monkeypatch.setenv("ITVSAM_API_KEY_HASHES", f'["{one}"]')
    assert GatewaySettings().api_key_hashes == (one,)


def test_a_plain_key_is_not_a_hash(monkeypatch):
    monkeypatch.setenv("ITVSAM_API_KEY_HASHES", "my-secret-key")
    with pytest.raises(ValidationError, match="SHA-256 hex digests"):
        GatewaySettings()


def test_each_process_validates_only_its_own_settings(monkeypatch):
    monkeypatch.setenv("ITVSAM_API_KEY_HASHES", "my-secret-key")  # the gateway's problem, not the worker's
    monkeypatch.setenv("ITVSAM_JOB_SOFT_TIME_LIMIT_S", "500")
    monkeypatch.setenv("ITVSAM_JOB_TIME_LIMIT_S", "400")  # the worker's problem, not the gateway's
    assert ListenerSettings().scp_ae_title == "ITVSAM"
    with pytest.raises(ValidationError, match="job_soft_time_limit_s < job_time_limit_s"):
        WorkerSettings()
    with pytest.raises(ValidationError, match="SHA-256 hex digests"):
        GatewaySettings()


def test_visibility_timeout_must_exceed_the_job_time_limits():
    with pytest.raises(ValidationError, match="job_soft_time_limit_s < job_time_limit_s < visibility_timeout_s"):
        WorkerSettings(job_soft_time_limit_s=100, job_time_limit_s=200, visibility_timeout_s=150)


def test_listener_job_options_are_parsed_and_refused_by_name(monkeypatch):
    monkeypatch.setenv("ITVSAM_SCP_OPTIONS", '{"mode": "reference", "seg": false}')
    options = ListenerSettings().scp_options
    assert (options.mode.value, options.seg, options.projections) == ("reference", False, True)
    monkeypatch.setenv("ITVSAM_SCP_OPTIONS", '{"mode": "nonsense"}')
    with pytest.raises(ValidationError, match=r"scp_options[\s\S]*mode: Input should be"):
        ListenerSettings()


def test_celery_is_configured_from_the_settings():
    config = celery_config(CommonSettings(redis_url="redis://example:1/2", queue="gpu", visibility_timeout_s=9000))
    assert config["broker_url"] == "redis://example:1/2"
    assert config["broker_transport_options"]["visibility_timeout"] == 9000
    assert (config["task_acks_late"], config["task_reject_on_worker_lost"], config["worker_prefetch_multiplier"]) \
        == (True, True, 1)
    assert config["task_routes"] == {"itvsam.run_job": {"queue": "gpu"}}
    worker = worker_config(WorkerSettings(job_soft_time_limit_s=10, job_time_limit_s=20, visibility_timeout_s=30,
                                          model_load_timeout_s=5))
    assert (worker["task_soft_time_limit"], worker["task_time_limit"], worker["worker_proc_alive_timeout"]) \
        == (10, 20, 5)
    assert worker["broker_transport_options"]["visibility_timeout"] == 30
