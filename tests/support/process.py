"""Run a real ``quartstack serve`` process for process-level tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType

import httpx

from tests.support.net import free_port

#: The HTTP servers ``quartstack serve --server`` runs; process-level tests run on each.
SERVERS = ("hypercorn", "uvicorn")


class ServiceProcess:
    """``python -m quartstack serve`` on a free loopback port, stderr captured."""

    command = "serve"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        port: int | None = None,
        server: str | None = None,
    ) -> None:
        self.server = server
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> ServiceProcess:
        command = [sys.executable, "-m", "quartstack", self.command]
        command += ["--bind", f"127.0.0.1:{self.port}"]
        if self.server is not None:
            command += ["--server", self.server]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        return self

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.append(line.rstrip("\n"))

    def log_lines(self) -> list[str]:
        return list(self._lines)

    def _wait_for(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"quartstack exited with {self.process.returncode}:\n"
                    + "\n".join(self._lines[-30:])
                )
            try:
                response = httpx.get(self.url + path, timeout=1.0)
                if response.status_code == 200:
                    return
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(
            f"{path} not 200 after {timeout} s (last: {last}):\n" + "\n".join(self._lines[-30:])
        )

    def wait_live(self, timeout: float = 60.0) -> ServiceProcess:
        self._wait_for("/health/live", timeout)
        return self

    def wait_started(self, timeout: float = 60.0) -> ServiceProcess:
        self._wait_for("/health/startup", timeout)
        return self

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; kill if it does not stop in time."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.process.returncode

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.terminate()
