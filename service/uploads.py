"""Receiving a study over HTTP: streamed to disk under limits, never held in memory, files named by us, a Part-10
preamble that is not zeros (it may hold an executable or archive header) zeroed in every stored file.

Three ways in, one result (``ReceivedStudy``): a zip body, a ``multipart/form-data`` body (DICOM files plus an optional
``options`` field), or a ``multipart/related; type="application/dicom"`` body (STOW-RS). Every refusal is an
``UploadError`` with the HTTP status, a stable code and a message that says what was expected and what was received.
"""

from __future__ import annotations

import hashlib
import re
import stat
import struct
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from dicomrt.instances import zero_preamble
from service.settings import IntakeSettings

CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
# What zipfile raises for a damaged archive: its own errors and those of parsing the bytes it trusts (struct fields,
# names, lengths), which hostile archives reach.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
               struct.error, OverflowError)


class UploadError(Exception):
    """An upload refused before anything is queued: ``status`` (4xx), ``code``, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int
    max_study_bytes: int
    max_files: int
    max_zip_ratio: float
    max_options_bytes: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: IntakeSettings) -> UploadLimits:
        return cls(settings.max_upload_bytes, settings.max_study_bytes, settings.max_files, settings.max_zip_ratio,
                   settings.max_options_bytes, settings.upload_timeout_s)


@dataclass
class ReceivedStudy:
    """The files of one upload in ``folder`` (000001.dcm, ...), with their count, size and content hash."""

    folder: Path
    digests: list[str] = field(default_factory=list)  # SHA-256 of each file, in file order
    bytes: int = 0
    fields: dict[str, str] = field(default_factory=dict)  # form fields (multipart/form-data only)
    body_bytes: int = 0  # bytes of the request body as received

    @property
    def files(self) -> int:
        return len(self.digests)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the sorted file digests: the same files give the same hash however they were packed or named."""
        return hashlib.sha256("\n".join(sorted(self.digests)).encode()).hexdigest()

    def next_path(self) -> Path:
        return self.folder / f"{len(self.digests) + 1:06d}.dcm"

    def keep(self, path: Path, digest: str, size: int) -> None:
        """Count the file just written at ``path`` (``next_path``) with the SHA-256 ``digest`` of its ``size`` bytes.
        A Part-10 preamble that is not zeros is zeroed first (``dicomrt.instances.zero_preamble``): the digest is
        then that of the bytes stored, so the same images give the same study whatever their preambles held."""
        if zero_preamble(path):
            digest = _file_digest(path)
        self.bytes += size
        self.digests.append(digest)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_declared_length(content_length: str | None, limits: UploadLimits) -> None:
    """Refuse at once a body whose declared length is over the limit (the stream is counted as well)."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limits.max_upload_bytes:
        raise _too_large(int(content_length), limits)


def _too_large(size: int, limits: UploadLimits) -> UploadError:
    return UploadError(413, "upload_too_large",
                       f"the upload must be at most {limits.max_upload_bytes} bytes, got {size} bytes or more")


async def _chunks(stream: AsyncIterator[bytes], limits: UploadLimits, counter: ReceivedStudy) -> AsyncIterator[bytes]:
    """The body's chunks, counted against the size limit and the deadline."""
    deadline = time.monotonic() + limits.timeout_s
    async for chunk in stream:
        counter.body_bytes += len(chunk)
        if counter.body_bytes > limits.max_upload_bytes:
            raise _too_large(counter.body_bytes, limits)
        if time.monotonic() > deadline:
            raise UploadError(408, "upload_timeout", f"the upload did not arrive within {limits.timeout_s:g} s")
        if chunk:
            yield chunk


async def receive_zip(stream: AsyncIterator[bytes], folder: Path, limits: UploadLimits) -> ReceivedStudy:
    """Write the zip body to disk, then unpack its files under the zip limits (see ``unpack_zip``)."""
    received = ReceivedStudy(folder / "input")
    received.folder.mkdir()
    archive = folder / "upload.zip"
    with open(archive, "wb") as out:
        async for chunk in _chunks(stream, limits, received):
            out.write(chunk)
    if received.body_bytes == 0:
        raise _empty("the upload is empty (0 bytes): send a zip of the study's DICOM files")
    unpack_zip(archive, received, limits)
    archive.unlink()
    if received.files == 0:
        raise _empty("the zip archive holds no files (only folders, or nothing): send a zip of the study's DICOM files")
    return received


