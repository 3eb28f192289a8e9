"""The service end to end against real processes: a private redis-server, the gateway under uvicorn
(``itvsam serve``), a Celery worker (``itvsam worker``) holding the tiny SAM 3. A small phantom goes in as a zip
(``itvsam submit --wait``) and as STOW-RS; the RTSTRUCTs that come back are dciodvfy-clean. Bad input is refused with
the right status and message while the good jobs are untouched; unauthenticated requests are refused."""

from __future__ import annotations

import json
import zipfile

import httpx
import pytest
from typer.testing import CliRunner

from itvsam.cli import app
from itvsam.common import EXIT_REFUSED, EXIT_SERVICE
from tests.conftest import dciodvfy_errors, require_tool
from tests.support.service import (
    API_KEY,
    LIGHT_OPTIONS,
    missing_phase_copy,
    mixed_patient_copy,
    phantom_study,
    running_service,
    stow_body,
    wait_for,
    zip_bomb,
    zip_folder,
    zip_slip,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
runner = CliRunner()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    require_tool("redis-server")
    root = tmp_path_factory.mktemp("service")
    with running_service(root, ITVSAM_MAX_UPLOAD_BYTES=str(40 * 1024 * 1024)) as service:
        yield {**service, "study": phantom_study(root / "p", seed=31)}


def wait_finished(client: httpx.Client, job_id: str, timeout_s: float = 180) -> dict:
    return wait_for(f"job {job_id}", lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in (
        "succeeded", "failed", "cancelled") and job, timeout_s)


def test_zip_through_itvsam_submit_gives_a_valid_rtstruct(service, tmp_path):
    options = tmp_path / "options.json"
    options.write_text(json.dumps(LIGHT_OPTIONS))
    result_zip = tmp_path / "result.zip"
    result = runner.invoke(app, ["submit", str(service["study"]), "--url", service["url"], "--token", API_KEY,
                                 "--options", str(options), "--wait", "-o", str(result_zip)])
    assert result.exit_code == 0, result.output + service["worker"].tail()
    assert "succeeded" in result.stdout
    with zipfile.ZipFile(result_zip) as archive:
        assert {"RS_reference.dcm", "summary.json", "report.png"} <= set(archive.namelist())
        archive.extractall(tmp_path / "result")
    assert dciodvfy_errors(tmp_path / "result" / "RS_reference.dcm") == []
    jobs = service["client"].get("/v1/jobs", params={"state": "succeeded"}).json()["data"]
    job = jobs[0]
    assert job["attempts"] == 1 and job["input"]["source"] == "zip" and job["fraction"] == 1.0
    assert {"reading_s", "segmenting_s", "refining_s", "writing_s"} <= set(job["timings"])
    summary = service["client"].get(f"/v1/jobs/{job['id']}/summary").json()
    assert set(summary["structures"]) == {"GTV"}


def test_stow_rs_job_succeeds_and_rtstruct_downloads(service, tmp_path):
    client = service["client"]
    body, content_type = stow_body(sorted(service["study"].iterdir()))
    response = client.post("/dicomweb/studies", content=body, params={"options": json.dumps(LIGHT_OPTIONS),
                                                                      "force": "true"},
                           headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert len(response.json()["00081199"]["Value"]) == 440
    job_id = response.headers["location"].rsplit("/", 1)[1]
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=180) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["state"] == "succeeded", events[-1]
    assert any(e["stage"] == "segmenting" and e["phases"] == 10 for e in events)
    rtstruct = client.get(f"/v1/jobs/{job_id}/rtstruct")
    assert rtstruct.headers["content-type"] == "application/dicom"
    (tmp_path / "rs.dcm").write_bytes(rtstruct.content)
    assert dciodvfy_errors(tmp_path / "rs.dcm") == []
    assert client.get(f"/v1/jobs/{job_id}/report").content[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_refused_and_nothing_is_queued_or_lost(service, tmp_path):
    client = service["client"]
    before = client.get("/v1/jobs").json()
    study = service["study"]
    cases = {
        "not_dicom": (tmp_path / "text.zip", 422, "no_ct"),
        "bomb": (zip_bomb(tmp_path / "bomb.zip"), 413, "zip_bomb"),
        "slip": (zip_slip(tmp_path / "slip.zip", study), 400, "unsafe_zip_path"),
        "oversize": (tmp_path / "big.zip", 413, "upload_too_large"),
        "mixed_patient": (zip_folder(mixed_patient_copy(study, tmp_path / "m"), tmp_path / "m.zip"), 422,
                          "multiple_patients"),
        "missing_phase": (zip_folder(missing_phase_copy(study, tmp_path / "i"), tmp_path / "i.zip"), 422,
                          "incomplete_study"),
    }
    with zipfile.ZipFile(cases["not_dicom"][0], "w") as archive:
        archive.writestr("notes.txt", "not a CT")
    cases["oversize"][0].write_bytes(bytes(41 * 1024 * 1024))
    for name, (archive, status, code) in cases.items():
        response = client.post("/v1/jobs", content=archive.read_bytes(), headers={"Content-Type": "application/zip"})
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), name
        assert response.json()["error"]["message"]
    result = runner.invoke(app, ["submit", str(tmp_path / "m"), "--url", service["url"], "--token", API_KEY])
    assert result.exit_code == EXIT_REFUSED
    assert "[multiple_patients]" in result.stderr
    after = client.get("/v1/jobs").json()
    assert after["count"] == before["count"]
    assert [j["state"] for j in after["data"]] == [j["state"] for j in before["data"]]
    metrics = httpx.get(f"{service['url']}/metrics").text
    assert "itvsam_queue_depth 0.0" in metrics


def test_unauthenticated_requests_are_refused(service):
    url = service["url"]
    assert httpx.get(f"{url}/v1/jobs").status_code == 401
    assert httpx.get(f"{url}/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 403
    body, content_type = stow_body(sorted(service["study"].iterdir())[:2])
    assert httpx.post(f"{url}/dicomweb/studies", content=body, headers={"Content-Type": content_type}
                      ).status_code == 401
    result = runner.invoke(app, ["submit", str(service["study"]), "--url", url, "--token", "nope"])
    assert result.exit_code == EXIT_SERVICE
    assert "[forbidden]" in result.stderr


def test_readyz_and_metrics_show_the_worker_and_its_model(service):
    ready = httpx.get(f"{service['url']}/readyz").json()
    worker = ready["checks"]["workers"]["workers"][0]
    assert worker["model_loaded"] and worker["device"] == "cpu" and worker["identity"]["short"]
    metrics = httpx.get(f"{service['url']}/metrics").text
    assert 'itvsam_workers{model_loaded="true"} 1.0' in metrics
    assert "itvsam_worker_heartbeat_age_seconds{" in metrics
    assert "itvsam_redis_up 1.0" in metrics
