"""The gateway's intake refuses at once what the worker would refuse later, and stores nothing it should not keep:
pixel data decoded at intake (damaged RLE is a 422 with nothing queued), empty uploads named as such, Part-10
preambles zeroed in the stored input. In-process (TestClient) on a real job store with a recording queue."""

from __future__ import annotations

import io
import shutil
import struct
import zipfile
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import encapsulate, generate_frames

from dicomrt.errors import StudyError
from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from dicomrt.reader import load_study, scan_study
from jobs.store import JobStore
from service.api.app import create_app
from service.settings import GatewaySettings
from tests.support.service import API_KEY_HASH, AUTH, form_body, multipart, stow_body, zip_folder
from tests.support.tiny_ct import tiny_ct
from tests.unit.service.test_gateway import RecordingQueue

ELF_HEADER = b"\x7fELF\x02\x01\x01" + bytes(9)
ZIP_HEADER = b"PK\x03\x04\x14\x00\x00\x00\x08\x00"


@pytest.fixture(scope="module")
def rle_study(tmp_path_factory) -> Path:
    """A small RLE-compressed 10-phase phantom (440 files of 128 x 128)."""
    phantom = generate_phantom(PhantomConfig(seed=21, size="small"))
    return write_phantom(phantom, tmp_path_factory.mktemp("rle"), vendor="desc-t", compression="rle").dicom_dir


@pytest.fixture
def gateway(tmp_path):
    settings = GatewaySettings(store_dir=tmp_path / "store", api_key_hashes=(API_KEY_HASH,), min_free_bytes=0,
                               min_free_fraction=0, max_upload_bytes=40 * 1024 * 1024)
    queue = RecordingQueue()
    with TestClient(create_app(settings, queue=queue, maintenance=False)) as client:
        yield client, queue, JobStore(settings.store_dir)


def post_zip(client: TestClient, body: bytes):
    return client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/zip"})


def assert_nothing_kept(queue: RecordingQueue, store: JobStore) -> None:
    assert queue.sent == []
    assert store.ids() == []
    assert not list(store.staging.iterdir())


def _damage(path: Path, how: str) -> None:
    """Rewrite the RLE frame of ``path``: its header claiming 15 segments, or the frame sent three times (three
    fragments of one single-frame image)."""
    ds = pydicom.dcmread(path)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    if how == "segments":
        count, *offsets = struct.unpack("<16I", frame[:64])
        assert count == 2, "the phantom's 16-bit RLE has two segments"
        frame[:64] = struct.pack("<16I", 15, offsets[0], offsets[1], *(offsets[1] + 10 * i for i in range(1, 14)))
        ds.PixelData = encapsulate([bytes(frame)])
    else:
        ds.PixelData = encapsulate([bytes(frame)] * 3)
    ds.save_as(path)


@pytest.mark.parametrize(("how", "code", "says"), [
    ("segments", "undecodable_pixel_data", "doesn't match the expected amount (15 vs. 2 segments)"),
    ("fragments", "implausible_pixel_data", "decodes to (3, 128, 128), its header declares (128, 128)"),
])
def test_damaged_rle_is_refused_at_intake_as_the_worker_would_and_nothing_is_queued(gateway, rle_study, tmp_path,
                                                                                    how, code, says):
    client, queue, store = gateway
    study = shutil.copytree(rle_study, tmp_path / "study")
    index = scan_study(study)
    series = index.phases[3]
    damaged = series.instances[7].path
    _damage(damaged, how)
    with pytest.raises(StudyError) as worker_refusal:  # what the worker's reading stage says of it
        load_study(scan_study(study))
    assert worker_refusal.value.code == code

    response = post_zip(client, zip_folder(study, tmp_path / "study.zip").read_bytes())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    upload_name = f"{sorted(study.iterdir()).index(damaged) + 1:06d}.dcm"  # zip_folder packs in sorted order
    assert f"[{series.uid_hash}] ({series.label})" in error["message"]
    assert "slice 7 " in error["message"] and "slice 0" not in error["message"]
    assert f"file {upload_name} of the upload" in error["message"]
    assert says in error["message"]
    assert_nothing_kept(queue, store)


