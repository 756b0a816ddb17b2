"""Extra readiness checks: conditions beyond "the required backends answer".

A feature registers a named check (an async function returning ``"ok"`` or the
reason it is not ready); ``/health/ready`` runs them with the health timeout and
reports each under its name. A check never raises into the probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from quart import Quart

READINESS_CHECKS_KEY = "quartstack.readiness_checks"

ReadinessCheck = Callable[[], Awaitable[str]]


def add_readiness_check(app: Quart, name: str, check: ReadinessCheck) -> None:
    app.extensions.setdefault(READINESS_CHECKS_KEY, {})[name] = check


async def run_readiness_checks(app: Quart, timeout: float) -> dict[str, str]:
    """Every registered check's status, concurrently, each bounded by ``timeout``."""
    checks: dict[str, ReadinessCheck] = app.extensions.get(READINESS_CHECKS_KEY, {})

    async def one(check: ReadinessCheck) -> str:
        try:
            async with asyncio.timeout(timeout):
                return await check()
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except Exception as exc:  # a probe reports, it does not crash
            return f"check failed: {type(exc).__name__}"

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))
