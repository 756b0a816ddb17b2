"""JSON logs are written off the event loop: a blocked stderr does not stall the loop,
the queue is bounded (drops are counted), and the last lines before exit are written."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time

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
