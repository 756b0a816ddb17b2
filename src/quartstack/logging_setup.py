"""JSON structured logging: one object per line on stderr, secrets and personal data masked.

Every line carries the request id of the request that emitted it (from a
context variable set by the web layer), so one grep follows a request; other
context fields (a trace id) are added with :func:`add_context_field`.

A line is rendered where it is logged (the request id is the caller's context, the
``extra`` values may change later; orjson, and masking only for lines that may need
it, keep this cheap) and queued; :mod:`quartstack.log_writer` writes the queue to stderr
without ever blocking the event loop, many lines per system call. The queue is bounded:
if stderr stays blocked, lines beyond it are dropped and counted (a warning line says
how many), rather than memory growing without end. At exit the queue is drained, so
the last lines are never lost.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from itertools import islice
from logging.handlers import QueueHandler
from typing import IO, Any

import orjson

from quartstack.log_masking import LARGE_INT, Checked, masked, needs_masking
from quartstack.log_writer import Lines, LineWriter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_FRESH_RECORD_ATTRS = vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
_STANDARD_ATTRS = frozenset(_FRESH_RECORD_ATTRS | {"message", "asctime"})
# ``makeRecord`` sets the standard attributes first and the ``extra`` fields after them,
# so the extras are found without walking every attribute of every record.
_FIRST_EXTRA = len(_FRESH_RECORD_ATTRS)
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS
_fallback_encode = json.JSONEncoder(default=str).encode

#: Lines waiting for stderr; beyond this they are dropped (a few MB of JSON at most).
QUEUE_LINES = 10_000
#: At exit, how long a blocked stderr may hold the process while the queue drains.
FLUSH_SECONDS = 5.0
ContextField = tuple[str, Callable[[], object]]
# Fields every line carries when their value is not None; read where the line is logged.
_context_fields: tuple[ContextField, ...] = (("request_id", request_id_var.get),)


def add_context_field(name: str, value: Callable[[], object]) -> None:
    """Add ``name`` to every line logged while ``value()`` is not None (a trace id, say).

    ``value`` runs where the line is logged, so it may read the caller's context
    variables; it runs for every line, so it must be cheap. A field of the same name
    is replaced.
    """
    global _context_fields
    with _lock:
        kept = tuple(field for field in _context_fields if field[0] != name)
        _context_fields = (*kept, (name, value))


def remove_context_field(name: str) -> None:
    """Stop adding ``name`` to lines (nothing happens if it was never added)."""
    global _context_fields
    with _lock:
        _context_fields = tuple(field for field in _context_fields if field[0] != name)


def _dumps(entry: dict[str, Any]) -> str:
    try:
        return orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:  # an int beyond 64 bits, say: the slower encoder copes
        return _fallback_encode(entry)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; extra fields become top-level keys.

    Secret values and personal data are masked in every value (message, extras at any
    depth, the traceback). The test for them looks at strings (not :class:`Checked`
    ones) and at ints long enough to be a card number; any other type sends the line
    down the careful path (every value masked) outright.
    """

    _second = -1
    _second_text = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # formatting the date is the costly part; once a second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        extras = (
            (key, value)
            for key, value in islice(record.__dict__.items(), _FIRST_EXTRA, None)
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        )
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.render(
            record.created, record.levelname, record.name, record.getMessage(), extras, exception
        )

    def render(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        extras: Iterable[tuple[str, Any]],
        exception: str | None = None,
    ) -> str:
        """The line for one event: from a record (:meth:`format`) or from
        :func:`log_info`'s fields, the same either way."""
        entry: dict[str, Any] = {
            "timestamp": self._timestamp(created),
            "level": level,
            "logger": logger,
            "message": message,
        }
        texts = [message]  # what may hold a secret or personal data
        careful = False
        for name, value_of in _context_fields:
            value = value_of()
            if value is not None:
                entry[name] = value
                if type(value) is str:
                    texts.append(value)
                elif type(value) is not Checked:
                    careful = True
        for key, value in extras:
            entry[key] = value
            kind = type(value)
            if kind is str:
                texts.append(value)
            elif kind is int:
                careful = careful or not -LARGE_INT < value < LARGE_INT
            elif kind is not Checked and kind is not float and kind is not bool:
                careful = careful or value is not None
        if exception is not None:
            entry["exception"] = exception
            texts.append(exception)
        if careful or needs_masking(texts):
            entry = {key: masked(value) for key, value in entry.items()}
        return _dumps(entry)