def _empty(message: str) -> UploadError:
    return UploadError(400, "empty_upload", message)


def _unsafe_name(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    is_link = stat.S_ISLNK(info.external_attr >> 16)
    return name.startswith(("/", "\\")) or "\\" in name or ".." in parts or bool(_DRIVE.match(name)) or is_link


def unpack_zip(archive: Path, received: ReceivedStudy, limits: UploadLimits) -> None:
    """Unpack ``archive`` into ``received.folder`` as 000001.dcm, ... (entry names are never used as paths).

    Refused: not a zip or a damaged one, an entry without a name, encrypted entries (400 ``invalid_zip``; an empty
    body or archive is 400 ``empty_upload``, see ``receive_zip``), an entry that is absolute, climbs out with ``..``,
    uses backslashes or a drive, or is a symbolic link (400 ``unsafe_zip_path``), more entries than ``max_files``
    (413 ``too_many_files``), an entry that expands more than ``max_zip_ratio`` times or files that
    add up to more than ``max_study_bytes`` (413 ``zip_bomb`` / ``study_too_large``), counted on the bytes actually
    inflated, not only on the sizes the archive declares.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except _ZIP_ERRORS as exc:
        raise UploadError(400, "invalid_zip", f"the upload is not a readable zip archive: {exc}") from None
    with zf:
        for number, info in enumerate(zf.infolist(), 1):
            if not info.filename:
                raise UploadError(400, "invalid_zip", f"zip entry {number} has no name")
        entries = [info for info in zf.infolist() if not info.is_dir()]
        for info in zf.infolist():
            if _unsafe_name(info):
                raise UploadError(400, "unsafe_zip_path", f"zip entry {info.filename!r} points outside the archive "
                                                          "(absolute, '..', backslash, drive or symbolic link)")
        if len(entries) > limits.max_files:
            raise UploadError(413, "too_many_files",
                              f"an upload may hold at most {limits.max_files} files, the zip has {len(entries)}")
        declared = sum(info.file_size for info in entries)
        if declared > limits.max_study_bytes:
            raise UploadError(413, "study_too_large", f"the unpacked study must be at most {limits.max_study_bytes} "
                                                      f"bytes, the zip declares {declared}")
        for info in entries:
            if info.flag_bits & 0x1:
                raise UploadError(400, "invalid_zip", f"zip entry {info.filename!r} is encrypted")
            _check_ratio(info.filename, info.file_size, info.compress_size, limits)
            _inflate(zf, info, received, limits)


def _check_ratio(name: str, size: int, compressed: int, limits: UploadLimits) -> None:
    if size > CHUNK and size > limits.max_zip_ratio * max(compressed, 1):
        raise UploadError(413, "zip_bomb", f"zip entry {name!r} expands {size / max(compressed, 1):.0f} times "
                                           f"({compressed} to {size} bytes); at most {limits.max_zip_ratio:g} allowed")


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, received: ReceivedStudy, limits: UploadLimits) -> None:
    digest = hashlib.sha256()
    size = 0
    path = received.next_path()
    try:
        with zf.open(info) as source, open(path, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > info.file_size:
                    raise UploadError(400, "invalid_zip", f"zip entry {info.filename!r} inflates past its declared "
                                                          f"size of {info.file_size} bytes")
                if received.bytes + size > limits.max_study_bytes:
                    raise UploadError(413, "study_too_large", f"the unpacked study must be at most "
                                                              f"{limits.max_study_bytes} bytes")
                _check_ratio(info.filename, size, info.compress_size, limits)
                digest.update(chunk)
                out.write(chunk)
    except _ZIP_ERRORS as exc:
        raise UploadError(400, "invalid_zip", f"zip entry {info.filename!r} cannot be read: {exc}") from None
    received.keep(path, digest.hexdigest(), size)


class _PartWriter:
    """python-multipart callbacks: each file part streamed to its own file, small text fields kept."""

    def __init__(self, received: ReceivedStudy, limits: UploadLimits, related: bool) -> None:
        self.received = received
        self.limits = limits
        self.related = related  # multipart/related: every part is a file
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.out = None
        self.path = received.folder
        self.digest = hashlib.sha256()
        self.size = 0
        self.field: str | None = None
        self.text = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_part_data": self.part_data, "on_part_end": self.part_end,
                "on_header_field": self.header_field, "on_header_value": self.header_value_data,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_finished}

    def part_begin(self) -> None:
        self.headers = {}
        self.header_name = self.header_value = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def headers_finished(self) -> None:
        self.field = None
        _disposition, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        if not self.related and b"filename" not in params:
            name = params.get(b"name", b"").decode("latin-1")
            if not name:
                raise UploadError(400, "invalid_multipart", "a form part has neither a name nor a filename")
            self.field = name
            self.text = bytearray()
            return
        if self.received.files >= self.limits.max_files:
            raise UploadError(413, "too_many_files",
                              f"an upload may hold at most {self.limits.max_files} files, got more")
        self.path = self.received.next_path()
        self.out = open(self.path, "wb")  # noqa: SIM115 (closed in part_end)
        self.digest = hashlib.sha256()
        self.size = 0

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.field is not None:
            self.text += chunk
            if len(self.text) > self.limits.max_options_bytes:
                raise UploadError(413, "field_too_large", f"form field {self.field!r} must be at most "
                                                          f"{self.limits.max_options_bytes} bytes")
            return
        self.size += len(chunk)
        if self.received.bytes + self.size > self.limits.max_study_bytes:
            raise UploadError(413, "study_too_large",
                              f"the study's files must be at most {self.limits.max_study_bytes} bytes")
        self.digest.update(chunk)
        self.out.write(chunk)

    def part_end(self) -> None:
        if self.field is not None:
            try:
                self.received.fields[self.field] = self.text.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(400, "invalid_multipart", f"form field {self.field!r} is not UTF-8 text") from None
            self.field = None
            return
        self.out.close()
        self.out = None
        self.received.keep(self.path, self.digest.hexdigest(), self.size)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


async def receive_multipart(stream: AsyncIterator[bytes], content_type: str, folder: Path, limits: UploadLimits,
                            ) -> ReceivedStudy:
    """Stream a multipart body (form-data or related) part by part into ``folder/input``."""
    media, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "invalid_multipart", f"a multipart upload needs a boundary, got {content_type!r}")
    received = ReceivedStudy(folder / "input")
    received.folder.mkdir()
    writer = _PartWriter(received, limits, related=media == b"multipart/related")
    parser = MultipartParser(boundary, writer.callbacks())
    try:
        async for chunk in _chunks(stream, limits, received):
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # python-multipart raises its own errors for malformed bodies
        if received.body_bytes == 0:
            raise _empty("the upload is empty (0 bytes): send the study's DICOM files as multipart parts") from None
        raise UploadError(400, "invalid_multipart", f"the multipart body cannot be parsed: {exc}") from None
    finally:
        writer.close()
    if received.body_bytes == 0:
        raise _empty("the upload is empty (0 bytes): send the study's DICOM files as multipart parts")
    if writer.out is not None or parser.state is not MultipartState.END:
        raise UploadError(400, "invalid_multipart", "the multipart body ended before its closing boundary")
    if received.files == 0:
        wanted = "parts" if writer.related else "parts with a filename"
        raise _empty(f"the multipart body holds no file parts: send the study's DICOM files as {wanted}")
    return received


def receive_folder(source: Path, folder: Path, limits: UploadLimits) -> ReceivedStudy:
    """Copy every file under ``source`` (searched recursively, links not followed) into ``folder/input`` as
    000001.dcm, ... under the file and size limits (``itvsam submit-dir``, enqueuing directly)."""
    received = ReceivedStudy(folder / "input")
    received.folder.mkdir()
    paths = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    if len(paths) > limits.max_files:
        raise UploadError(413, "too_many_files", f"a study may hold at most {limits.max_files} files, "
                                                 f"{source} has {len(paths)}")
    for path in paths:
        digest = hashlib.sha256()
        target = received.next_path()
        size = 0
        with open(path, "rb") as handle, open(target, "wb") as out:
            while chunk := handle.read(CHUNK):
                size += len(chunk)
                if received.bytes + size > limits.max_study_bytes:
                    raise UploadError(413, "study_too_large",
                                      f"the study's files must be at most {limits.max_study_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        received.keep(target, digest.hexdigest(), size)
    return received
