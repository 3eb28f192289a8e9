"""The listener's pure logic: the peer allow-list, destinations and the delivery backoff, and the collector's
decisions (settle, idle timeout, late instances) with a stub reader and a fake clock."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from dicomrt.errors import IncompleteStudyError
from jobs.manifest import InputInfo, Manifest, new_job_id
from jobs.store import JobStore
from service.dicom.collector import OUT_OF_RESOURCES, CollectorConfig, InstanceRefused, StudyCollector
from service.dicom.delivery import backoff_s, chosen_files, plan_deliveries
from service.dicom.peers import Destination, allowed, find_destination
from service.dicom.scp import part10_head
from service.settings import ListenerSettings

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_peers_both_ae_title_and_address_must_match():
    settings = ListenerSettings(scp_peers="SCANNER@10.0.0.5, PACS@192.168.1.0/24")
    peers = settings.scp_peers
    assert allowed(peers, "SCANNER", "10.0.0.5") and allowed(peers, "PACS  ", "192.168.1.77")
    assert allowed(peers, "SCANNER", "::ffff:10.0.0.5")  # IPv4 mapped into IPv6
    assert not allowed(peers, "SCANNER", "10.0.0.6") and not allowed(peers, "PACS", "10.0.0.5")
    assert not allowed(peers, "OTHER", "10.0.0.5") and not allowed((), "SCANNER", "10.0.0.5")
    json_form = ListenerSettings(scp_peers='[{"ae_title": "SCANNER", "host": "10.0.0.5"}]').scp_peers
    assert json_form == peers[:1]


def test_peer_settings_are_checked():
    with pytest.raises(ValidationError, match="AE_TITLE@HOST"):
        ListenerSettings(scp_peers="SCANNER")
    with pytest.raises(ValidationError, match="IP address or a CIDR network, got 'scanner.example'"):
        ListenerSettings(scp_peers="SCANNER@scanner.example")
    with pytest.raises(ValidationError, match="1-16 printable ASCII"):
        ListenerSettings(scp_ae_title="A_TITLE_FAR_TOO_LONG")
    with pytest.raises(ValidationError, match="both scp_tls_cert and scp_tls_key"):
        ListenerSettings(scp_tls_cert="cert.pem")


def test_destinations_serve_their_calling_ae_titles_or_every_dicom_job():
    settings = ListenerSettings(destinations='[{"name": "all", "ae_title": "TPS", "host": "10.0.0.9", "port": 104}, '
                                     '{"name": "ct1", "ae_title": "TPS2", "host": "10.0.0.9", "port": 105, '
                                     '"calling_aets": ["CT1"], "outputs": ["reference", "phases", "seg"]}]')
    assert [d.destination for d in plan_deliveries(settings.destinations, "CT1")] == ["all", "ct1"]
    assert [d.destination for d in plan_deliveries(settings.destinations, "CT2")] == ["all"]
    assert plan_deliveries(settings.destinations, None) == []  # HTTP uploads are downloaded, not sent
    assert plan_deliveries(settings.destinations, "CT1")[1].outputs == ["reference", "phases", "seg"]
    assert find_destination(settings.destinations, "ct1").port == 105
    adhoc = find_destination(settings.destinations, "PLAN@tps.example:11112")
    assert (adhoc.ae_title, adhoc.host, adhoc.port) == ("PLAN", "tps.example", 11112)
    with pytest.raises(ValueError, match=r"configured name \(all, ct1\) or AE@HOST:PORT, got 'nowhere'"):
        find_destination(settings.destinations, "nowhere")
    with pytest.raises(ValidationError, match="destination names must be unique"):
        ListenerSettings(destinations='[{"name": "a", "ae_title": "T", "host": "h", "port": 1}, '
                               '{"name": "a", "ae_title": "T", "host": "h", "port": 2}]')


def test_backoff_doubles_up_to_its_cap():
    settings = ListenerSettings(delivery_backoff_s=5, delivery_max_backoff_s=30)
    assert [backoff_s(n, settings) for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_chosen_files_by_kind(tmp_path):
    for name in ("RS_reference.dcm", "RS_phase00.dcm", "RS_phase01.dcm", "RS_combined.dcm", "seg/SEG_phase00.dcm",
                 "derived/AIP/AIP_0000.dcm", "derived/MIP/MIP_0000.dcm", "report.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in chosen_files(tmp_path, ["aip", "reference", "phases"])]
    assert names == ["RS_reference.dcm", "RS_phase00.dcm", "RS_phase01.dcm", "derived/AIP/AIP_0000.dcm"]
    assert Destination(name="d", ae_title="T", host="h", port=1).outputs[0].value == "reference"


def ct_bytes(study: str, instance: str, value: int = 0) -> bytes:
    """A 4x4 CT image as a Part 10 file."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CT, instance
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CT, instance, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, study + ".1", study + ".2"
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1]
    ds.PixelData = np.full((4, 4), value, "<i2").tobytes()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class Harness:
    """A collector with a stub reader (complete at ``complete`` files), recording submissions, and a fake clock."""

    def __init__(self, root: Path, complete: int = 3, **config: object) -> None:
        self.now = 0.0
        self.complete = complete
        self.broken = False  # the reader refuses the study whatever it holds (e.g. an instance that breaks it)
        self.submitted: list[tuple[int, str | None]] = []
        self.refused: list[str] = []
        self.late: list[tuple[str, object]] = []
        self.store = JobStore(root)
        self.collector = StudyCollector(
            self.store, CollectorConfig(**{"settle_s": 1.0, "idle_timeout_s": 10.0, **config}), self.submit,
            self.refuse, lambda job, arrival: self.late.append((job, arrival)), self.scan, clock=lambda: self.now)

    def scan(self, folder: Path) -> object:
        files = len(list(folder.iterdir()))
        if files < self.complete:
            raise IncompleteStudyError(f"respiratory phases missing ({files} files)")
        if self.broken:
            raise IncompleteStudyError(f"two slices at one position ({files} files)")
        return object()

    def _manifest(self, received) -> Manifest:
        return Manifest(id=new_job_id(), idempotency_key="k", input=InputInfo(
            source="dicom", files=received.files, bytes=received.bytes, content_hash=received.content_hash))

    def submit(self, received, calling_ae, _index) -> Manifest:
        self.submitted.append((received.files, calling_ae))
        return self._manifest(received)

    def refuse(self, received, _calling_ae, error) -> Manifest:
        self.refused.append(str(error))
        return self._manifest(received)

    def send(self, *instances: str, value: int = 0) -> None:
        for instance in instances:
            self.collector.store_instance((ct_bytes("1.2.3", instance, value),), "CT1")

    def at(self, seconds: float) -> None:
        self.now = seconds
        self.collector.tick()


