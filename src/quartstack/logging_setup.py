"""JSON structured logging: one object per line on stderr, secrets scrubbed.

Every line carries the request id of the request that emitted it (from a
context variable set by the web layer), so one grep follows a request.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from itertools import islice
from typing import Any

from quartstack.redaction import redact

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_FRESH_RECORD_ATTRS = vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
_STANDARD_ATTRS = frozenset(_FRESH_RECORD_ATTRS | {"message", "asctime"})
# ``makeRecord`` sets the standard attributes first and the ``extra`` fields after them,
# so the extras are found without walking every attribute of every record.
_FIRST_EXTRA = len(_FRESH_RECORD_ATTRS)
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; extra fields become top-level keys."""

    _second = -1
    _second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # formatting the date is the costly part; once a second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": self._timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in islice(record.__dict__.items(), _FIRST_EXTRA, None):
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(_encode(entry))


def configure_logging(level: str) -> None:
    """Send every logger (ours, Hypercorn's, the drivers') through the JSON formatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("hypercorn.error", "hypercorn.access", "quart.app", "quart.serving"):
        named = logging.getLogger(name)
        named.handlers[:] = []
        named.propagate = True
    # The formatter prints none of these record fields; skip collecting them on every
    # record (the "Optimization" section of the logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Hypercorn's own access log duplicates our request line.
    logging.getLogger("hypercorn.access").disabled = True
