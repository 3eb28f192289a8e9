"""The DICOM paths end to end with real processes: a private redis-server, a Celery worker (``itvsam worker``) with the
tiny SAM 3, the gateway (``itvsam serve``), dcmtk peers.

- scanner → ``storescu`` → the listener → exactly one job → it succeeds → the reference RTSTRUCT is C-STOREd to a dcmtk
  ``storescp`` playing the planning system, dciodvfy-clean, and the delivery shows in the job;
- a site's own dcmtk ``storescp --sort-on-study-uid --exec-on-eostudy "itvsam submit-dir #p"`` → the gateway → the
  job succeeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from jobs.manifest import DeliveryState, JobState
from jobs.queue import celery_queue
from jobs.store import JobStore
from tests.conftest import dciodvfy_errors, require_tool
from tests.support.dicom import DCMTK_ENV, PlanningSystem, dcmtk, listener_settings, running_listener, storescu
from tests.support.service import (
    API_KEY,
    LIGHT_OPTIONS,
    Proc,
    free_port,
    phantom_study,
    running_service,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    require_tool("redis-server")
    root = tmp_path_factory.mktemp("dicom-e2e")
    with running_service(root) as service:
        yield {**service, "study": phantom_study(root / "p", seed=37)}


def wait_job(service, job_id: str, timeout_s: float = 180) -> dict:
    return wait_for(f"job {job_id}", lambda: (job := service["client"].get(f"/v1/jobs/{job_id}").json())["state"]
                    in ("succeeded", "failed", "cancelled") and job, timeout_s, 0.5)


def test_storescu_to_itvsam_scp_job_succeeds_and_rtstruct_reaches_the_planning_system(service, tmp_path):
    tps = PlanningSystem(tmp_path).start()
    settings = listener_settings(service["root"], redis_url=service["redis"], scp_options=json.dumps(LIGHT_OPTIONS),
                                 destinations=json.dumps([tps.destination(outputs=["reference"])]))
    store = JobStore(settings.store_dir)
    try:
        with running_listener(settings, celery_queue(settings)) as listener:
            sent = storescu(listener.port, service["study"])
            assert sent.returncode == 0, sent.stderr
            job_id = wait_for("the job", lambda: [m.id for m in store.manifests() if m.input.source == "dicom"],
                              30, 0.1)[0]
            job = wait_job(service, job_id)
            assert job["state"] == "succeeded", (job, service["worker"].tail())
            delivered = wait_for("the delivery", lambda: (d := store.read(job_id).deliveries[0]).state
                                 is DeliveryState.DELIVERED and d, 60, 0.2)
        assert [m.id for m in store.manifests() if m.input.source == "dicom"] == [job_id]  # exactly one job
        assert delivered.files == 1 and delivered.destination == "tps"
        (rtstruct,) = tps.files()
        assert dciodvfy_errors(rtstruct) == []
        public = service["client"].get(f"/v1/jobs/{job_id}").json()
        assert public["deliveries"][0]["state"] == "delivered" and public["input"]["calling_ae"] == "SCANNER"
    finally:
        tps.stop()


def test_storescp_exec_on_eostudy_hook_submits_the_study_and_the_job_succeeds(service, tmp_path):
    options = tmp_path / "options.json"
    options.write_text(json.dumps(LIGHT_OPTIONS))
    itvsam = Path(sys.executable).with_name("itvsam")
    assert itvsam.is_file(), "the itvsam script is not installed in the venv (pip install -e .)"
    port = free_port()
    received = tmp_path / "storescp"
    received.mkdir()
    env = {**DCMTK_ENV, **{k: v for k, v in service["env"].items() if k.startswith("ITVSAM_")},
           "ITVSAM_URL": service["url"], "ITVSAM_TOKEN": API_KEY}
    hook = f"{itvsam} submit-dir #p --options {options}"
    argv = [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(received), "--sort-on-study-uid", "st",
            "--eostudy-timeout", "2", "--exec-on-eostudy", hook, str(port)]
    storescp = Proc("storescp", argv, env, tmp_path / "storescp.log")
    before = {j["id"] for j in service["client"].get("/v1/jobs").json()["data"]}
    try:
        wait_for("storescp", lambda: storescu(port, sorted(service["study"].iterdir())[0], aec="STORESCP")
                 .returncode == 0 or (not storescp.alive() and pytest.fail(storescp.tail())), 20, 0.2)
        assert storescu(port, service["study"], aec="STORESCP").returncode == 0
        job = wait_for("the hook's job", lambda: [j for j in service["client"].get("/v1/jobs").json()["data"]
                                                  if j["id"] not in before], 60, 0.5)[0]
    finally:
        storescp.stop()
    finished = wait_job(service, job["id"])
    assert finished["state"] == JobState.SUCCEEDED.value, (finished, storescp.tail())
    assert finished["input"]["source"] == "zip" and finished["input"]["files"] == 440
