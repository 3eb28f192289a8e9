"""The DICOM listener in-process (``start_listener`` on a free port) against real peers: dcmtk ``storescu`` sends
phantom 4DCTs of every vendor style, dcmtk ``storescp`` plays the planning system, pynetdicom sends what dcmtk will
not (undecodable data, a malicious UID). Jobs go to a recording queue: the full job path (Redis, worker, model) is
``test_dicom_e2e``. Every refusal is checked for its DIMSE status or association rejection, and for leaving nothing
behind."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
from typer.testing import CliRunner

from dicomrt.phantom import Compression, PhantomConfig, VendorStyle, generate_phantom, write_phantom
from itvsam.cli import app
from itvsam.common import EXIT_REFUSED, EXIT_SERVICE
from jobs.manifest import DeliveryState, InputInfo, JobState, Manifest, new_job_id
from jobs.store import JobStore
from service.api.app import create_app
from service.dicom.delivery import DeliveryLoop, plan_deliveries
from service.dicom.peers import Destination
from service.settings import GatewaySettings, get_listener_settings
from tests.support.dicom import (
    SENDER,
    PlanningSystem,
    RecordingQueue,
    listener_settings,
    running_listener,
    storescu,
)
from tests.support.service import API_KEY_HASH, AUTH, by_series, wait_for

pytestmark = pytest.mark.integration
OUR_NAME = re.compile(r"^\d{6}\.dcm$")
COMPRESSION = {VendorStyle.DESC_CT: Compression.RLE, VendorStyle.NOMINAL: Compression.JPEG2000}


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomConfig(seed=41, size="small"))


@pytest.fixture(scope="module")
def study(phantom, tmp_path_factory) -> Path:
    return write_phantom(phantom, tmp_path_factory.mktemp("study"), vendor="desc-t").dicom_dir


def jobs(settings) -> list[Manifest]:
    return list(JobStore(settings.store_dir).manifests())


def incoming_files(settings) -> list[Path]:
    return sorted(p for p in (settings.store_dir / "incoming").rglob("*") if p.is_file())


def wait_jobs(settings, count: int, timeout_s: float = 30) -> list[Manifest]:
    return wait_for(f"{count} job(s)", lambda: len(found := jobs(settings)) >= count and found, timeout_s, 0.1)


def associate(port: int, aet: str = SENDER, contexts=(Verification,), tls: ssl.SSLContext | None = None):
    ae = AE(ae_title=aet)
    for context in contexts:
        ae.add_requested_context(context)
    ae.acse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="ITVSAM", tls_args=(tls, "127.0.0.1") if tls else None)


@pytest.mark.slow
@pytest.mark.parametrize("style", list(VendorStyle))
def test_storescu_study_of_every_vendor_style_becomes_exactly_one_job(style, phantom, tmp_path):
    compression = COMPRESSION.get(style, Compression.NONE)
    folder = write_phantom(phantom, tmp_path / "p", vendor=style, compression=compression).dicom_dir
    settings = listener_settings(tmp_path)
    queue = RecordingQueue()
    with running_listener(settings, queue) as listener:
        sent = storescu(listener.port, folder, compression=compression.value)
        assert sent.returncode == 0, sent.stderr
        (job,) = wait_jobs(settings, 1)
        assert wait_for("the job queued", lambda: queue.sent, 5, 0.05) == [job.id]  # stored first, then queued
        assert job.state is JobState.QUEUED and job.input.source == "dicom" and job.input.calling_ae == SENDER
        assert job.input.files == 440 and job.study["phases"] == [f"{10 * k}%" for k in range(10)]
        job_inputs = sorted(p.name for p in JobStore(settings.store_dir).input_dir(job.id).iterdir())
        assert job_inputs == [f"{k:06d}.dcm" for k in range(1, 441)]
    assert len(jobs(settings)) == 1 and queue.sent == [job.id]


def test_late_instances_are_recorded_and_rerun_only_when_content_changed(study, tmp_path):
    settings = listener_settings(tmp_path)
    queue = RecordingQueue()
    store = JobStore(settings.store_dir)
    with running_listener(settings, queue) as listener:
        assert storescu(listener.port, study).returncode == 0
        (first,) = wait_jobs(settings, 1)
        wait_for("the job queued", lambda: queue.sent, 5, 0.05)
        assert storescu(listener.port, *sorted(study.iterdir())[:5]).returncode == 0  # the same instances again
        late = wait_for("a late arrival", lambda: store.read(first.id).late_arrivals, 15, 0.1)
        assert [(a.instances, a.changed, a.rerun_job) for a in late] == [(5, False, None)]
        changed = tmp_path / "changed.dcm"
        ds = pydicom.dcmread(sorted(study.iterdir())[0])
        ds.PixelData = (ds.pixel_array + 1).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(changed)
        assert storescu(listener.port, changed).returncode == 0
        rerun = wait_for("a re-run", lambda: len(store.read(first.id).late_arrivals) == 2
                         and store.read(first.id).late_arrivals[1], 15, 0.1)
        assert rerun.changed and rerun.rerun_job is not None
        assert queue.sent == [first.id, rerun.rerun_job]
        assert store.read(rerun.rerun_job).input.files == 440


def test_peer_must_match_calling_ae_title_and_source_address(tmp_path):
    settings = listener_settings(tmp_path, scp_peers=f"{SENDER}@127.0.0.1,ELSEWHERE@10.9.9.0/24")
    with running_listener(settings, RecordingQueue()) as listener:
        good = associate(listener.port)
        assert good.is_established
        assert good.send_c_echo().Status == 0x0000
        good.release()
        for calling in ("UNKNOWN", "ELSEWHERE"):  # ELSEWHERE: a known AE title from an address not allowed
            refused = associate(listener.port, aet=calling)
            assert refused.is_rejected, calling
            assert refused.acceptor.primitive.diagnostic == 0x03  # calling AE title not recognised
        echoscu = subprocess.run([_dcmtk("echoscu"), "-aet", "UNKNOWN", "-aec", "ITVSAM", "127.0.0.1",
                                  str(listener.port)], capture_output=True, text=True, timeout=30, check=False)
        assert echoscu.returncode != 0 and "Calling AE Title Not Recognized" in echoscu.stderr + echoscu.stdout
    assert incoming_files(settings) == []


def _dcmtk(name: str) -> str:
    from tests.support.dicom import dcmtk

    return dcmtk(name)


def _send(port: int, path: Path) -> int:
    """C-STORE the file's bytes as they are (pynetdicom would otherwise decode and re-encode them)."""
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    assoc = associate(port, contexts=(CTImageStorage,))
    assert assoc.is_established
    try:
        return assoc.send_c_store(path).Status
    finally:
        assoc.release()
        _config.STORE_SEND_CHUNKED_DATASET = False


