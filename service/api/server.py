"""How uvicorn speaks HTTP for the gateway (``itvsam serve``): its httptools protocol, with explicit limits on the
request line and headers and our JSON error body for every request it cannot parse.

uvicorn answers a request its parser refuses (a request target over 65,535 bytes, which httptools cannot parse, or
bytes that are not HTTP) itself, before the app sees it, with a plain-text 400. ``GatewayHttpProtocol`` keeps the
parser and gives those refusals the body every other refusal has, ``{"error": {"code": ..., "message": ...}}``:
414 ``uri_too_long``, 431 ``headers_too_large`` or 400 ``invalid_http_request``. Each limit is checked while the
request arrives, so a 1 MB request line is refused after its first 64 KiB.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.errors import error_body

logger = logging.getLogger(__name__)

MAX_TARGET_BYTES = 65_535  # the request target (path and query): the most httptools can parse
MAX_HEADER_BYTES = 64 * 1024  # all header names and values of one request together


class RequestTooLarge(Exception):
    """A request over one of the limits: its HTTP status, code and message (raised inside the parser's callbacks,
    which turn it into the parser error that ``send_400_response`` answers)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``MAX_TARGET_BYTES`` and ``MAX_HEADER_BYTES`` and our JSON error body for
    requests it cannot parse (``itvsam serve`` passes it as uvicorn's ``http``)."""

    _refusal: RequestTooLarge | None = None
    _header_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._refusal = None
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_TARGET_BYTES:
            self._refuse(RequestTooLarge(414, "uri_too_long", f"the request target (path and query) must be at "
                                         f"most {MAX_TARGET_BYTES} bytes, got more; send job options as a multipart "
                                         "'options' part instead of in the query"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(RequestTooLarge(431, "headers_too_large", f"the request's headers must be at most "
                                         f"{MAX_HEADER_BYTES} bytes together, got more"))
        super().on_header(name, value)

    def _refuse(self, refusal: RequestTooLarge) -> None:
        self._refusal = refusal
        raise refusal

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused (uvicorn calls this for every parser error) and close."""
        refusal = self._refusal
        if refusal is None:
            status, code, message = 400, "invalid_http_request", f"the request is not valid HTTP/1.1: {msg}"
        else:
            status, code, message = refusal.status, refusal.code, str(refusal)
            logger.warning("request refused [%s]: %s", code, message)
        body = json.dumps(error_body(code, message)).encode()
        content = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n", b"\r\n", body])
        self.transport.write(b"".join(content))
        self.transport.close()
