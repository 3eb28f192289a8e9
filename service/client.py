"""A small client of the itvsam gateway (what ``itvsam submit`` and the service benchmark use).

Errors from the gateway come back as ``ServiceError`` with the HTTP status and the gateway's error code and message.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from dicomrt.reader import find_files

FINISHED = ("succeeded", "failed", "cancelled")
CHUNK = 1024 * 1024


class ServiceError(Exception):
    """The gateway refused a request (``status`` 4xx/5xx, ``code``) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def zip_study(source: Path, dest: Path) -> Path:
    """A zip of every file under the folder ``source`` (or ``source`` itself if it is a zip file already)."""
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is neither a folder nor a zip file")
        return source
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in find_files(source):
            archive.write(path, path.relative_to(source).as_posix())
    return dest


def _file_chunks(path: Path, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk


class Client:
    """``Client(url, token)``: submit studies, follow jobs, download results."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(0, "unreachable", f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", f"HTTP {response.status_code}: {response.text[:200]}"
            raise ServiceError(response.status_code, code, message)
        return response

    def submit_zip(self, archive: Path, options: dict[str, Any] | None = None, force: bool = False,
                   on_bytes: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Upload a zip; returns the gateway's answer (``id``, ``url``, ``state``, ``created``)."""
        params: dict[str, Any] = {"force": str(force).lower()}
        if options:
            params["options"] = json.dumps(options)
        response = self._request("POST", "/v1/jobs", params=params, content=_file_chunks(archive, on_bytes),
                                 headers={"Content-Type": "application/zip",
                                          "Content-Length": str(archive.stat().st_size)})
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, on_update: Callable[[dict[str, Any]], None] | None = None,
             timeout_s: float = 3600.0, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll the job until it is finished (or ``timeout_s``); returns its last state."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise ServiceError(0, "timeout", f"job {job_id} did not finish within {timeout_s:g} s "
                                                 f"(last state {job['state']}, stage {job['stage']})")
            time.sleep(poll_s)

    def download(self, job_id: str, dest: Path, what: str = "result") -> Path:
        """Save ``/v1/jobs/{id}/{what}`` (result zip, rtstruct, report, summary) to ``dest``, streamed."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/{what}") as response:
                if response.status_code >= 400:
                    response.read()
                    error = response.json().get("error", {})
                    raise ServiceError(response.status_code, error.get("code", "http_error"),
                                       error.get("message", response.text[:200]))
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
            tmp.replace(dest)
        except httpx.HTTPError as exc:
            raise ServiceError(0, "unreachable", f"download of job {job_id} failed: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return dest
