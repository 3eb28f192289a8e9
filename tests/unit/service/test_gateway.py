"""The gateway in-process (FastAPI TestClient) on a real job store, with a recording queue instead of Celery/Redis:
uploads (zip, multipart, STOW-RS), refusals and limits, idempotency, auth, listing, cancel/delete, results, SSE,
health and metrics."""

from __future__ import annotations

import json
import time
import zipfile

import pydicom
import pytest
from fastapi.testclient import TestClient

from jobs.manifest import JobState
from jobs.options import JobOptions
from jobs.queue import WorkerBeat
from jobs.store import JobStore
from service.api.app import create_app
from service.settings import GatewaySettings
from tests.support.service import (
    API_KEY_HASH,
    AUTH,
    form_body,
    missing_phase_copy,
    mixed_patient_copy,
    phantom_study,
    stow_body,
    zip_bomb,
    zip_folder,
    zip_slip,
)


class RecordingQueue:
    """The gateway's queue, recording what it sends (and the workers it is told about)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.beats: list[WorkerBeat] = []

    def enqueue(self, job_id: str) -> bool:
        self.sent.append(job_id)
        return True

    def forget(self, job_id: str) -> None:
        pass

    def depth(self) -> int:
        return len(self.sent)

    def ping(self) -> bool:
        return True

    def workers(self) -> list[WorkerBeat]:
        return self.beats

    def requeue_lost(self, store: JobStore) -> list[str]:
        return []


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    dicom = phantom_study(root / "p", seed=21)
    return {"dicom": dicom, "zip": zip_folder(dicom, root / "study.zip"), "root": root}


@pytest.fixture
def gateway(tmp_path):
    settings = GatewaySettings(store_dir=tmp_path / "store", api_key_hashes=(API_KEY_HASH,), min_free_bytes=0,
                        min_free_fraction=0, max_upload_bytes=40 * 1024 * 1024, events_poll_s=0.05)
    queue = RecordingQueue()
    app = create_app(settings, queue=queue, maintenance=False)
    with TestClient(app) as client:
        yield client, queue, JobStore(settings.store_dir)


def post_zip(client, path, **params):
    return client.post("/v1/jobs", content=path.read_bytes(), params=params,
                       headers={**AUTH, "Content-Type": "application/zip"})


def test_zip_upload_is_validated_stored_and_queued_once(gateway, study):
    client, queue, store = gateway
    response = post_zip(client, study["zip"])
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["created"] is True and created["state"] == "queued"
    assert response.headers["location"] == created["url"] == f"http://testserver/v1/jobs/{created['id']}"
    assert queue.sent == [created["id"]]
    job = client.get(f"/v1/jobs/{created['id']}", headers=AUTH).json()
    assert job["study"]["phases"] == [f"{10 * k}%" for k in range(10)]
    assert job["study"]["shape_zyx"] == [44, 128, 128]
    assert job["input"] == {"source": "zip", "files": 440, "bytes": job["input"]["bytes"]}
    assert len(list(store.input_dir(created["id"]).iterdir())) == 440
    assert not list(store.staging.iterdir())

    again = post_zip(client, study["zip"])
    assert again.status_code == 200 and again.json()["id"] == created["id"] and again.json()["created"] is False
    forced = post_zip(client, study["zip"], force="true")
    assert forced.status_code == 202 and forced.json()["id"] != created["id"]
    assert queue.sent == [created["id"], forced.json()["id"]]


def test_same_files_as_multipart_are_the_same_study(gateway, study):
    client, queue, _ = gateway
    first = post_zip(client, study["zip"]).json()
    body, content_type = form_body(sorted(study["dicom"].iterdir()))
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 200 and response.json()["id"] == first["id"]

    body, content_type = form_body(sorted(study["dicom"].iterdir()), options='{"mode": "reference"}')
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 202, response.text
    stored = client.get(response.json()["url"], headers=AUTH).json()["options"]
    assert stored == {**JobOptions().to_json(), "mode": "reference"}  # normalised: every default spelled out
    assert len(queue.sent) == 2


@pytest.mark.parametrize(("options", "named"), [
    ({"mode": "nonsense"}, "mode: Input should be 'per-phase', 'reference', 'combined' or 'all'"),
    ({"threshold": 1.5}, "threshold: Input should be less than 1"),
    ({"colour": "red"}, "colour: unknown option"),
    ({"template": [{"name": "GTV", "prompts": ["tumour"]}]}, "template: structures[0]: field 'type'"),
    ({"temporal": {"min_phases": 0}}, "temporal: need min_phases ≥ 1"),
    ({"itv_margin_mm": [1, 2]}, "itv_margin_mm"),
])
def test_a_bad_option_is_a_422_naming_the_field_and_queues_nothing(gateway, study, options, named):
    client, queue, store = gateway
    response = post_zip(client, study["zip"], options=json.dumps(options))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_options" and named in error["message"], error
    body, content_type = form_body(sorted(study["dicom"].iterdir())[:3], options=json.dumps(options))
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 422 and named in response.json()["error"]["message"]
    assert queue.sent == [] and store.ids() == [] and not list(store.staging.iterdir())


def test_no_options_and_the_defaults_spelled_out_are_one_job(gateway, study):
    client, queue, _ = gateway
    first = post_zip(client, study["zip"]).json()
    spelled = post_zip(client, study["zip"], options=json.dumps(JobOptions().to_json()))
    partial = post_zip(client, study["zip"], options='{"seg": true, "mode": "all", "itv_margin_mm": 0}')
    assert spelled.status_code == partial.status_code == 200
    assert spelled.json()["id"] == partial.json()["id"] == first["id"] and queue.sent == [first["id"]]


def test_stow_rs_answers_the_standard_response(gateway, study):
    client, queue, _ = gateway
    files = sorted(study["dicom"].iterdir())
    body, content_type = stow_body([*files, study["root"] / "study.zip"])
    response = client.post("/dicomweb/studies", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 202, response.text  # the zip part is not DICOM: one failed instance
    assert response.headers["content-type"] == "application/dicom+json"
    answer = response.json()
    referenced = answer["00081199"]["Value"]
    assert len(referenced) == 440
    assert referenced[0]["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert referenced[0]["00081190"]["Value"] == [response.headers["location"]]
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert queue.sent == [response.headers["location"].rsplit("/", 1)[1]]


def test_stow_with_a_malformed_non_ct_part_reports_it_and_never_500s(gateway, study, tmp_path):
    client, queue, _ = gateway
    files = sorted(study["dicom"].iterdir())
    ds = pydicom.dcmread(files[0])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # an MR image: "not CT"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.8.9.123"
    ds.save_as(tmp_path / "mr.dcm")
    data = bytearray((tmp_path / "mr.dcm").read_bytes())
    at = data.rindex(b"1.2.3.4.5.6.7.8.9.123")  # its dataset's (not its file meta's) copy of the SOPInstanceUID
    data[at - 4:at - 2] = b"\x55\xfe"  # the VR code of (0008,0018) flipped into an unknown one
    (tmp_path / "mr.dcm").write_bytes(bytes(data))
    body, content_type = stow_body([*files, tmp_path / "mr.dcm"])
    response = client.post("/dicomweb/studies", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 202, response.text
    failed = response.json()["00081198"]["Value"]
    assert len(failed) == 1 and failed[0]["00081197"]["Value"] == [0x0122]  # SOP class not supported
    assert "Value" not in failed[0]["00081155"]  # its UIDs could not be read: reported empty, not a 500
    assert len(queue.sent) == 1


def test_stow_of_an_incomplete_study_is_409_with_a_warning(gateway, study, tmp_path):
    client, queue, _ = gateway
    incomplete = missing_phase_copy(study["dicom"], tmp_path / "incomplete")
    body, content_type = stow_body(sorted(incomplete.iterdir()))
    response = client.post("/dicomweb/studies", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 409
    assert "[incomplete_study]" in response.headers["warning"]
    assert len(response.json()["00081198"]["Value"]) == 396
    assert queue.sent == []
    wrong_type = client.post("/dicomweb/studies", content=body,
                             headers={**AUTH, "Content-Type": content_type.replace("application/dicom", "image/png")})
    assert wrong_type.status_code == 415
    assert wrong_type.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(("case", "status", "code", "message"), [
    ("not_dicom", 422, "no_ct", "no CT images among 2 files"),
    ("not_zip", 400, "invalid_zip", "not a readable zip archive"),
    ("bomb", 413, "zip_bomb", "expands"),
    ("slip", 400, "unsafe_zip_path", "'../../evil.dcm' points outside the archive"),
    ("oversize", 413, "upload_too_large", "at most 41943040 bytes"),
    ("mixed_patient", 422, "multiple_patients", "patient"),
    ("missing_phase", 422, "incomplete_study", "phase"),
    ("bad_options", 422, "invalid_options", "must be a JSON object"),
])
def test_refusals_queue_nothing_and_keep_nothing(gateway, study, tmp_path, case, status, code, message):
    client, queue, store = gateway
    if case == "not_dicom":
        archive = tmp_path / "text.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("a.txt", "hello")
            zf.writestr("b/c.dcm", b"DICM" * 100)
    elif case == "not_zip":
        archive = tmp_path / "x.zip"
        archive.write_bytes(b"this is not a zip" * 100)
    elif case == "bomb":
        archive = zip_bomb(tmp_path / "bomb.zip")
    elif case == "slip":
        archive = zip_slip(tmp_path / "slip.zip", study["dicom"])
    elif case == "oversize":
        archive = tmp_path / "big.zip"
        archive.write_bytes(bytes(41 * 1024 * 1024))
    elif case == "mixed_patient":
        archive = zip_folder(mixed_patient_copy(study["dicom"], tmp_path / "mixed"), tmp_path / "mixed.zip")
    elif case == "missing_phase":
        archive = zip_folder(missing_phase_copy(study["dicom"], tmp_path / "missing"), tmp_path / "missing.zip")
    else:
        archive = study["zip"]
    params = {"options": "[1, 2]"} if case == "bad_options" else {}
    response = post_zip(client, archive, **params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert message in error["message"]
    assert queue.sent == []
    assert store.ids() == []
    assert not list(store.staging.iterdir())
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_oversize_by_declared_length_is_refused_before_reading(gateway):
    client, _, _ = gateway
    response = client.post("/v1/jobs", content=b"x", headers={**AUTH, "Content-Type": "application/zip",
                                                                "Content-Length": str(10**12)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"


def test_unsupported_media_type(gateway):
    client, _, _ = gateway
    response = client.post("/v1/jobs", content=b"{}", headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 415
    assert response.json() == {"error": {"code": "unsupported_media_type", "message":
                                         "send a zip (application/zip) or multipart/form-data, got "
                                         "'application/json'"}}


def test_unauthenticated_and_unknown_keys_are_refused(gateway, study):
    client, queue, _ = gateway
    for path in ("/v1/jobs", "/v1/jobs/0123456789abcdef01234567"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthenticated"
    response = client.post("/v1/jobs", content=study["zip"].read_bytes(),
                           headers={"Authorization": "Bearer wrong", "Content-Type": "application/zip"})
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "forbidden", "message": "the API key is not accepted"}}
    assert client.post("/dicomweb/studies", content=b"").status_code == 401
    assert queue.sent == []
    assert client.get("/healthz").json() == {"status": "ok"}


def test_listing_pages_newest_first_and_filters_by_state(gateway, study):
    client, _, store = gateway
    ids = [post_zip(client, study["zip"], force="true").json()["id"] for _ in range(3)]
    store.update(ids[0], lambda m: setattr(m, "state", JobState.FAILED))
    page = client.get("/v1/jobs", params={"limit": 2}, headers=AUTH).json()
    assert page["count"] == 3 and [j["id"] for j in page["data"]] == ids[::-1][:2]
    page = client.get("/v1/jobs", params={"offset": 2, "limit": 2}, headers=AUTH).json()
    assert [j["id"] for j in page["data"]] == [ids[0]]
    failed = client.get("/v1/jobs", params={"state": "failed"}, headers=AUTH).json()
    assert failed["count"] == 1 and failed["data"][0]["id"] == ids[0]
    bad = client.get("/v1/jobs", params={"limit": 0}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert client.get("/v1/jobs/not-an-id", headers=AUTH).status_code == 404
    assert client.get("/v1/jobs/0123456789abcdef01234567", headers=AUTH).json()["error"]["code"] == "job_not_found"


def test_delete_cancels_then_deletes_and_results_wait_for_success(gateway, study):
    client, _, store = gateway
    job_id = post_zip(client, study["zip"]).json()["id"]
    for what in ("result", "rtstruct", "report", "summary"):
        response = client.get(f"/v1/jobs/{job_id}/{what}", headers=AUTH)
        assert response.status_code == 409 and response.json()["error"]["code"] == "not_ready"
    cancelled = client.delete(f"/v1/jobs/{job_id}", headers=AUTH)
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    again = post_zip(client, study["zip"])  # a cancelled job is no longer the study's job
    assert again.status_code == 202 and again.json()["id"] != job_id
    assert client.delete(f"/v1/jobs/{job_id}", headers=AUTH).status_code == 204
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH).status_code == 404
    assert not store.job_dir(job_id).exists()


def _succeed(store: JobStore, job_id: str) -> None:
    out = store.output_dir(job_id)
    (out / "RS_reference.dcm").write_bytes(b"DICM-ish")
    (out / "summary.json").write_text('{"structures": {}}')
    (out / "seg").mkdir()
    (out / "seg" / "SEG_phase00.dcm").write_bytes(b"seg")

    def change(manifest):
        manifest.state = JobState.SUCCEEDED
        manifest.finished_at = time.time()
        manifest.stage_seconds = {"segmenting": 2.0, "writing": 1.0}

    store.update(job_id, change)


def test_results_of_a_succeeded_job(gateway, study, tmp_path):
    client, _, store = gateway
    job_id = post_zip(client, study["zip"]).json()["id"]
    _succeed(store, job_id)
    result = client.get(f"/v1/jobs/{job_id}/result", headers=AUTH)
    assert result.status_code == 200 and result.headers["content-type"] == "application/zip"
    (tmp_path / "r.zip").write_bytes(result.content)
    names = sorted(zipfile.ZipFile(tmp_path / "r.zip").namelist())
    assert names == ["RS_reference.dcm", "seg/SEG_phase00.dcm", "summary.json"]
    rtstruct = client.get(f"/v1/jobs/{job_id}/rtstruct", headers=AUTH)
    assert rtstruct.headers["content-type"] == "application/dicom" and rtstruct.content == b"DICM-ish"
    assert client.get(f"/v1/jobs/{job_id}/summary", headers=AUTH).json() == {"structures": {}}
    missing = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "output_not_found"


def test_events_stream_until_finished(gateway, study):
    client, _, store = gateway
    job_id = post_zip(client, study["zip"]).json()["id"]
    _succeed(store, job_id)
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=AUTH) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [block for block in text.split("\n\n") if block.strip()]
    assert len(events) == 1
    lines = dict(line.split(": ", 1) for line in events[0].splitlines())
    assert lines["event"] == "job" and json.loads(lines["data"])["state"] == "succeeded"


def test_readyz_names_the_failing_checks_and_metrics_count(gateway, study):
    client, queue, store = gateway
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"] == {"code": "not_ready", "message": "failing checks: workers"}
    queue.beats.append(WorkerBeat("host:1", True, {"short": "abc123"}, "cpu", None, time.time()))
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["workers"]["workers"][0]["identity"] == {"short": "abc123"}

    job_id = post_zip(client, study["zip"]).json()["id"]
    _succeed(store, job_id)
    text = client.get("/metrics").text
    assert 'itvsam_jobs{state="succeeded"} 1.0' in text
    assert 'itvsam_stage_duration_seconds_sum{stage="segmenting"} 2.0' in text
    assert "itvsam_queue_depth 1.0" in text
    assert 'itvsam_workers{model_loaded="true"} 1.0' in text
    assert 'itvsam_worker_info{busy="false",device="cpu",short="abc123",worker="host:1"} 1.0' in text
    assert 'itvsam_uploads_total{outcome="created"} 1.0' in text
    uploaded = float(next(line for line in text.splitlines() if line.startswith("itvsam_upload_bytes_total ")
                          ).split()[1])
    assert uploaded == study["zip"].stat().st_size


def test_health_can_require_a_key(tmp_path):
    settings = GatewaySettings(store_dir=tmp_path, api_key_hashes=(API_KEY_HASH,), open_health=False)
    with TestClient(create_app(settings, queue=RecordingQueue(), maintenance=False)) as client:
        assert client.get("/healthz").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/healthz", headers=AUTH).status_code == 200


def test_openapi_documents_every_route(gateway):
    client, _, _ = gateway
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/result",
            "/v1/jobs/{job_id}/rtstruct", "/v1/jobs/{job_id}/report", "/v1/jobs/{job_id}/summary",
            "/dicomweb/studies", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "application/zip" in paths["/v1/jobs"]["post"]["requestBody"]["content"]
