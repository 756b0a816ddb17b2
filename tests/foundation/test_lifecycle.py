"""Shutdown budget, readiness from last-known backend state, and failures that must be
logged with their traceback (in-process; the SIGTERM path is in test_process.py)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from quartstack.app import create_app
from quartstack.integrations.base import Backend
from quartstack.lifecycle import lifecycle
from quartstack.readiness import BackendMonitor, check_backend
from quartstack.resilience import BackendUnavailable
from quartstack.settings import SettingsError, load_settings
from tests.support.app import captured_json_logs, running_app
from tests.support.net import TcpProxy


class FakeBackend(Backend):
    """A backend whose stop and health do what the test says."""

    name = "fake"

    def __init__(self, name: str, *, stop: str = "ok") -> None:
        self.name = name  # type: ignore[misc]
        super().__init__(load_settings())
        self.stop_mode = stop
        self.stopped = False
        self.healthy: bool | Exception = True
        self.health_calls = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.stop_mode == "hang":
            await asyncio.Event().wait()
        if self.stop_mode == "raise":
            raise RuntimeError("close failed")
        self.stopped = True

    async def health(self) -> dict[str, Any]:
        self.health_calls += 1
        if isinstance(self.healthy, Exception):
            raise self.healthy
        if not self.healthy:
            raise BackendUnavailable(self.name, "down")
        return {}


def _log_entries(stream: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_closing_backends_is_bounded_by_the_close_phase():
    app = create_app(load_settings(shutdown_close_seconds=0.5, rate_limit_enabled=False))
    hanging, good = FakeBackend("hanging", stop="hang"), FakeBackend("good")
    hanging.init_app(app)
    good.init_app(app)
    with captured_json_logs() as logs:
        async with asyncio.timeout(10):  # before the bound, closing never finished
            async with app.test_app():
                await lifecycle(app).wait_started()
                began = time.monotonic()
        took = time.monotonic() - began
    assert took < 0.5 + 0.5, took
    assert good.stopped
    assert any(
        e["message"] == "backends not closed within the shutdown budget" for e in _log_entries(logs)
    )


async def test_a_backend_failing_to_stop_is_logged_with_its_traceback():
    app = create_app(load_settings(rate_limit_enabled=False))
    failing, good = FakeBackend("failing", stop="raise"), FakeBackend("good")
    failing.init_app(app)
    good.init_app(app)
    with captured_json_logs() as logs:
        async with app.test_app():
            await lifecycle(app).wait_started()
    assert good.stopped
    [entry] = [e for e in _log_entries(logs) if e.get("backend") == "failing"]
    assert "RuntimeError: close failed" in entry["exception"]
    assert "Traceback" in entry["exception"]


async def test_an_unexpected_health_check_error_is_logged_with_its_traceback():
    backend = FakeBackend("odd")
    backend.healthy = KeyError("surprise")
    with captured_json_logs() as logs:
        healthy, body = await check_backend(backend, 1.0)
    assert not healthy and body == {"status": "unhealthy", "error": "KeyError"}
    [entry] = [e for e in _log_entries(logs) if e.get("backend") == "odd"]
    assert "KeyError: 'surprise'" in entry["exception"]


async def test_monitor_hysteresis_down_after_n_failures_up_after_one_success():
    backend = FakeBackend("flaky")
    monitor = BackendMonitor([backend], interval=1, timeout=1, threshold=3)
    assert monitor.status("flaky").startswith("unhealthy")  # never seen up: not ready
    await monitor.refresh()
    assert monitor.status("flaky") == "ok"
    backend.healthy = False
    for _ in range(2):
        await monitor.refresh()
        assert monitor.status("flaky") == "ok"  # a blip does not count as down
    await monitor.refresh()
    assert monitor.status("flaky") == "unhealthy: down"
    backend.healthy = True
    await monitor.refresh()
    assert monitor.status("flaky") == "ok"


async def test_readiness_reads_last_known_state_and_survives_a_blip():
    """A required backend that hangs does not slow the probe nor take the pod out at once;
    it counts as down after READINESS_FAILURE_THRESHOLD background checks, and up again
    after one good check."""
    with TcpProxy(6379) as proxy:
        async with running_app(
            redis_host="127.0.0.1",
            redis_port=proxy.port,
            required_backends=["redis"],
            readiness_interval_seconds=0.3,
            readiness_failure_threshold=3,
            health_timeout_seconds=0.5,
        ) as (_, c):
            assert (await c.get("/health/ready")).status_code == 200
            proxy.set_mode("hang")
            proxy.close_connections()
            began = time.monotonic()
            blip = await c.get("/health/ready")
            assert time.monotonic() - began < 0.25  # no backend call in the probe
            assert blip.status_code == 200
            await _until_ready_is(c, 503)
            body = await (await c.get("/health/ready")).get_json()
            assert body["checks"]["redis"].startswith("unhealthy")
            proxy.set_mode("pass")
            await _until_ready_is(c, 200)


async def _until_ready_is(client: Any, status: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get("/health/ready")).status_code != status:
        assert time.monotonic() < deadline, f"readiness never answered {status}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("required", "configured", "needs"),
    [
        (["redis"], {}, "REDIS_HOST or REDIS_NODES"),
        (["vault", "postgres"], {"postgres_host": "db"}, "vault needs VAULT_ADDR"),
        (["postgres"], {"redis_host": "r"}, "postgres needs POSTGRES_HOST"),
    ],
)
def test_a_required_backend_that_is_not_configured_is_a_settings_error(required, configured, needs):
    with pytest.raises(SettingsError) as error:
        load_settings(required_backends=required, **configured)
    message = str(error.value)
    assert message.startswith("invalid setting REQUIRED_BACKENDS: ") and needs in message


def test_required_backends_that_are_configured_are_accepted():
    settings = load_settings(required_backends=["redis"], redis_nodes=["a:7000"])
    assert settings.required_backends == ["redis"]
