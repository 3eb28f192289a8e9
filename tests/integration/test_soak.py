"""A bounded soak: one gateway, one listener (``itvsam scp``) and one worker (the tiny SAM 3) as real processes, under
a mixed load of valid and hostile uploads and C-STOREs for ``ITVSAM_SOAK_S`` seconds (default 180).

At the end: every valid job succeeded exactly once (one attempt, one job per C-STOREd study), every hostile request
was refused with its specific code or DIMSE status, nothing was queued for a refusal, the long-lived processes' memory
is flat (resident set at the start and the end are printed), and nothing is left in staging or incoming.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zipfile
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import RLELossless

from tests.conftest import require_tool
from tests.support.dicom import SENDER, dcmtk, storescu
from tests.support.service import (
    AUTH,
    LIGHT_OPTIONS,
    Proc,
    RedisServer,
    free_port,
    itvsam_argv,
    missing_phase_copy,
    mixed_patient_copy,
    phantom_study,
    service_env,
    start_gateway,
    start_worker,
    wait_for,
    zip_bomb,
    zip_folder,
    zip_slip,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SOAK_S = float(os.environ.get("ITVSAM_SOAK_S", "180"))
GROWTH_LIMIT = 1.5  # a long-lived process may grow by half (allocator caches, imports on first use), not without bound
GROWTH_SLACK_BYTES = 96 << 20


def group_rss(proc: Proc) -> int:
    """Resident bytes of every process in ``proc``'s process group (a worker's pool children included)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != proc.popen.pid:  # the process group id
                continue
            status = (entry / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
        total += int(rss) * 1024
    return total


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    from model.tiny import write_tiny_checkpoint

    require_tool("redis-server")
    dcmtk("storescu")
    root = tmp_path_factory.mktemp("soak")
    redis_server = RedisServer(root)
    redis_server.start()
    scp_port = free_port()
    env = service_env(root / "store", redis_server.url, write_tiny_checkpoint(root / "model"),
                      ITVSAM_SCP_HOST="127.0.0.1", ITVSAM_SCP_PORT=str(scp_port),
                      ITVSAM_SCP_PEERS=f"{SENDER}@127.0.0.1", ITVSAM_SCP_SETTLE_S="1", ITVSAM_SCP_IDLE_TIMEOUT_S="4",
                      ITVSAM_SCP_KEEP_S="5", ITVSAM_SCP_OPTIONS=json.dumps(LIGHT_OPTIONS))
    port = free_port()
    procs = {"worker": start_worker(env, root / "worker.log"),
             "gateway": start_gateway(env, port, root / "gateway.log"),
             "listener": Proc("listener", itvsam_argv("scp"), env, root / "listener.log")}
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=120)
    try:
        wait_for("a worker with its model", lambda: client.get("/readyz").status_code == 200, 120)
        yield {"root": root, "client": client, "procs": procs, "scp_port": scp_port, "store": root / "store"}
    finally:
        for proc in procs.values():
            proc.stop()
        redis_server.stop()


