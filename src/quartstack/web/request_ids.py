"""Request ids: random UUID4s as 32 hex digits, from the kernel's generator, cheaply.

``os.urandom`` is one ``getrandom`` system call, and CPython releases the GIL around
it: with the log writer thread waiting for the GIL, every request then handed the GIL
over and waited to get it back (measured in-process on ``/health/``: about 40 µs a
request, a context switch each). Reading the kernel's randomness a page at a time
keeps the ids unpredictable and makes that one call per 256 requests. A forked child
starts with an empty page, so two processes never share ids.
"""

from __future__ import annotations

import os

_ID_BYTES = 16
_PAGE_BYTES = _ID_BYTES * 256
# UUID version 4 and the RFC 4122 variant, as ``uuid.uuid4()`` sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)

_page = b""
_offset = _PAGE_BYTES


def new_request_id() -> str:
    """A random UUID4 as 32 hex digits: ``uuid.uuid4().hex`` without building a
    ``UUID`` object (its validating constructor is most of the cost) and without a
    system call per id."""
    global _page, _offset
    offset = _offset
    if offset >= _PAGE_BYTES:
        _page, offset = os.urandom(_PAGE_BYTES), 0
    _offset = offset + _ID_BYTES
    value = int.from_bytes(_page[offset : offset + _ID_BYTES], "big")
    return f"{value & _UUID4_CLEAR | _UUID4_SET:032x}"


def _forget_page() -> None:
    global _page, _offset
    _page, _offset = b"", _PAGE_BYTES


os.register_at_fork(after_in_child=_forget_page)
