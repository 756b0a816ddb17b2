"""Where log lines are written from: the event loop itself while stderr has room (a
regular file, a pipe being read), the writer thread otherwise; in order either way."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from quartstack import logging_setup
from quartstack.log_writer import LineWriter
from quartstack.logging_setup import configure_logging, stop_logging
from tests.support.polling import wait_until_sync


def _writer() -> LineWriter:
    writer = logging_setup._listener
    assert writer is not None
    return writer


async def _log_lines(count: int, name: str) -> None:
    log = logging.getLogger(name)
    for i in range(count):
        log.info("line %d", i)
        if i % 10 == 0:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)  # longer than the gathering interval: the loop's write is due


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on a loop of its own, then close it. Not ``asyncio.run``: that sets the main
    thread's event loop to None, which older pytest-asyncio trips over in later tests."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.close()


def _messages(text: str) -> list[str]:
    return [json.loads(line)["message"] for line in text.splitlines()]


def test_lines_logged_on_a_loop_go_to_a_file_from_the_loop(restored_logging, tmp_path: Path):
    path = tmp_path / "stderr.log"
    with path.open("w") as stream:
        configure_logging("INFO", stream=stream)
        writer = _writer()
        assert writer.kind == "file"
        _run(_log_lines(200, "quartstack.test.loopfile"))
        wait_until_sync(lambda: len(path.read_text().splitlines()) >= 200, what="200 lines")
        assert writer.loop_writes > 0 and writer.thread_writes == 0
        stop_logging()
    assert _messages(path.read_text()) == [f"line {i}" for i in range(200)]


def test_lines_logged_on_a_loop_go_to_a_read_pipe_from_the_loop(restored_logging):
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_end, "w") as stream:
        configure_logging("INFO", stream=stream)
        writer = _writer()
        assert writer.kind == "pipe"
        _run(_log_lines(200, "quartstack.test.looppipe"))
        wait_until_sync(lambda: received.count(b"\n") >= 200, what="200 lines through the pipe")
        assert writer.loop_writes > 0 and writer.thread_writes == 0
        stop_logging()
    reader.join(10)
    os.close(read_end)
    assert _messages(received.decode()) == [f"line {i}" for i in range(200)]


def test_a_full_pipe_hands_the_lines_to_the_thread_and_keeps_their_order(restored_logging):
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        configure_logging("INFO", stream=stream)
        writer = _writer()

        async def fill_then_log() -> None:
            log = logging.getLogger("quartstack.test.fullpipe")
            for i in range(400):  # ~250 bytes a line: more than a 64 KiB pipe holds
                log.info("line %d", i, extra={"padding": "x" * 150})
                if i % 50 == 0:
                    await asyncio.sleep(0.03)
            await asyncio.sleep(0.1)

        _run(fill_then_log())  # returns: the loop never blocked on the full pipe
        wait_until_sync(lambda: writer.thread_writes > 0, what="the thread to take over")
        received = bytearray()
        while received.count(b"\n") < 400:
            received.extend(os.read(read_end, 65536))  # frees room: the thread finishes
        stop_logging()
    os.close(read_end)
    assert writer.loop_writes > 0
    assert _messages(received.decode()) == [f"line {i}" for i in range(400)]


def test_lines_left_by_a_loop_that_closed_are_swept_by_the_thread(restored_logging, tmp_path):
    path = tmp_path / "stderr.log"
    with path.open("w") as stream:
        configure_logging("INFO", stream=stream)
        writer = _writer()

        async def log_and_leave() -> None:
            logging.getLogger("quartstack.test.closed").info("last words")

        _run(log_and_leave())  # closes the loop before its write comes due
        wait_until_sync(lambda: "last words" in path.read_text(), what="the swept line")
        assert writer.loop_writes == 0 and writer.thread_writes == 1
        stop_logging()