def c_store_status(port: int, path: Path) -> int:
    """The listener's answer to one C-STORE of the file's bytes as they are (pynetdicom sends them unchanged)."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="ITVSAM")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()
        _config.STORE_SEND_CHUNKED_DATASET = False


def damaged_rle(source: Path, out: Path) -> Path:
    """``source`` compressed to RLE whose header claims 15 segments for its 2 (the reader cannot decode it)."""
    ds = pydicom.dcmread(source)
    ds.compress(RLELossless, generate_instance_uid=False)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    _, *offsets = struct.unpack("<16I", frame[:64])
    frame[:64] = struct.pack("<16I", 15, offsets[0], offsets[1], *(offsets[1] + 10 * i for i in range(1, 14)))
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(out)
    return out


def edited_copy(study: Path, out: Path, edit) -> Path:
    """A copy of the study folder whose first file is replaced by ``edit(source, target)``."""
    shutil.copytree(study, out)
    first = sorted(out.iterdir())[0]
    edit(first, first)
    return out


def _invalid_uid(source: Path, out: Path) -> None:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "../../x"
    ds.save_as(out)


def _hostile_cases(root: Path, study: Path) -> list[tuple[str, bytes, dict[str, str], int, str]]:
    """(name, body, headers, HTTP status, error code) of each hostile upload."""
    text = root / "text.zip"
    with zipfile.ZipFile(text, "w") as archive:
        archive.writestr("notes.txt", "not a CT")
    zip_type = {"Content-Type": "application/zip"}
    rle = zip_folder(edited_copy(study, root / "rle", damaged_rle), root / "rle.zip")
    uid = zip_folder(edited_copy(study, root / "uid", _invalid_uid), root / "uid.zip")
    return [
        ("damaged_rle", rle.read_bytes(), zip_type, 422, "undecodable_pixel_data"),
        ("invalid_uid", uid.read_bytes(), zip_type, 422, "invalid_uid"),
        ("empty", b"", zip_type, 400, "empty_upload"),
        ("not_dicom", text.read_bytes(), zip_type, 422, "no_ct"),
        ("bomb", zip_bomb(root / "bomb.zip").read_bytes(), zip_type, 413, "zip_bomb"),
        ("slip", zip_slip(root / "slip.zip", study).read_bytes(), zip_type, 400, "unsafe_zip_path"),
        ("mixed_patient", zip_folder(mixed_patient_copy(study, root / "m"), root / "m.zip").read_bytes(), zip_type,
         422, "multiple_patients"),
        ("missing_phase", zip_folder(missing_phase_copy(study, root / "i"), root / "i.zip").read_bytes(), zip_type,
         422, "incomplete_study"),
        ("garbage", os.urandom(4096), zip_type, 400, "invalid_zip"),
        ("wrong_key", b"", {**zip_type, "Authorization": "Bearer wrong"}, 403, "forbidden"),
    ]


def test_a_mixed_load_ends_with_every_valid_job_done_once_and_every_hostile_one_refused(soak, measured) -> None:
    client, procs, root, store = soak["client"], soak["procs"], soak["root"], soak["store"]
    studies = [zip_folder(phantom_study(root / f"s{seed}", seed=seed), root / f"s{seed}.zip") for seed in (51, 52)]
    dicom_studies = [phantom_study(root / f"d{seed}", seed=seed) for seed in (53, 54)]
    hostile_study = phantom_study(root / "h", seed=55)
    truncated = root / "truncated.dcm"  # the header is fine, the pixel data cut short
    truncated.write_bytes(next(hostile_study.iterdir()).read_bytes()[:-5000])
    hostile = _hostile_cases(root, hostile_study)
    valid: list[str] = []
    refusals: dict[str, int] = {}
    rss_start: dict[str, int] = {}
    started = time.monotonic()
    rounds = 0
    while time.monotonic() - started < SOAK_S or rounds < 2:
        response = client.post("/v1/jobs", content=studies[rounds % 2].read_bytes(),
                               headers={"Content-Type": "application/zip"},
                               params={"options": json.dumps(LIGHT_OPTIONS), "force": "true"})
        assert response.status_code == 202, response.text
        valid.append(response.json()["id"])
        for name, body, headers, status, code in hostile:
            answer = client.post("/v1/jobs", content=body, headers=headers)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (name, answer.text)
            refusals[code] = refusals.get(code, 0) + 1
        if rounds < len(dicom_studies):
            sent = storescu(soak["scp_port"], dicom_studies[rounds])
            assert sent.returncode == 0, sent.stderr
        assert c_store_status(soak["scp_port"], truncated) == 0xC000  # refused, not stored
        refusals["dimse_0xC000"] = refusals.get("dimse_0xC000", 0) + 1
        wait_for("the round's job", lambda: client.get(f"/v1/jobs/{valid[-1]}").json()["state"] != "queued"
                 and client.get(f"/v1/jobs/{valid[-1]}").json()["state"] != "running", 240, 0.5)
        rounds += 1
        if rounds == 1:
            rss_start = {name: group_rss(proc) for name, proc in procs.items()}
    listener_jobs = wait_for("the listener's jobs", lambda: (jobs := [j for j in client.get(
        "/v1/jobs", params={"limit": 200}).json()["data"] if j["input"]["source"] == "dicom"]) and len(jobs) >= 2
        and all(j["state"] in ("succeeded", "failed") for j in jobs) and jobs, 240, 0.5)
    rss_end = {name: group_rss(proc) for name, proc in procs.items()}
    for job_id in valid:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert (job["state"], job["attempts"]) == ("succeeded", 1), job
    assert sorted((j["state"], j["attempts"]) for j in listener_jobs) == [("succeeded", 1)] * len(dicom_studies)
    listed = client.get("/v1/jobs", params={"limit": 200}).json()
    assert listed["count"] == len(valid) + len(dicom_studies)  # no refusal became a job
    wait_for("incoming/ to empty after keep_s", lambda: [p.name for p in (store / "incoming").iterdir()
                                                         if p.name != ".partial"] == [], 30, 0.5)
    assert list((store / "incoming" / ".partial").iterdir()) == []
    assert list((store / "staging").iterdir()) == []
    measured(f"soak: {time.monotonic() - started:.0f} s, {rounds} rounds, {len(valid)} HTTP jobs and "
          f"{len(listener_jobs)} listener jobs succeeded once; refusals by code {refusals}; resident MB start → end: "
          + ", ".join(f"{n} {rss_start[n] / 2**20:.0f} → {rss_end[n] / 2**20:.0f}" for n in procs))
    for name in procs:
        assert rss_end[name] <= rss_start[name] * GROWTH_LIMIT + GROWTH_SLACK_BYTES, (name, rss_start, rss_end)
