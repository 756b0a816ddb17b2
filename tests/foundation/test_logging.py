"""JSON logs are written off the event loop: a blocked stderr does not stall the loop,
the queue is bounded (drops are counted), lines that queue up share a write, the last
lines before exit are written, and context fields (a trace id) join every line."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from contextvars import ContextVar

from quartstack.log_writer import GATHER_SECONDS
from quartstack.logging_setup import (
    add_context_field,
    configure_logging,
    log_info,
    remove_context_field,
    request_id_var,
    stop_logging,
)
from tests.support.app import captured_json_logs
from tests.support.polling import wait_until_sync
from tests.support.process import ServiceProcess

# Far more than a pipe buffer (64 KiB): written synchronously, these lines block the loop.
LINES = 3000
_CHILD = textwrap.dedent(
    """
    import asyncio, logging, sys
    from quartstack.logging_setup import configure_logging

    configure_logging("INFO", **{kwargs})
    log = logging.getLogger("quartstack.test")

    async def main():
        ticks = 0
        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1
        task = asyncio.create_task(ticker())
        for i in range({lines}):
            log.info("line %d", i, extra={{"padding": "x" * 500}})
            await asyncio.sleep(0)
        task.cancel()
        print("done", ticks, flush=True)

    asyncio.run(main())
    """
)


def _child(**kwargs: object) -> subprocess.Popen[str]:
    """A process that logs LINES lines to a stderr pipe nobody reads until it says done."""
    code = _CHILD.format(kwargs=repr(kwargs), lines=LINES)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stdout_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            return process.stdout.readline()
    return ""


def _finish(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    """Read stderr to the end (unblocking the child) and wait for its exit."""
    assert process.stderr is not None
    text = process.stderr.read()
    assert process.wait(30) == 0, text[-2000:]
    return [json.loads(line) for line in text.splitlines()]


def test_a_blocked_stderr_does_not_stall_the_loop_and_exit_writes_every_line():
    process = _child()
    try:
        said = _stdout_line(process, timeout=30)
        # Before the fix the child blocks in a write to the full pipe and never gets here.
        assert said.startswith("done"), "logging blocked the event loop on a full stderr"
        entries = _finish(process)
    finally:
        process.kill()
        process.wait()
    messages = [entry["message"] for entry in entries]
    assert messages == [f"line {i}" for i in range(LINES)]  # nothing lost, in order
    assert entries[-1]["logger"] == "quartstack.test" and entries[-1]["padding"] == "x" * 500


def test_lines_beyond_the_queue_are_dropped_and_counted():
    process = _child(queue_lines=100)
    try:
        assert _stdout_line(process, timeout=30).startswith("done")
        entries = _finish(process)
    finally:
        process.kill()
        process.wait()
    written = [e for e in entries if str(e["message"]).startswith("line ")]
    reports = [e for e in entries if e["message"] == "log lines dropped: stderr did not keep up"]
    dropped = sum(int(str(report["dropped"])) for report in reports)
    assert dropped > 0 and reports[0]["level"] == "WARNING"
    assert len(written) + dropped == LINES  # every line is either written or counted


def test_the_service_writes_its_last_lines_on_exit():
    env = {"RATE_LIMIT_ENABLED": "false"}
    with ServiceProcess(env) as server:
        server.wait_live()
        code = server.terminate()
    assert code == 0
    messages = [json.loads(line)["message"] for line in server.log_lines() if line.startswith("{")]
    assert "shutdown signal received" in messages
    assert messages[-1] == "stopped"


class _GatedStream(io.StringIO):
    """Its first write waits for ``gate``: lines queue up behind it meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes == 1:
            assert self.gate.wait(10)
        return super().write(text)


