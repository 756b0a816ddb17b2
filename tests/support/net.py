"""Network helpers for tests: free ports, and TCP stand-ins for faulty backends.

The proxy and the hanging server run on their own thread and event loop, so a
test can block or an app can stall without freezing them.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Literal

Mode = Literal["pass", "delay", "hang", "refuse"]


#: Ports handed to servers the tests start: below the kernel's ephemeral range
#: (32768-60999 by default), so an outgoing connection cannot take one between the
#: check and the server's bind; the Redis Cluster fixture uses 20000 and up.
_SERVER_PORTS = range(10000, 20000)


def free_port() -> int:
    """A TCP port that nothing listens on right now, outside the ephemeral range."""
    for _ in range(1000):
        port = random.choice(_SERVER_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 10000-19999")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


class _LoopThread:
    """An asyncio loop on a daemon thread, with a sync way to run coroutines on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class TcpProxy:
    """A TCP proxy in front of a real server whose behaviour a test can switch.

    Modes: ``pass`` forwards, ``delay`` holds every chunk from the backend for
    ``delay`` seconds, ``hang`` accepts and never forwards, ``refuse`` closes
    new connections at once.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.mode: Mode = "pass"
        self.delay = 0.0
        #: Chunks being held back in ``delay`` mode right now (poll it to reach zero).
        self.held = 0
        self._runner: _LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._runner = _LoopThread()
        self._server = self._runner.run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._runner is None:
            return
        self.close_connections()
        self._runner.run(self._shutdown())
        self._runner.close()
        self._runner = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def set_mode(self, mode: Mode, delay: float = 0.0) -> None:
        self.mode = mode
        self.delay = delay

    def close_connections(self) -> None:
        """Cut every open connection (both directions)."""
        if self._runner is None:
            return

        async def cut() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._runner.run(cut())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.mode == "refuse":
                writer.transport.abort()
                return
            if self.mode == "hang":
                await reader.read()  # until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, delayed=False),
                self._pipe(up_reader, writer, delayed=True),
                return_exceptions=True,
            )
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "hang":
                    await asyncio.Event().wait()
                if delayed and self.mode == "delay" and self.delay > 0:
                    self.held += 1
                    try:
                        await asyncio.sleep(self.delay)
                    finally:
                        self.held -= 1
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


class HangingServer(TcpProxy):
    """Accepts TCP connections and never answers (a hung backend)."""

    def __init__(self) -> None:
        super().__init__(target_port=0)
        self.mode = "hang"

    def __enter__(self) -> HangingServer:
        self.start()
        return self
