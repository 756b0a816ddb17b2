"""JSON structured logging: one object per line on stderr, secrets scrubbed.

Every line carries the request id of the request that emitted it (from a
context variable set by the web layer), so one grep follows a request.

A line is rendered where it is logged (the request id is the caller's context, the
``extra`` values may change later) and written by a listener thread: a write to
stderr blocks when the log collector falls behind, and that must not stall the
event loop. The queue is bounded: if stderr stays blocked, lines beyond it are
dropped and counted (a warning line says how many), rather than memory growing
without end. At exit the queue is drained, so the last lines are never lost.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import queue
import sys
import threading
import time
from contextvars import ContextVar
from itertools import islice
from logging.handlers import QueueHandler, QueueListener
from typing import IO, Any

from quartstack.redaction import redact

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_FRESH_RECORD_ATTRS = vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
_STANDARD_ATTRS = frozenset(_FRESH_RECORD_ATTRS | {"message", "asctime"})
# ``makeRecord`` sets the standard attributes first and the ``extra`` fields after them,
# so the extras are found without walking every attribute of every record.
_FIRST_EXTRA = len(_FRESH_RECORD_ATTRS)
_encode = json.JSONEncoder(default=str).encode

#: Lines waiting for stderr; beyond this they are dropped (a few MB of JSON at most).
QUEUE_LINES = 10_000
#: At exit, how long a blocked stderr may hold the process while the queue drains.
FLUSH_SECONDS = 5.0


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


_Lines = queue.Queue[logging.LogRecord | None]  # None: the listener's stop sentinel


class _LineQueueHandler(QueueHandler):
    """Queues the rendered line; when the queue is full, drops and counts instead of
    blocking (``handle`` holds the handler's lock, so the count needs no other)."""

    def __init__(self, lines: _Lines) -> None:
        super().__init__(lines)
        self.lines = lines
        self.setFormatter(JsonFormatter())
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.lines.put_nowait(self._dropped_record())
                self.dropped = 0
            self.lines.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def report_dropped(self) -> None:
        """At exit: say how many lines were dropped since the last report."""
        with self.lock or contextlib.nullcontext():
            if self.dropped:
                try:
                    self.lines.put(self._dropped_record(), timeout=FLUSH_SECONDS)
                except queue.Full:
                    return
                self.dropped = 0

    def _dropped_record(self) -> logging.LogRecord:
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
        prepared: logging.LogRecord = self.prepare(record)
        return prepared


class _Listener(QueueListener):
    """Writes the queued lines on its own thread; its stop is bounded, so a log sink
    that stays blocked cannot hold the process at exit."""

    def __init__(self, lines: _Lines, output: logging.StreamHandler[IO[str]]) -> None:
        super().__init__(lines, output)
        self.lines = lines
        self.output = output
        self.input = _LineQueueHandler(lines)

    def finish(self) -> bool:
        """Stop once the queued lines are written; False if stderr stayed blocked."""
        thread = self._thread
        try:
            self.lines.put(None, timeout=FLUSH_SECONDS)  # None is the listener's sentinel
        except queue.Full:
            return False
        if thread is not None:
            thread.join(FLUSH_SECONDS)
            if thread.is_alive():
                return False
        self._thread = None
        return True


_lock = threading.Lock()
_listener: _Listener | None = None


def configure_logging(
    level: str, *, stream: IO[str] | None = None, queue_lines: int = QUEUE_LINES
) -> None:
    """Send every logger (ours, Hypercorn's, the drivers') through the JSON formatter,
    written to ``stream`` (stderr) by a listener thread until :func:`stop_logging`."""
    global _listener
    stop_logging()
    lines: _Lines = queue.Queue(queue_lines)
    listener = _Listener(lines, logging.StreamHandler(stream if stream is not None else sys.stderr))
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
    if not listener.finish():
        return  # stderr stays blocked: writing from here would hang the exit
    handler = logging.StreamHandler(listener.output.stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [handler]
    while True:  # lines queued after the listener's last one
        try:
            record = listener.lines.get_nowait()
        except queue.Empty:
            break
        if record is not None:
            listener.output.handle(record)


atexit.register(stop_logging)