def test_enhanced_ct_which_the_reader_refuses_is_not_taken_at_negotiation(tmp_path):
    from pynetdicom.sop_class import CTImageStorage, EnhancedCTImageStorage

    with running_listener(listener_settings(tmp_path), RecordingQueue()) as listener:
        assoc = associate(listener.port, contexts=(EnhancedCTImageStorage, CTImageStorage))
        assert assoc.is_established
        try:
            accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
            assert accepted == {CTImageStorage}  # Enhanced CT refused here, not stored and refused later
        finally:
            assoc.release()


def test_undecodable_dataset_is_refused_and_nothing_is_kept(study, tmp_path):
    source = sorted(study.iterdir())[0]
    garbage = tmp_path / "garbage.dcm"  # valid file meta, then bytes that are no dataset
    meta_end = 132 + 12 + pydicom.dcmread(source, stop_before_pixels=True).file_meta.FileMetaInformationGroupLength
    garbage.write_bytes(source.read_bytes()[:meta_end] + b"\xff\xfe\x00\xe0" + bytes(range(256)) * 8)
    truncated = tmp_path / "truncated.dcm"  # the header is fine, the pixel data cut short
    truncated.write_bytes(source.read_bytes()[:-5000])
    settings = listener_settings(tmp_path)
    with running_listener(settings, RecordingQueue()) as listener:
        assert _send(listener.port, garbage) == 0xC000
        assert _send(listener.port, truncated) == 0xC000
        assert _send(listener.port, source) == 0x0000
    assert [p.name for p in incoming_files(settings)] == ["000001.dcm"]