class _LineQueueHandler(QueueHandler):
    """Queues the rendered line; beyond ``capacity`` waiting lines, drops and counts
    instead of blocking (``handle`` holds the handler's lock, so the count needs no
    other, and only the listener takes lines out, so a size seen below capacity stays so).
    Wakes the writer thread only when it sleeps for want of lines."""

    def __init__(self, lines: Lines, capacity: int, writer: LineWriter) -> None:
        super().__init__(lines)  # type: ignore[arg-type]  # a deque of rendered lines
        self.lines = lines
        self.capacity = capacity
        self.writer = writer
        self.formatter_json = JsonFormatter()
        self.setFormatter(self.formatter_json)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> str:
        """The line itself: the listener only writes it (no copy of the record)."""
        return self.format(record)

    def enqueue(self, record: Any) -> None:  # a line, from ``prepare``
        lines = self.lines
        if len(lines) >= self.capacity - (1 if self.dropped else 0):
            self.dropped += 1
            return
        if self.dropped:
            lines.append(self._dropped_line())
            self.dropped = 0
        lines.append(record)
        self.writer.line_queued()

    def report_dropped(self) -> None:
        """At exit: say how many lines were dropped since the last report."""
        with self.lock or contextlib.nullcontext():
            if self.dropped:
                self.lines.append(self._dropped_line())
                self.dropped = 0

    def _dropped_line(self) -> str:
        record = logging.LogRecord(
            "quartstack.logging",
            logging.WARNING,
            __file__,
            0,
            "log lines dropped: stderr did not keep up",
            None,
            None,
        )
        record.dropped = self.dropped
        return self.prepare(record)


class _Listener(LineWriter):
    """The writer of our handler's lines (the handler is ``input``)."""

    def __init__(self, lines: Lines, stream: IO[str], capacity: int) -> None:
        super().__init__(lines, stream)
        self.input = _LineQueueHandler(lines, capacity, self)


_lock = threading.Lock()
_listener: _Listener | None = None


def configure_logging(
    level: str, *, stream: IO[str] | None = None, queue_lines: int = QUEUE_LINES
) -> None:
    """Send every logger (ours, Hypercorn's, the drivers') through the JSON formatter,
    written to ``stream`` (stderr) by a listener thread until :func:`stop_logging`."""
    global _listener
    stop_logging()
    lines: Lines = deque()
    listener = _Listener(lines, stream if stream is not None else sys.stderr, queue_lines)
    root = logging.getLogger()
    root.handlers[:] = [listener.input]
    root.setLevel(level)
    with _lock:
        _listener = listener
    listener.start()
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


def log_info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """``logger.info(message, extra=fields)`` for the lines of every request (access,
    audit): when our listener is the only place the line can go, it is rendered and
    queued without a ``LogRecord`` and the handler chain (measured under load: about
    half the cost of the line). Anything else attached to the way (a handler, a
    filter, a record factory, a test's capture) gets the ordinary call, so nothing is
    bypassed.
    ``fields`` must not use a ``LogRecord`` attribute's name, as for ``extra``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    listener = _listener
    if listener is None or not _only_ours(logger, listener.input):
        logger.info(message, extra=fields)
        return
    handler = listener.input
    line = handler.formatter_json.render(time.time(), "INFO", logger.name, message, fields.items())
    with handler.lock or contextlib.nullcontext():
        handler.enqueue(line)


def _only_ours(logger: logging.Logger, handler: logging.Handler) -> bool:
    """True when the line would reach ``handler`` and nothing else: no handler or
    filter on the way up, none beside ours on the root logger, and records made by
    ``logging.LogRecord`` itself (a record factory, such as tracing's, adds fields)."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return False
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or handlers[0] is not handler or root.filters or handler.filters:
        return False
    node: logging.Logger | None = logger
    while node is not None and node is not root:
        if node.handlers or node.filters or not node.propagate or node.disabled:
            return False
        node = node.parent
    return True


def stop_logging() -> None:
    """Write every queued line, then log synchronously (for whatever runs after).

    Runs at interpreter exit (before logging's own shutdown, registered earlier), so
    the lines of the last moments of the process reach stderr.
    """
    global _listener
    with _lock:
        listener, _listener = _listener, None
    if listener is None:
        return
    listener.input.report_dropped()
    if not listener.finish(FLUSH_SECONDS):
        return  # stderr stays blocked: writing from here would hang the exit
    handler = logging.StreamHandler(listener.stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [handler]
    listener.write_waiting()  # lines queued after the listener's last write


atexit.register(stop_logging)