def test_a_complete_study_is_submitted_once_after_the_settle_time(tmp_path):
    h = Harness(tmp_path)
    h.send("1.2.3.1", "1.2.3.2")
    h.at(5)  # quiet, but the reader refuses it: wait
    assert h.submitted == [] and h.collector.pending() == 1
    h.send("1.2.3.3")
    h.at(5.5)  # complete, not yet settled
    assert h.submitted == []
    h.at(6.1)
    h.at(60)
    assert h.submitted == [(3, "CT1")] and h.refused == [] and h.collector.pending() == 0
    folder = next(p for p in (tmp_path / "incoming").iterdir() if p.name != ".partial")
    assert sorted(p.name for p in folder.iterdir()) == ["000001.dcm", "000002.dcm", "000003.dcm"]
    assert list((tmp_path / "staging").iterdir()) == []  # snapshots are cleaned up


def test_an_incomplete_study_is_refused_at_the_idle_timeout_with_the_readers_message(tmp_path):
    h = Harness(tmp_path)
    h.send("1.2.3.1")
    h.at(9.9)
    assert h.refused == []
    h.at(10.0)
    h.at(30)
    assert h.refused == ["respiratory phases missing (1 files)"] and h.submitted == []


def test_late_instances_are_recorded_and_only_changed_content_reruns(tmp_path):
    h = Harness(tmp_path)
    h.send("1.2.3.1", "1.2.3.2", "1.2.3.3")
    h.at(2)
    h.send("1.2.3.2")  # the same instance again
    h.at(4)
    assert len(h.submitted) == 1 and [(a.instances, a.changed, a.rerun_job) for _, a in h.late] == [(1, False, None)]
    h.send("1.2.3.2", value=7)  # replaced with other pixels
    h.at(6)
    assert len(h.submitted) == 2 and h.late[1][1].changed and h.late[1][1].rerun_job is not None
    assert h.submitted[1] == (3, "CT1")


