"""Property tests of the upload intake (hypothesis, derandomized: the same examples every run): whatever zip or
multipart body arrives, the gateway answers with an accepted job (200/202) or a specific 4xx refusal in our JSON
error body, never a 500 or an escaping exception; a refusal leaves nothing in staging and queues nothing, and no job
already accepted is lost.

Bodies are built from parts that go wrong in the wild: member names that climb out (``..``), are absolute, use
backslashes or drives, repeat, or are folders; members that are empty, random bytes, DICOM-looking junk, nested zips,
or the real images of a tiny CT (so that some uploads are studies the gateway accepts); archives truncated, with
flipped bytes, or declaring huge sizes; multipart bodies with or without names and filenames, options fields,
truncated, without their closing boundary or with a Content-Type naming another boundary.
"""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dicomrt import errors as study_errors
from jobs.store import JobStore
from service.api.app import create_app
from service.settings import GatewaySettings
from tests.support.service import API_KEY_HASH, AUTH
from tests.support.tiny_ct import tiny_ct
from tests.unit.service.test_gateway import RecordingQueue

# zipfile warns of the duplicate names we write on purpose, pydicom of the broken files we send
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
EXAMPLES_ZIP = 500
EXAMPLES_MULTIPART = 400
PROPERTY_SETTINGS = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The refusals each status may carry: anything else (a 500, an unnamed code) fails the property.
STUDY_CODES = {cls.code for cls in vars(study_errors).values()
               if isinstance(cls, type) and issubclass(cls, study_errors.StudyError)}
REFUSALS = {
    400: {"invalid_zip", "unsafe_zip_path", "empty_upload", "invalid_multipart"},
    413: {"upload_too_large", "too_many_files", "zip_bomb", "study_too_large", "field_too_large",
          "options_too_large"},
    415: {"unsupported_media_type"},
    422: STUDY_CODES | {"invalid_options"},
}
MAX_FILES = 12
MAX_UPLOAD_BYTES = 256 * 1024
MAX_STUDY_BYTES = 512 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("properties")
    settings_ = GatewaySettings(store_dir=root / "store", api_key_hashes=(API_KEY_HASH,), min_free_bytes=0,
                                min_free_fraction=0, max_upload_bytes=MAX_UPLOAD_BYTES,
                                max_study_bytes=MAX_STUDY_BYTES, max_files=MAX_FILES, max_options_bytes=1024)
    queue = RecordingQueue()
    images = [p.read_bytes() for p in tiny_ct(root / "ct", slices=3)]
    with TestClient(create_app(settings_, queue=queue, maintenance=False), raise_server_exceptions=True) as client:
        yield client, queue, JobStore(settings_.store_dir), images


# -- parts ------------------------------------------------------------------------------------------------------------

SAFE_NAMES = st.sampled_from(["a.dcm", "b.dcm", "CT/1.dcm", "CT/2", "IMG0001", "dir/sub/x.dcm", "é.dcm", " .dcm"])
HOSTILE_NAMES = st.sampled_from(["../evil.dcm", "../../x", "a/../../b.dcm", "/etc/passwd", "/abs.dcm", "\\win.dcm",
                                 "a\\..\\b", "C:/x.dcm", "c:x", "..", "./a.dcm", "a//b", "folder/", "x" * 300])


