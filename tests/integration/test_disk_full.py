"""The job store's disk filling up while a job runs (the store on a small tmpfs; needs root to mount it).

While the disk is full the gateway is not ready (its store check fails) and refuses new uploads with 507; the job's
writes fail, and so does the record of its retry (the manifest cannot be written either): its lease lapses and the
gateway's maintenance sends it again (attempt 2, ``jobs.queue``). It is not failed, and once space is back it
succeeds, once, with its input intact.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.service import LIGHT_OPTIONS, phantom_study, running_service, wait_for, zip_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STORE_BYTES = 96 << 20


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the store needs root")
    store = tmp_path / "store"
    store.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STORE_BYTES}", "tmpfs", str(store)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until the disk is full; returns the filler file."""
    filler = folder / "filler.bin"
    block = bytes(1 << 20)
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_mid_job_is_retried_and_the_job_succeeds_once_space_is_back(small_disk, tmp_path):
    require_tool("redis-server")
    archive = zip_folder(phantom_study(tmp_path / "p", seed=45), tmp_path / "study.zip")
    with running_service(tmp_path, ITVSAM_MIN_FREE_BYTES="4194304", ITVSAM_RETRY_BACKOFF_S="2") as service:
        client = service["client"]
        response = client.post("/v1/jobs", content=archive.read_bytes(), headers={"Content-Type": "application/zip"},
                               params={"options": json.dumps(LIGHT_OPTIONS)})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        wait_for("the job to segment", lambda: client.get(f"/v1/jobs/{job_id}").json()["stage"] == "segmenting", 120)
        filler = fill(small_disk)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["store"]["ok"]
        refused = client.post("/v1/jobs", content=archive.read_bytes(), headers={"Content-Type": "application/zip"},
                              params={"force": "true"})
        assert refused.status_code == 507, refused.text
        wait_for("a retry after the failed write", lambda: client.get(f"/v1/jobs/{job_id}").json().get(
            "retries", 0) >= 1 or service["worker"].log.read_text().count("No space left") >= 1, 180, 0.5)
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] in ("queued", "running")  # not failed
        filler.unlink()
        done = wait_for("the job to finish", lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in (
            "succeeded", "failed") and job, 240, 0.5)
        assert done["state"] == "succeeded" and done["attempts"] <= 2, (done, service["worker"].tail())
        assert client.get(f"/v1/jobs/{job_id}/rtstruct").status_code == 200
        assert client.get("/v1/jobs").json()["count"] == 1  # the refused upload made no job
        assert client.get("/readyz").status_code == 200