def test_a_stored_instance_is_the_sent_dataset_byte_for_byte_under_pynetdicoms_file_meta(study, tmp_path):
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    from dicomrt.instances import InstanceHeader, read_header

    source = sorted(study.iterdir())[0]
    sent = source.read_bytes()
    meta = pydicom.dcmread(source, stop_before_pixels=True).file_meta
    settings = listener_settings(tmp_path)
    with running_listener(settings, RecordingQueue()) as listener:
        assert _send(listener.port, source) == 0x0000
    (stored,) = incoming_files(settings)
    head = b"\0" * 128 + b"DICM" + encode_file_meta(create_file_meta(
        sop_class_uid=meta.MediaStorageSOPClassUID, sop_instance_uid=meta.MediaStorageSOPInstanceUID,
        transfer_syntax=meta.TransferSyntaxUID))
    dataset = sent[132 + 12 + meta.FileMetaInformationGroupLength:]  # after the sender's own file meta
    assert stored.read_bytes() == head + dataset  # what encoded_dataset() wrote before, without its copies
    header = read_header(stored)
    assert isinstance(header, InstanceHeader) and header.sop_instance_uid == meta.MediaStorageSOPInstanceUID


def test_a_dataset_that_is_not_a_ct_image_is_refused_as_not_matching_its_sop_class(study, tmp_path):
    ds = pydicom.dcmread(sorted(study.iterdir())[0])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage, sent in a CT Image Storage context
    mr = tmp_path / "send" / "mr.dcm"
    mr.parent.mkdir()
    ds.save_as(mr)
    settings = listener_settings(tmp_path)
    with running_listener(settings, RecordingQueue()) as listener:
        assert _send(listener.port, mr) == 0xA900
    assert incoming_files(settings) == []


def test_the_listeners_associations_poll_their_connection_at_the_short_interval(tmp_path):
    from service.dicom.scp import DUL_POLL_S

    with running_listener(listener_settings(tmp_path), RecordingQueue()) as listener:
        assoc = associate(listener.port)
        try:
            assert assoc.is_established
            (served,) = listener.server.active_associations
            assert served.dul._run_loop_delay == DUL_POLL_S < assoc.dul._run_loop_delay  # pynetdicom's 1 ms
        finally:
            assoc.release()


def test_instances_the_job_could_not_decode_are_refused_at_c_store(study, tmp_path):
    import struct

    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import RLELossless
    from pynetdicom.sop_class import CTImageStorage

    source = sorted(study.iterdir())[0]
    no_pixels = pydicom.dcmread(source)
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "no_pixels.dcm")
    rle = pydicom.dcmread(source)
    rle.compress(RLELossless, generate_instance_uid=False)
    frame = bytearray(next(generate_frames(rle.PixelData, number_of_frames=1)))
    _, *offsets = struct.unpack("<16I", frame[:64])  # the header claims 15 segments for a 2-segment image
    frame[:64] = struct.pack("<16I", 15, offsets[0], offsets[1], *(offsets[1] + 10 * i for i in range(1, 14)))
    rle.PixelData = encapsulate([bytes(frame)])
    rle.save_as(tmp_path / "rle.dcm")
    settings = listener_settings(tmp_path / "listener")
    with running_listener(settings, RecordingQueue()) as listener:
        assert _send(listener.port, tmp_path / "no_pixels.dcm") == 0xC000
        ae = AE(ae_title=SENDER)
        ae.add_requested_context(CTImageStorage, [RLELossless])
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="ITVSAM")
        try:
            assert assoc.send_c_store(pydicom.dcmread(tmp_path / "rle.dcm")).Status == 0xC000
        finally:
            assoc.release()
    assert incoming_files(settings) == []


def test_store_below_its_disk_watermark_answers_out_of_resources(study, tmp_path):
    settings = listener_settings(tmp_path, min_free_fraction=0.999999)
    with running_listener(settings, RecordingQueue()) as listener:
        assert _send(listener.port, sorted(study.iterdir())[0]) == 0xA700
        assert storescu(listener.port, sorted(study.iterdir())[0]).returncode != 0  # dcmtk reports the failure
    assert incoming_files(settings) == []


