"""Helpers to run an app in-process with its lifespan, and to capture its JSON logs."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from quart import Quart
from quart.typing import TestClientProtocol

from quartstack.app import create_app
from quartstack.lifecycle import lifecycle
from quartstack.logging_setup import JsonFormatter
from quartstack.settings import load_settings
from tests.support.leftovers import unique_name

#: This run's ``REDIS_KEY_PREFIX`` (``qs-test-<epoch>-<hex>``): its keys never meet those
#: of a concurrent run, and the next run sweeps them if this one is interrupted.
TEST_KEY_PREFIX = unique_name("-")


#: The short timeouts of the Redis calls that fail open (limiter, response cache,
#: idempotency). In-process tests share a busy CPU: a stall of a tenth of a second
#: would let a request through the limiter, so they get a generous value unless a
#: test passes its own (tests/redis/test_black_hole.py passes the defaults).
SIDE_TIMEOUTS = (
    "rate_limit_timeout_seconds",
    "response_cache_timeout_seconds",
    "idempotency_timeout_seconds",
)
PATIENT_SIDE_CALLS = dict.fromkeys(SIDE_TIMEOUTS, 2.0)


@asynccontextmanager
async def running_app(
    wait_started: bool = True, prepare: Callable[[Quart], None] | None = None, **settings: Any
) -> AsyncIterator[tuple[Quart, TestClientProtocol]]:
    """An app built from ``settings`` with its lifespan running, and a test client;
    ``prepare(app)`` may add test routes before it starts."""
    settings.setdefault("rate_limit_enabled", False)
    settings.setdefault("redis_key_prefix", TEST_KEY_PREFIX)
    settings = PATIENT_SIDE_CALLS | settings  # a starved CPU must not make a test fail open
    app = create_app(load_settings(**settings))
    if prepare is not None:
        prepare(app)
    async with app.test_app() as test_app:
        if wait_started:
            await lifecycle(app).wait_started()
        yield app, test_app.test_client()


@contextmanager
def captured_json_logs(level: int = logging.DEBUG) -> Iterator[io.StringIO]:
    """Every log line as the service would write it (JSON, secrets scrubbed)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def metric_value(name: str, **labels: str) -> float:
    """Current value of one sample of the service's registry (0 if absent)."""
    from quartstack.metrics import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
