"""The listener (``itvsam scp``, a process of its own) killed the way machines die: SIGKILL of its process group.

- mid-association (a scanner sending a 4DCT): the instances already stored are taken back when it restarts, the
  scanner sends the study again, and exactly one job is made of it, which succeeds;
- mid-delivery (the planning system unreachable while the delivery retries): the restarted listener finds the
  delivery in the job's manifest and sends it once the planning system is back: one RTSTRUCT arrives, once.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from jobs.manifest import DeliveryState
from jobs.store import JobStore
from tests.conftest import dciodvfy_errors, require_tool
from tests.support.dicom import DCMTK_ENV, SENDER, PlanningSystem, dcmtk, storescu
from tests.support.service import LIGHT_OPTIONS, Proc, free_port, itvsam_argv, phantom_study, running_service, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    require_tool("redis-server")
    dcmtk("storescu")
    root = tmp_path_factory.mktemp("listener-faults")
    with running_service(root) as service:
        yield {**service, "study": phantom_study(root / "p", seed=43), "other": phantom_study(root / "q", seed=44)}


def listener_env(service, port: int, **extra: str) -> dict[str, str]:
    return {**service["env"], "ITVSAM_SCP_HOST": "127.0.0.1", "ITVSAM_SCP_PORT": str(port),
            "ITVSAM_SCP_PEERS": f"{SENDER}@127.0.0.1", "ITVSAM_SCP_SETTLE_S": "1", "ITVSAM_SCP_IDLE_TIMEOUT_S": "20",
            "ITVSAM_SCP_OPTIONS": json.dumps(LIGHT_OPTIONS), "ITVSAM_DELIVERY_BACKOFF_S": "0.5",
            "ITVSAM_DELIVERY_MAX_BACKOFF_S": "1", "ITVSAM_DELIVERY_ATTEMPTS": "1000", **extra}


def start_listener(env: dict[str, str], log: Path) -> Proc:
    proc = Proc("listener", itvsam_argv("scp"), env, log)
    echo = [dcmtk("echoscu"), "-aet", SENDER, "-aec", "ITVSAM", "127.0.0.1", env["ITVSAM_SCP_PORT"]]
    wait_for("the listener", lambda: subprocess.run(echo, capture_output=True, env=DCMTK_ENV, check=False,
                                                    timeout=20).returncode == 0, 60)
    return proc


def dicom_jobs(store: JobStore) -> list:
    return [m for m in store.manifests() if m.input.source == "dicom"]


def incoming_files(store: JobStore) -> int:
    return sum(1 for p in (store.root / "incoming").rglob("*.dcm"))


def test_a_listener_killed_mid_association_loses_nothing_and_makes_one_job(service, tmp_path):
    store = JobStore(service["root"] / "store")
    port = free_port()
    env = listener_env(service, port)
    listener = start_listener(env, tmp_path / "listener1.log")
    argv = [dcmtk("storescu"), "-aet", SENDER, "-aec", "ITVSAM", "-xe", "+sd", "+r", "127.0.0.1", str(port),
            str(service["study"])]
    sending = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_for("part of the study to arrive", lambda: incoming_files(store) >= 100, 60, 0.05)
        listener.kill()  # SIGKILL of the whole group, mid-association
        assert sending.wait(timeout=60) != 0  # the scanner sees the association fail
    finally:
        if sending.poll() is None:
            sending.kill()
    kept = incoming_files(store)
    assert 100 <= kept < 440 and dicom_jobs(store) == []
    listener = start_listener(env, tmp_path / "listener2.log")  # takes back what incoming/ holds
    try:
        assert storescu(port, service["study"]).returncode == 0  # the scanner sends the study again
        job_id = wait_for("the job", lambda: [m.id for m in dicom_jobs(store)], 60, 0.2)[0]
        done = wait_for("the job to finish", lambda: (m := store.read(job_id)).state.value in (
            "succeeded", "failed") and m, 180, 0.5)
        assert done.state.value == "succeeded" and done.attempts == 1, done.error
        assert done.input.files == 440  # every instance, each once
        time.sleep(2)  # a second job would have been made by now (settle 1 s)
        assert [m.id for m in dicom_jobs(store)] == [job_id]
        assert list((store.root / "incoming" / ".partial").iterdir()) == []
    finally:
        listener.stop()


def test_a_listener_killed_while_a_delivery_retries_delivers_it_once_after_restart(service, tmp_path):
    store = JobStore(service["root"] / "store")
    port = free_port()
    tps = PlanningSystem(tmp_path)  # not started: the planning system is down
    env = listener_env(service, port, ITVSAM_DESTINATIONS=json.dumps([tps.destination(outputs=["reference"])]))
    before = {m.id for m in dicom_jobs(store)}
    listener = start_listener(env, tmp_path / "listener1.log")
    try:
        assert storescu(port, service["other"]).returncode == 0
        job_id = wait_for("the job", lambda: [m.id for m in dicom_jobs(store) if m.id not in before], 60, 0.2)[0]
        wait_for("delivery attempts to fail", lambda: (d := store.read(job_id).deliveries[0]).attempts >= 2
                 and d.state is DeliveryState.PENDING, 240, 0.2)
    finally:
        listener.kill()  # SIGKILL while the delivery is due again
    tps.start()
    listener = start_listener(env, tmp_path / "listener2.log")
    try:
        delivered = wait_for("the delivery", lambda: (d := store.read(job_id).deliveries[0]).state
                             is DeliveryState.DELIVERED and d, 60, 0.2)
        assert delivered.files == 1
        time.sleep(2)
        (rtstruct,) = tps.files()  # once, not once per listener run
        assert dciodvfy_errors(rtstruct) == []
    finally:
        listener.stop()
        tps.stop()