def test_incomplete_study_is_refused_after_the_idle_timeout_with_the_readers_message(study, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in [p for series in list(by_series(study).values())[:-1] for p in series]:  # without one phase
        (partial / path.name).write_bytes(path.read_bytes())
    settings = listener_settings(tmp_path, scp_idle_timeout_s=2.0)
    queue = RecordingQueue()
    with running_listener(settings, queue) as listener:
        assert storescu(listener.port, partial).returncode == 0
        (job,) = wait_jobs(settings, 1, timeout_s=20)
    assert queue.sent == []
    gateway = GatewaySettings(store_dir=settings.store_dir, api_key_hashes=(API_KEY_HASH,))
    with TestClient(create_app(gateway, queue=queue, maintenance=False)) as client:
        public = client.get(f"/v1/jobs/{job.id}", headers=AUTH).json()
    assert public["state"] == "failed" and public["input"]["source"] == "dicom"
    assert public["stage"] == "reading"  # where it was refused, not "queued": it never was
    assert public["error"]["code"] == "incomplete_study"
    assert re.match(r"respiratory phases missing: \d+% \(found 0%, 10%, ", public["error"]["message"])


def test_malicious_sop_instance_uid_is_stored_under_our_own_name(study, tmp_path):
    ds = pydicom.dcmread(sorted(study.iterdir())[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "../../x"
    evil = tmp_path / "send" / "evil.dcm"
    evil.parent.mkdir()
    ds.save_as(evil)
    settings = listener_settings(tmp_path)
    before = {p for p in tmp_path.parent.rglob("*")}
    with running_listener(settings, RecordingQueue()) as listener:
        assert _send(listener.port, evil) == 0x0000
    stored = incoming_files(settings)
    assert len(stored) == 1 and OUR_NAME.match(stored[0].name)
    assert stored[0].parent.parent == settings.store_dir / "incoming"
    assert pydicom.dcmread(stored[0]).SOPInstanceUID == "../../x"
    created = {p for p in tmp_path.parent.rglob("*")} - before
    assert all(p == settings.store_dir or settings.store_dir in p.parents for p in created), sorted(created)
    assert not [p for p in created if p.name == "x"]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_listener_answers_tls_peers_only(tmp_path):
    from tests.conftest import require_tool

    require_tool("openssl")
    cert, key = _self_signed(tmp_path)
    settings = listener_settings(tmp_path, scp_tls_cert=cert, scp_tls_key=key)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    with running_listener(settings, RecordingQueue()) as listener:
        secure = associate(listener.port, tls=client)
        assert secure.is_established and secure.send_c_echo().Status == 0x0000
        secure.release()
        assert not associate(listener.port).is_established


def _succeeded_job(store: JobStore, study: Path, destinations: tuple[Destination, ...]) -> str:
    """A succeeded job whose output holds an AIP slice (any CT instance will do for the delivery)."""
    manifest = Manifest(id=new_job_id(), idempotency_key=new_job_id(), state=JobState.SUCCEEDED,
                        input=InputInfo(source="dicom", files=1, bytes=1, content_hash="0", calling_ae=SENDER),
                        deliveries=plan_deliveries(destinations, SENDER))
    staged = store.staging / manifest.id
    staged.mkdir()
    store.create_or_get(staged, manifest)
    aip = store.output_dir(manifest.id) / "derived" / "AIP"
    aip.mkdir(parents=True)
    (aip / "AIP_0000.dcm").write_bytes(sorted(study.iterdir())[0].read_bytes())
    return manifest.id


def test_destination_down_at_first_receives_the_result_once_it_is_up(study, tmp_path):
    tps = PlanningSystem(tmp_path)
    settings = listener_settings(tmp_path, delivery_attempts=8,
                                 destinations=f'[{{"name": "tps", "ae_title": "TPS", "host": "127.0.0.1", '
                                              f'"port": {tps.port}, "outputs": ["aip"]}}]')
    store = JobStore(settings.store_dir)
    job_id = _succeeded_job(store, study, settings.destinations)
    loop = DeliveryLoop(store, settings)
    try:
        first = wait_for("a failed attempt", lambda: (loop.step(), store.read(job_id).deliveries[0])[1].attempts
                         and store.read(job_id).deliveries[0], 20, 0.1)
        assert first.state is DeliveryState.PENDING and "could not be reached" in first.error
        tps.start()
        done = wait_for("the delivery", lambda: (loop.step(), store.read(job_id).deliveries[0])[1].state
                        is DeliveryState.DELIVERED and store.read(job_id).deliveries[0], 30, 0.1)
        assert done.attempts >= 2 and done.files == 1 and done.error is None
        assert len(tps.files()) == 1
    finally:
        tps.stop()
    with TestClient(create_app(settings.model_copy(update={"api_key_hashes": (API_KEY_HASH,)}),
                               queue=RecordingQueue(), maintenance=False)) as client:
        public = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert public["deliveries"][0]["state"] == "delivered" and public["deliveries"][0]["destination"] == "tps"


def test_delivery_fails_after_its_attempts_with_the_last_error(study, tmp_path):
    settings = listener_settings(tmp_path, delivery_attempts=2, delivery_backoff_s=0.1,
                                 destinations='[{"name": "gone", "ae_title": "TPS", "host": "127.0.0.1", '
                                              '"port": 9, "outputs": ["aip"]}]')
    store = JobStore(settings.store_dir)
    job_id = _succeeded_job(store, study, settings.destinations)
    loop = DeliveryLoop(store, settings)
    failed = wait_for("the delivery to fail", lambda: (loop.step(), store.read(job_id).deliveries[0])[1].state
                      is DeliveryState.FAILED and store.read(job_id).deliveries[0], 20, 0.1)
    assert failed.attempts == 2 and "could not be reached" in failed.error


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    def configure(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"ITVSAM_{name.upper()}", value)
        get_listener_settings.cache_clear()

    monkeypatch.setenv("ITVSAM_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("ITVSAM_MIN_FREE_BYTES", "0")
    monkeypatch.setenv("ITVSAM_MIN_FREE_FRACTION", "0")
    yield configure
    get_listener_settings.cache_clear()


def test_itvsam_echo_a_destination(cli_env, tmp_path):
    tps = PlanningSystem(tmp_path).start()
    try:
        cli_env(destinations=f'[{{"name": "tps", "ae_title": "TPS", "host": "127.0.0.1", "port": {tps.port}}}]')
        result = CliRunner().invoke(app, ["echo", "tps"])
        assert result.exit_code == 0, result.output
        assert "C-ECHO to TPS@127.0.0.1" in result.stdout
    finally:
        tps.stop()
    down = CliRunner().invoke(app, ["echo", f"TPS@127.0.0.1:{tps.port}"])
    assert down.exit_code == EXIT_SERVICE and "echo_failed" in down.output
    assert CliRunner().invoke(app, ["echo", "nowhere"]).exit_code == 2


def test_submit_dir_direct_refuses_an_incomplete_study_with_the_readers_message(cli_env, study, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in next(iter(by_series(study).values())):
        (partial / path.name).write_bytes(path.read_bytes())
    cli_env(redis_url="redis://127.0.0.1:1/0")  # never reached: the study is refused before it is queued
    result = CliRunner().invoke(app, ["submit-dir", str(partial), "--direct"])
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "error [incomplete_study]: only one respiratory phase found" in " ".join(result.output.split())
    assert list(JobStore(tmp_path / "store").manifests()) == []
    assert np.all([p.exists() for p in partial.iterdir()])


def test_itvsam_scp_process_answers_echo_and_stops_on_sigterm(tmp_path):
    from tests.support.service import Proc, free_port, itvsam_argv, service_env

    port = free_port()
    env = service_env(tmp_path / "store", "redis://127.0.0.1:1/0", None, ITVSAM_SCP_PORT=str(port),
                      ITVSAM_SCP_HOST="127.0.0.1", ITVSAM_SCP_PEERS=f"{SENDER}@127.0.0.1")
    proc = Proc("scp", itvsam_argv("scp"), env, tmp_path / "scp.log")
    try:
        def echoed() -> bool:
            if not proc.alive():
                raise AssertionError(f"itvsam scp exited:\n{proc.tail()}")
            assoc = associate(port)
            if not assoc.is_established:
                return False
            status = assoc.send_c_echo().Status
            assoc.release()
            return status == 0x0000

        assert wait_for("itvsam scp", echoed, 30)
        proc.popen.terminate()
        assert proc.popen.wait(timeout=20) == 0
        assert f"listening as ITVSAM on 127.0.0.1:{port}" in proc.tail()
    finally:
        proc.stop()
