"""The request method as a label: the registered HTTP methods as sent, anything else
``_OTHER`` (the OpenTelemetry HTTP semantic conventions' rule).

Hypercorn (h11) accepts any token as a method, so a client that sends ``FOO1``,
``FOO2``, ... would otherwise create a metric series (and the memory to hold it) per
request. The access log keeps the method as sent; metrics and span names use this.
"""

from __future__ import annotations

#: RFC 9110's methods and PATCH (RFC 5789): the set the semantic conventions name.
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
OTHER_METHOD = "_OTHER"


def bounded_method(method: str) -> str:
    """``method`` if it is a known one, else ``_OTHER``."""
    return method if method in KNOWN_METHODS else OTHER_METHOD
