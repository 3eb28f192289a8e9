"""Hostile requests against a real ``itvsam serve`` (uvicorn, on a free port, with a private redis-server): what
uvicorn itself refuses (a 1 MB query string, a 1 MB header, bytes that are not HTTP) is answered in our JSON error
body with a specific code, and damaged pixel data is refused at intake with nothing in Redis's queue. The gateway
serves normally afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import threading

import httpx
import pydicom
import pytest
import redis
from pydicom.encaps import encapsulate, generate_frames

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from jobs.store import JobStore
from service.api.server import MAX_TARGET_BYTES
from tests.conftest import require_tool
from tests.support.service import AUTH, RedisServer, free_port, service_env, start_gateway, stopping, zip_folder

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    require_tool("redis-server")
    root = tmp_path_factory.mktemp("hostile")
    redis_server = RedisServer(root)
    redis_server.start()
    env = service_env(root / "store", redis_server.url, None)
    port = free_port()
    try:
        with stopping(start_gateway(env, port, root / "gateway.log")):
            yield {"port": port, "url": f"http://127.0.0.1:{port}", "root": root, "redis": redis_server}
    finally:
        redis_server.stop()


def raw_exchange(port: int, request: bytes, timeout_s: float = 10) -> bytes:
    """Send ``request`` (in a thread: the server may answer and close before it has all of it) and read the answer
    until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):  # refused early: the server closed while we were still sending
                sock.sendall(request)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:  # after the answer, the unread rest of a huge request resets the connection
            pass
        sender.join(timeout_s)
    return answer


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /v1/jobs?options=" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /v1/jobs/" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n", 400, "invalid_http_request"),
], ids=["1MB-query", "200kB-path", "1MB-header", "tls-hello"])
def test_what_uvicorn_refuses_gets_our_json_error_body(gateway, request_bytes, status, code):
    answer = raw_exchange(gateway["port"], request_bytes)
    got_status, headers, body = parse(answer)
    assert got_status == status, answer[:300]
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = httpx.Response(status, content=body).json()["error"]
    assert error["code"] == code and error["message"], error
    # and the gateway serves the next request as usual
    assert httpx.get(f"{gateway['url']}/healthz").status_code == 200


def test_a_long_query_within_the_limit_still_reaches_the_app(gateway):
    query = "x=" + "a" * (MAX_TARGET_BYTES - len("/v1/jobs?x=") - 100)
    response = httpx.get(f"{gateway['url']}/v1/jobs?{query}", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 0


def test_damaged_rle_is_a_422_with_nothing_in_the_queue(gateway, tmp_path):
    study = write_phantom(generate_phantom(PhantomConfig(seed=5, size="small")), tmp_path / "p", vendor="nominal",
                          compression="rle").dicom_dir
    damaged = sorted(study.iterdir())[100]
    ds = pydicom.dcmread(damaged)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    count, first, second = struct.unpack("<3I", frame[:12])
    assert count == 2  # 16-bit RLE: two segments; the header now claims 15
    frame[:64] = struct.pack("<16I", 15, first, second, *(second + 10 * i for i in range(1, 14)))
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(damaged)
    archive = zip_folder(study, tmp_path / "study.zip")
    response = httpx.post(f"{gateway['url']}/v1/jobs", content=archive.read_bytes(), timeout=60,
                          headers={**AUTH, "Content-Type": "application/zip"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "undecodable_pixel_data"
    assert f"file {sorted(study.iterdir()).index(damaged) + 1:06d}.dcm of the upload" in error["message"]
    assert redis.Redis.from_url(gateway["redis"].url).llen("gpu") == 0
    store = JobStore(gateway["root"] / "store")
    assert store.ids() == [] and not list(store.staging.iterdir())
    shutil.rmtree(study)
