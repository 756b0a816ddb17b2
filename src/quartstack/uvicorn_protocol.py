"""uvicorn's httptools protocol with the limits and answers Hypercorn (h11) gives us.

httptools (llhttp) buffers a request head of any size, accepts what h11 refuses (no
``Host``, two of them) and answers whatever it cannot parse with a ``text/plain``
400. Here, each as a problem and with the connection closed (nothing after it on
the connection is read):

- a request line plus headers over :data:`MAX_REQUEST_HEAD_BYTES`: 431, whether the
  head is complete or still arriving (memory per connection stays bounded by the
  limit plus one read);
- ``Transfer-Encoding`` with ``Content-Length`` (or on HTTP/1.0): 400
  ``ambiguous-framing``, as the app answers on Hypercorn; a transfer coding other
  than one ``chunked``: 501, as h11 answers (RFC 9112 6.1);
- an HTTP/1.1 request without exactly one ``Host``, or anything else llhttp refuses
  (malformed framing, a method it does not know, bytes HTTP forbids): 400
  ``bad-request``;
- ``Expect: 100-continue`` with a ``Content-Length`` over ``MAX_BODY_BYTES``: no
  ``100 Continue``; the app's 413 is the answer (as server_fixes.py does for Hypercorn).

The app's own checks (web/request_body.py) still run for everything that parses.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from quartstack.metrics import HTTP_ERRORS
from quartstack.server_fixes import MAX_REQUEST_HEAD_BYTES, max_body_bytes
from quartstack.web.problems import PROBLEM_CONTENT_TYPE, problem_body
from quartstack.web.request_ids import new_request_id

_HEADER_LINE = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*$", re.M)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between requests or inside a head: counting its bytes
        self._head_bytes = 0
        self._last_data = b""

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        self._last_data = data
        super().data_received(data)
        # Counted from the first whole read after the head began: never more than its size.
        if self._in_head and self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_HEAD_BYTES:
            self._refuse_head()
            raise httptools.HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        size = len(self.url) + 16
        hosts = 0
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if name == b"host":
                hosts += 1
        if size > MAX_REQUEST_HEAD_BYTES:
            self._refuse_head()
            raise httptools.HttpParserError("request head too large")
        if hosts != 1 and self.parser.get_http_version() == "1.1":
            self._refuse_bad_request("An HTTP/1.1 request needs exactly one Host header.")
            raise httptools.HttpParserError("Host")
        if self.expect_100_continue and self._declared_length() > max_body_bytes():
            self.expect_100_continue = False  # the app answers 413; no body is wanted
        super().on_headers_complete()

    def _declared_length(self) -> int:
        for name, value in self.headers:
            if name == b"content-length":
                return int(value) if value.isdigit() else 0
        return 0

    def send_400_response(self, msg: str) -> None:
        """llhttp refused the request: say why in the terms h11 (Hypercorn) uses."""
        if self.transport.is_closing():
            return
        names: list[bytes] = []
        codings: list[bytes] = []
        for match in _HEADER_LINE.finditer(self._last_data.partition(b"\r\n\r\n")[0]):
            name = match.group(1).lower()
            names.append(name)
            if name == b"transfer-encoding":
                codings.append(match.group(2).lower())
        request_id = new_request_id()
        if codings and (b"content-length" in names or b" HTTP/1.0\r\n" in self._last_data):
            detail = "Transfer-Encoding is not accepted with Content-Length or on HTTP/1.0."
            self._refuse(400, problem_body(400, "ambiguous-framing", detail, "", request_id))
        elif codings and codings != [b"chunked"]:
            detail = "The only transfer coding accepted is one chunked."
            problem = problem_body(501, "unsupported-transfer-coding", detail, "", request_id)
            self._refuse(501, problem)
        else:
            self._refuse_bad_request("The request is not valid HTTP/1.1.", request_id)

    def _refuse_bad_request(self, detail: str, request_id: str = "") -> None:
        request_id = request_id or new_request_id()
        self._refuse(400, problem_body(400, "bad-request", detail, "", request_id))

    def _refuse_head(self) -> None:
        detail = f"The request line and headers exceed {MAX_REQUEST_HEAD_BYTES} bytes."
        self._refuse(431, problem_body(431, "headers-too-large", detail, "", new_request_id()))

    def _refuse(self, status: int, problem: dict[str, Any]) -> None:
        """Answer a problem outside the app (no request context), then close."""
        if self.transport.is_closing():
            return
        body = json.dumps(problem).encode()
        HTTP_ERRORS.labels(problem["type"].rsplit("/", 1)[-1], str(status)).inc()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: " + PROBLEM_CONTENT_TYPE.encode() + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"x-request-id: " + str(problem["request_id"]).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()