def rarely(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws (hypothesis favours the ends of a range: the middle value is picked)."""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


@st.composite
def names(draw) -> str:
    """Mostly plain member names; one in ten hostile, one in ten arbitrary text."""
    if rarely(draw, 10):
        return draw(HOSTILE_NAMES)
    if rarely(draw, 9):
        return draw(st.text(min_size=0, max_size=30))
    return draw(SAFE_NAMES)


NAMES = names()


def nested_zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members:
            zf.writestr(name or "x", data)
    return buffer.getvalue()


@st.composite
def contents(draw, images: list[bytes]) -> bytes:
    kind = draw(st.sampled_from(["empty", "random", "dicm", "image", "truncated_image", "nested_zip"]))
    if kind == "empty":
        return b""
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "dicm":  # a Part-10 prefix (with a random preamble) and junk after it
        return draw(st.binary(min_size=128, max_size=128)) + b"DICM" + draw(st.binary(max_size=512))
    image = draw(st.sampled_from(images))
    if kind == "image":
        return image
    if kind == "truncated_image":
        return image[: draw(st.integers(0, len(image) - 1))]
    return nested_zip([("inner.dcm", image), ("../inner", b"x")])


@st.composite
def zip_bodies(draw, images: list[bytes]) -> bytes:
    members: list[tuple[str, bytes]] = []
    if draw(st.booleans()):  # the whole tiny study, under any names (most such uploads are accepted)
        members += [(draw(SAFE_NAMES) + str(k), image) for k, image in enumerate(images)]
    members += draw(st.lists(st.tuples(NAMES, contents(images)), max_size=5))
    members = draw(st.permutations(members))
    if draw(st.booleans()) and members:  # a duplicate member name
        members.append((members[0][0], draw(contents(images))))
    buffer = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name or "unnamed")
            if rarely(draw, 20):  # a symbolic link entry
                info.external_attr = 0o120777 << 16
            zf.writestr(info, data)
    body = bytearray(buffer.getvalue())
    for _ in range(2):  # most archives intact, some damaged once or twice
        if rarely(draw, 3):
            body = draw(damaged(body))
    return bytes(body)


@st.composite
def damaged(draw, body: bytearray) -> bytearray:
    """One damage: truncated, bytes flipped, or a member declaring a huge size (local and central headers)."""
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "huge_size", "huge_size", "empty"]))
    if kind == "empty" or not body:
        return bytearray()
    if kind == "truncate":
        return body[: draw(st.integers(0, len(body) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(body) - 1))
        body[at] ^= draw(st.integers(1, 255))
        return body
    size = draw(st.sampled_from([2**31 - 1, 2**32 - 1, 10 * 1024 * 1024, MAX_STUDY_BYTES + 1]))
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # central, then local header
        at = body.find(signature)
        if at >= 0 and at + offset + 4 <= len(body):
            body[at + offset: at + offset + 4] = struct.pack("<I", size)
    return body


BOUNDARY = "hyp-boundary-1f2e"


@st.composite
def multipart_bodies(draw, images: list[bytes]) -> tuple[bytes, str, str]:
    """(body, Content-Type, URL): multipart/form-data to /v1/jobs or multipart/related (STOW-RS)."""
    related = draw(st.booleans())
    parts: list[tuple[dict[str, str], bytes]] = []
    if draw(st.booleans()):
        parts += [({"Content-Disposition": f'form-data; name="files"; filename="{k}.dcm"',
                    "Content-Type": "application/dicom"}, image) for k, image in enumerate(images)]
    for _ in range(draw(st.integers(0, 5))):
        disposition = draw(st.sampled_from(["files-with-filename"] * 8 + ["field", "no-name", "none", "odd"]))
        filename = draw(NAMES).replace('"', "").replace("\r", "").replace("\n", "")
        headers = {
            "files-with-filename": {"Content-Disposition": f'form-data; name="files"; filename="{filename}"'},
            "field": {"Content-Disposition": 'form-data; name="options"'},
            "no-name": {"Content-Disposition": "form-data"},
            "none": {},
            "odd": {"Content-Disposition": draw(st.text(max_size=40)).replace("\r", "").replace("\n", "")},
        }[disposition]
        if related or draw(st.booleans()):
            headers["Content-Type"] = "application/dicom"
        if disposition == "field":
            content = draw(st.sampled_from([b"{}", b'{"mode": "reference"}', b"[1]", b"not json", b"\xff\xfe",
                                            b'{"colour": 1}', b"{" * 2000]))
        else:
            content = draw(contents(images))
        parts.append((headers, content))
    parts = draw(st.permutations(parts))
    body = io.BytesIO()
    for headers, content in parts:
        body.write(f"--{BOUNDARY}\r\n".encode())
        for name, value in headers.items():
            body.write(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        body.write(b"\r\n" + content + b"\r\n")
    if not rarely(draw, 8):  # sometimes no closing boundary
        body.write(f"--{BOUNDARY}--\r\n".encode())
    raw = body.getvalue()
    if rarely(draw, 8):  # sometimes truncated
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    boundary = draw(st.sampled_from([BOUNDARY] * 8 + ["other-boundary", ""]))
    kind = 'multipart/related; type="application/dicom"' if related else "multipart/form-data"
    content_type = f"{kind}; boundary={boundary}" if boundary else kind
    return raw, content_type, "/dicomweb/studies" if related else "/v1/jobs"


# -- the property -----------------------------------------------------------------------------------------------------


def check_answer(response, store: JobStore, jobs_before: set[str], stow: bool = False) -> None:
    """Accepted, or a specific 4xx in our error body; either way nothing in staging and no job lost."""
    assert response.status_code != 500, response.text
    json_error = response.status_code >= 400 and response.headers.get("content-type") == "application/json"
    code = response.json()["error"]["code"] if json_error else ""
    event(f"{response.status_code} {code}".strip())  # the outcomes, in --hypothesis-show-statistics
    assert set(store.ids()) >= jobs_before, "a job already accepted was lost"
    assert not list(store.staging.iterdir()), f"staging keeps files after a {response.status_code}"
    if response.status_code in (200, 202):
        return
    if stow and response.status_code == 409:  # STOW-RS: a refused study is the standard store response
        assert "[" in response.headers["warning"], response.headers
        return
    assert response.status_code in REFUSALS, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["message"], error
    assert error["code"] in REFUSALS[response.status_code], error


@settings(PROPERTY_SETTINGS, max_examples=EXAMPLES_ZIP)
@given(data=st.data())
def test_any_zip_body_is_accepted_or_refused_with_our_error(gateway, data):
    client, queue, store, images = gateway
    body = data.draw(zip_bodies(images), label="zip body")
    before = set(store.ids())
    sent = len(queue.sent)
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/zip"})
    check_answer(response, store, before)
    if response.status_code >= 400:
        assert len(queue.sent) == sent and set(store.ids()) == before


@settings(PROPERTY_SETTINGS, max_examples=EXAMPLES_MULTIPART)
@given(data=st.data())
def test_any_multipart_body_is_accepted_or_refused_with_our_error(gateway, data):
    client, queue, store, images = gateway
    body, content_type, url = data.draw(multipart_bodies(images), label="multipart body")
    before = set(store.ids())
    sent = len(queue.sent)
    response = client.post(url, content=body, headers={**AUTH, "Content-Type": content_type})
    check_answer(response, store, before, stow=url == "/dicomweb/studies")
    if response.status_code >= 400:
        assert len(queue.sent) == sent and set(store.ids()) == before