def test_without_rerun_a_changed_study_is_only_recorded(tmp_path):
    h = Harness(tmp_path, rerun_on_change=False)
    h.send("1.2.3.1", "1.2.3.2", "1.2.3.3")
    h.at(2)
    h.send("1.2.3.4")
    h.at(4)
    assert len(h.submitted) == 1 and h.late[0][1].changed and h.late[0][1].rerun_job is None


def test_study_limits_and_non_ct_are_refused_with_their_status(tmp_path):
    h = Harness(tmp_path, max_files=2)
    h.send("1.2.3.1", "1.2.3.2")
    with pytest.raises(InstanceRefused, match="at most 2 files") as refused:
        h.send("1.2.3.3")
    assert refused.value.status == OUT_OF_RESOURCES
    with pytest.raises(InstanceRefused, match="cannot be decoded") as garbage:
        h.collector.store_instance((b"not dicom at all" * 20,), "CT1")
    assert garbage.value.status == 0xC000
    assert list((tmp_path / "incoming" / ".partial").iterdir()) == []


def test_an_instance_given_in_pieces_is_stored_and_hashed_as_one_file(tmp_path):
    h = Harness(tmp_path)
    data = ct_bytes("1.2.3", "1.2.3.1")
    h.collector.store_instance((data[:132], memoryview(data)[132:]), "CT1")
    h.send("1.2.3.2", "1.2.3.3")
    h.at(2)
    (stored, *_) = sorted(next(p for p in (tmp_path / "incoming").iterdir() if p.name != ".partial").iterdir())
    assert stored.read_bytes() == data
    h.send("1.2.3.1")  # the same bytes in one piece: the same content
    h.at(4)
    assert [(a.instances, a.changed) for _, a in h.late] == [(1, False)] and len(h.submitted) == 1


def test_part10_head_is_the_file_meta_pynetdicom_writes():
    for instance in ("1.2.3", "1.2.34", "../../x", "1.2.826.0.1.3680043.8.498." + "1" * 38):  # odd, even, hostile
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless):
            meta = create_file_meta(sop_class_uid=CT, sop_instance_uid=instance, transfer_syntax=syntax)
            assert part10_head(CT, instance, syntax) == b"\0" * 128 + b"DICM" + encode_file_meta(meta)


def test_studies_are_forgotten_after_keep_s(tmp_path):
    h = Harness(tmp_path, keep_s=100.0)
    h.send("1.2.3.1", "1.2.3.2", "1.2.3.3")
    h.at(2)
    h.at(200)
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == [".partial"]


def test_a_refused_study_completed_later_becomes_a_job(tmp_path):
    h = Harness(tmp_path)
    h.send("1.2.3.1")
    h.at(11)  # idle: refused
    assert h.refused == ["respiratory phases missing (1 files)"]
    h.send("1.2.3.2", "1.2.3.3")  # the rest of the study arrives under the same StudyInstanceUID
    h.at(13)
    assert h.submitted == [(3, "CT1")]
    arrival = h.late[0][1]
    assert (arrival.instances, arrival.changed, arrival.rerun_job is not None) == (2, True, True)


def test_late_instances_the_reader_still_refuses_are_recorded_at_the_idle_timeout(tmp_path):
    h = Harness(tmp_path, complete=3, keep_s=100.0)
    h.send("1.2.3.1")
    h.at(11)
    assert len(h.refused) == 1
    h.send("1.2.3.2")  # still incomplete: refused again, never silently dropped
    h.at(13)
    assert h.late == []  # not idle yet: more may come
    h.at(30)
    assert [(a.instances, a.changed, a.rerun_job) for _, a in h.late] == [(1, True, None)]
    assert h.submitted == [] and len(h.refused) == 1
    h.at(200)  # every instance accounted for: the study leaves incoming/ after keep_s
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == [".partial"]


def test_a_late_instance_that_breaks_a_finished_study_is_recorded(tmp_path):
    h = Harness(tmp_path, keep_s=100.0)
    h.send("1.2.3.1", "1.2.3.2", "1.2.3.3")
    h.at(2)
    assert len(h.submitted) == 1
    h.broken = True
    h.send("1.2.3.4")
    h.at(4)
    h.at(20)
    assert [(a.instances, a.changed, a.rerun_job) for _, a in h.late] == [(1, True, None)]
    assert len(h.submitted) == 1
    h.at(200)
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == [".partial"]
