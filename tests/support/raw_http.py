"""Raw HTTP/1.1 over a socket, for tests where the framing itself is the input."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RawExchange:
    """What the server sent back for one payload, and whether it then closed."""

    responses: list[RawResponse] = field(default_factory=list)
    closed: bool = False
    rest: bytes = b""

    @property
    def status(self) -> int:
        assert self.responses, f"no response (closed={self.closed}, rest={self.rest[:80]!r})"
        return self.responses[0].status

    @property
    def content_type(self) -> str:
        return self.responses[0].headers.get("content-type", "")


def parse_response(data: bytes) -> tuple[RawResponse | None, bytes]:
    """The first complete response in ``data`` (or None) and the bytes after it."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None, data
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    length = int(headers.get("content-length", "0")) if status >= 200 else 0
    if len(rest) < length:
        return None, data
    return RawResponse(status, headers, rest[:length]), rest[length:]


def exchange(
    port: int,
    payload: bytes,
    *,
    wait_close: float = 0.0,
    timeout: float = 10.0,
    responses: int = 1,
) -> RawExchange:
    """Send ``payload``; read ``responses`` final responses, then up to ``wait_close``
    seconds more for further data or the server closing (polling the socket, not sleeping)."""
    result = RawExchange()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may refuse and close early
            sock.sendall(payload)
        buffer = b""
        deadline = None
        while True:
            final = sum(r.status >= 200 for r in result.responses)
            if deadline is None and final >= responses:
                if wait_close <= 0:
                    break
                deadline = time.monotonic() + wait_close
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if deadline is None:
                    raise AssertionError(f"server hung on {payload[:60]!r}") from None
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                result.closed = True
                break
            buffer += chunk
            while True:
                response, buffer = parse_response(buffer)
                if response is None:
                    break
                result.responses.append(response)
        result.rest = buffer
    return result