def test_an_intact_rle_study_is_decoded_and_accepted(gateway, rle_study, tmp_path):
    client, queue, store = gateway
    response = post_zip(client, zip_folder(rle_study, tmp_path / "study.zip").read_bytes())
    assert response.status_code == 202, response.text
    assert queue.sent == [response.json()["id"]]
    assert len(list(store.input_dir(response.json()["id"]).iterdir())) == 440


def _empty_archive(with_folder: bool) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        if with_folder:
            zf.writestr("study/", b"")
    return buffer.getvalue()


@pytest.mark.parametrize(("case", "says"), [
    ("zip_0_bytes", "the upload is empty (0 bytes)"),
    ("zip_no_entries", "the zip archive holds no files"),
    ("zip_only_a_folder", "the zip archive holds no files"),
    ("multipart_0_bytes", "the upload is empty (0 bytes)"),
    ("multipart_only_options", "the multipart body holds no file parts"),
    ("multipart_no_parts", "the multipart body holds no file parts"),
    ("stow_no_parts", "the multipart body holds no file parts"),
])
def test_an_empty_upload_is_named_empty(gateway, case, says):
    client, queue, store = gateway
    if case.startswith("zip"):
        body = b"" if case == "zip_0_bytes" else _empty_archive(with_folder=case == "zip_only_a_folder")
        response = post_zip(client, body)
    else:
        if case == "multipart_0_bytes":
            body, content_type = b"", "multipart/form-data; boundary=itvsam-test-boundary-7f3a"
        elif case == "multipart_only_options":
            body, content_type = form_body([], options="{}")
        else:
            body, content_type = multipart([], related=case == "stow_no_parts")
        url = "/dicomweb/studies" if case.startswith("stow") else "/v1/jobs"
        response = client.post(url, content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "empty_upload"
    assert says in response.json()["error"]["message"]
    assert_nothing_kept(queue, store)


def _with_preamble(source: Path, target: Path, preamble: bytes) -> Path:
    data = bytearray(source.read_bytes())
    assert data[128:132] == b"DICM"
    data[: len(preamble)] = preamble
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("transport", ["zip", "multipart", "stow"])
def test_a_preamble_holding_an_elf_or_zip_header_is_stored_zeroed(gateway, tmp_path, transport):
    client, queue, store = gateway
    clean = tiny_ct(tmp_path / "clean", slices=4)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    files = [_with_preamble(p, hostile / p.name, ELF_HEADER if k % 2 else ZIP_HEADER) if k < 3 else
             shutil.copy(p, hostile / p.name) for k, p in enumerate(clean)]

    def post(paths: list[Path]):
        if transport == "zip":
            folder = paths[0].parent
            return post_zip(client, zip_folder(folder, tmp_path / f"{folder.name}.zip").read_bytes())
        body, content_type = (form_body if transport == "multipart" else stow_body)(paths)
        url = "/v1/jobs" if transport == "multipart" else "/dicomweb/studies"
        return client.post(url, content=body, headers={**AUTH, "Content-Type": content_type})

    response = post(files)
    assert response.status_code in (200, 202), response.text
    job_id = queue.sent[0]
    stored = sorted(store.input_dir(job_id).iterdir())
    assert len(stored) == 4
    originals = {p.read_bytes()[128:] for p in clean}
    for path in stored:
        data = path.read_bytes()
        assert data[:128] == bytes(128), f"{path.name} keeps a non-zero preamble"
        assert data[128:] in originals  # only the preamble changed
    assert not list(store.staging.iterdir())

    again = post(clean)  # the same images with clean preambles: the same stored bytes, the same job
    assert again.status_code == 200, again.text
    assert queue.sent == [job_id]