def test_lines_that_queue_up_are_written_together(restored_logging):
    stream = _GatedStream()
    configure_logging("INFO", stream=stream)
    try:
        log = logging.getLogger("quartstack.test.batch")
        log.info("first")
        wait_until_sync(lambda: stream.writes == 1, what="the first write to start")
        for i in range(500):
            log.info("line %d", i)
        stream.gate.set()
    finally:
        stop_logging()
    lines = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert lines == ["first"] + [f"line {i}" for i in range(500)]
    assert stream.writes <= 4  # the first, then batches of up to 256 lines


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_a_steady_trickle_of_lines_is_written_once_per_gathering_interval(restored_logging):
    """The writer thread lets lines gather for GATHER_SECONDS after it wakes: a busy
    server's access lines cost one wake-up and one write per interval, not one per line
    (each wake-up takes the GIL from the event loop)."""
    stream = _CountingStream()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("quartstack.test.trickle")
    began = time.monotonic()
    for i in range(60):
        log.info("line %d", i)
        time.sleep(0.001)
    elapsed = time.monotonic() - began
    stop_logging()
    lines = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert lines == [f"line {i}" for i in range(60)]
    # the writer sleeps at least GATHER_SECONDS between writes, whatever the load;
    # one write per line (60) is what waking for every line looked like
    assert stream.writes <= elapsed / GATHER_SECONDS + 2


def test_context_fields_join_every_line_while_they_have_a_value():
    test_id: ContextVar[str | None] = ContextVar("test_id", default=None)
    add_context_field("test_context_id", test_id.get)
    log = logging.getLogger("quartstack.test.context")
    try:
        with captured_json_logs() as stream:
            log.info("outside")
            token = test_id.set("4bf92f3577b34da6a3ce929d0e0e4736")
            log.info("inside")
            test_id.reset(token)
    finally:
        remove_context_field("test_context_id")
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "test_context_id" not in outside
    assert inside["test_context_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def _without_timestamp(line: str) -> dict[str, object]:
    entry: dict[str, object] = json.loads(line)
    entry.pop("timestamp")
    return entry


def test_log_info_writes_the_line_logger_info_would(restored_logging):
    """The request lines skip the LogRecord when our listener is the only consumer;
    the line must be the one ``logger.info(..., extra=...)`` writes."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("quartstack.test.direct")
    fields = {"method": "GET", "route": "/x/{id}", "status": 200, "duration_ms": 1.5}
    token = request_id_var.set("req-1")
    try:
        log_info(log, "request", fields)
        log.info("request", extra=fields)
        log_info(log, "card", {"note": "paid with 4111 1111 1111 1111"})
    finally:
        request_id_var.reset(token)
        stop_logging()
    direct, ordinary, masked_line = stream.getvalue().splitlines()
    assert _without_timestamp(direct) == _without_timestamp(ordinary)
    assert _without_timestamp(direct)["request_id"] == "req-1"
    assert "4111 1111 1111 1111" not in masked_line  # masking applies on this path too


def test_log_info_takes_the_ordinary_path_when_anything_else_listens(restored_logging):
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("quartstack.test.direct")
    try:
        with captured_json_logs() as captured:  # a second handler on the root logger
            log_info(log, "seen by both", {"status": 200})
        extra = logging.Filter("nothing")  # a filter on the way: it decides
        log.addFilter(extra)
        log_info(log, "filtered out", {"status": 200})
        log.removeFilter(extra)
        log.setLevel(logging.WARNING)
        log_info(log, "below the level", {"status": 200})
        log.setLevel(logging.NOTSET)
    finally:
        stop_logging()
    assert [json.loads(line)["message"] for line in captured.getvalue().splitlines()] == [
        "seen by both"
    ]
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "seen by both"
    ]


def test_log_info_without_our_listener_is_an_ordinary_info_call(restored_logging):
    stop_logging()  # as in a process that never configured our logging
    with captured_json_logs() as captured:
        log_info(logging.getLogger("quartstack.test.direct"), "plain", {"status": 201})
    (line,) = captured.getvalue().splitlines()
    assert json.loads(line)["message"] == "plain" and json.loads(line)["status"] == 201


def test_log_info_keeps_the_fields_a_record_factory_adds(restored_logging):
    """Tracing adds trace_id/span_id through a record factory: the line must carry them."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.trace_id = "abc"
        return record

    logging.setLogRecordFactory(factory)
    try:
        log_info(logging.getLogger("quartstack.test.direct"), "traced", {"status": 200})
    finally:
        logging.setLogRecordFactory(previous)
        stop_logging()
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["trace_id"] == "abc"
