"""Writes rendered log lines to stderr without ever blocking the event loop, and without
a thread in the way when stderr has room.

Lines wait in a deque (appends are atomic under the GIL: no lock, no wake-up per line).
While an event loop runs, it writes them itself every ``GATHER_SECONDS``, in one system
call, when stderr can take them without blocking: a regular file, or a pipe (what a
container runtime gives a process) with that much room. A thread writes everything
else: lines logged outside an event loop, a pipe too full (the log collector fell
behind: the thread blocks, not the loop), a terminal or anything of unknown kind.

Why not the thread for everything: each time a Python thread wakes it must take the GIL
from the event loop, and the loop waits for it. On a busy two-core machine the writer
thread's two handoffs per interval cost the served ``/health/`` about 7 % of its
throughput (a wake-up per line, 15 %); a write from the loop costs one system call.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import stat
import struct
import sys
import termios
import threading
import time
from collections import deque
from itertools import islice
from logging.handlers import QueueListener
from typing import IO

#: How long lines gather between writes: one write per interval under load.
GATHER_SECONDS = 0.02
#: Lines the writer thread joins into one write when they queue up behind a slow stderr.
WRITE_BATCH = 256
#: How often the writer thread looks for lines left behind (an event loop that closed
#: before its write came due).
SWEEP_SECONDS = 0.5

Lines = deque[str]
_INT = struct.Struct("i")
_EVERYTHING = sys.maxsize


def _sink_kind(stream: IO[str]) -> tuple[int | None, str]:
    """The file descriptor behind ``stream`` and whether the loop may write to it:
    ``file`` (never blocks for long), ``pipe`` (only as much as it has room for), or
    ``thread`` (terminal, socket, no descriptor: only the thread writes)."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # io.StringIO and the like
        return None, "thread"
    if stat.S_ISREG(mode):
        return fd, "file"
    if stat.S_ISFIFO(mode) and hasattr(fcntl, "F_GETPIPE_SZ"):
        return fd, "pipe"
    return fd, "thread"


class LineWriter(QueueListener):
    """Owns the line queue, the writer thread and the loop's timed writes; all writes
    hold ``write_lock``, so lines reach stderr in the order they were queued."""

    def __init__(self, lines: Lines, stream: IO[str]) -> None:
        super().__init__(lines)  # type: ignore[arg-type]  # a deque of rendered lines
        self.lines = lines
        self.stream = stream
        self.fd, self.kind = _sink_kind(stream)
        self.write_lock = threading.Lock()
        self.stopping = False
        self.failed_writes = 0
        self.loop_writes = 0
        self.thread_writes = 0
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._token_sent = False
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        if self.fd is not None:
            stream.flush()  # from here on lines go straight to the descriptor

    def line_queued(self) -> None:
        """Called after each append: make sure someone writes the line soon."""
        if self.kind != "thread":
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                if self._flush_loop is not loop:  # no write due on this loop yet
                    self._flush_loop = loop
                    loop.call_later(GATHER_SECONDS, self._write_on_loop)
                return
        self.wake_thread()

    def wake_thread(self) -> None:
        if not self._token_sent:
            self._token_sent = True
            self._wake.put(None)

    def _write_on_loop(self) -> None:
        """On the event loop: write what stderr takes without blocking; if it cannot
        take it all (or the thread is mid-write), the thread writes the rest."""
        self._flush_loop = None
        if not self.write_lock.acquire(blocking=False):
            self.wake_thread()  # the thread is writing: it takes these too, in order
            return
        try:
            lines = self.lines
            count = len(lines)
            if count:  # (joined in C: no other thread appends while islice walks the deque)
                data = ("\n".join(islice(lines, count)) + "\n").encode()
                if len(data) <= self._room():
                    for _ in range(count):
                        lines.popleft()
                    self._write(data)
                    self.loop_writes += 1
        finally:
            self.write_lock.release()
        if self.lines and self._flush_loop is None:
            self.wake_thread()

    def _room(self) -> int:
        """Bytes stderr takes now without blocking."""
        if self.kind == "file":
            return _EVERYTHING
        if self.kind != "pipe" or self.fd is None:
            return 0
        try:
            size = fcntl.fcntl(self.fd, fcntl.F_GETPIPE_SZ)
            waiting: int = _INT.unpack(fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0
        return size - waiting

    def _write(self, data: bytes) -> None:
        """All of ``data`` to the descriptor (blocking writes may be partial on a signal)."""
        assert self.fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:  # stderr closed or broken: nothing left to tell
            self.failed_writes += 1

    def _monitor(self) -> None:
        """The writer thread: sleep until asked (or a sweep is due), let lines gather,
        write every waiting line; return once stopping and everything is written."""
        loop_writes = self.loop_writes
        while not self.stopping:
            try:
                self._wake.get(timeout=SWEEP_SECONDS)
            except queue.Empty:  # a sweep: only for lines no loop wrote for a while
                stale = self.lines and self.loop_writes == loop_writes
                loop_writes = self.loop_writes
                if not stale:
                    continue
            self._token_sent = False  # lines queued from now on send a new token
            if not self.stopping:
                time.sleep(GATHER_SECONDS)
            self.write_waiting()
        self.write_waiting()

    def write_waiting(self) -> None:
        """Write every waiting line, up to WRITE_BATCH lines a write, blocking if stderr
        is full (the thread's job, and the exit's)."""
        lines = self.lines
        with self.write_lock:
            while lines:
                batch = [lines.popleft() for _ in range(min(len(lines), WRITE_BATCH))]
                text = "\n".join(batch) + "\n"
                self.thread_writes += 1
                if self.fd is not None:
                    self._write(text.encode())
                    continue
                try:
                    self.stream.write(text)
                    self.stream.flush()
                except (OSError, ValueError):
                    self.failed_writes += 1

    def finish(self, timeout: float) -> bool:
        """Stop once the queued lines are written; False if stderr stayed blocked."""
        thread = self._thread
        self.stopping = True
        self._wake.put(None)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self._thread = None
        return True
