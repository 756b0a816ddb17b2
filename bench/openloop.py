"""An open-loop (constant-rate) HTTP load driver, for latency against an SLO.

wrk is closed-loop: each connection sends its next request only after the previous
answer, so a slow server is sent less work and its queueing never shows in the
latencies (coordinated omission). Here request ``i`` is due at ``start + i / rate``
whatever happened before, each runs as its own task, and its latency is measured
from when it was due, so time spent waiting for a free connection counts too.
Debian's ``hey -q`` is not open-loop (it caps each worker's rate but still waits
for every answer), and wrk2 is not packaged.

From Python::

    from bench.openloop import constant_rate
    result = constant_rate("http://127.0.0.1:8000/users", rate=100, duration=10,
                           method="POST", body=lambda n: {"email": f"u{n}@x.example"})
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from bench.wrkbench import WrkResult, process_cpu_seconds


@dataclass
class OpenLoopResult:
    rate: float
    sent: int
    ok: int
    failed: int
    #: Requests sent per second (the offered rate, as far as the driver kept up).
    achieved_rps: float
    #: Latency of every answered request, ms, measured from when it was due.
    latencies_ms: list[float] = field(default_factory=list)
    cpu_us_per_request: float | None = None

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            round(q * 10) - 1
        ]

    def as_wrk_result(self) -> WrkResult:
        """The same shape as a wrk run, for wrkbench's tables and JSON rows."""
        return WrkResult(
            requests=self.sent,
            requests_per_second=self.achieved_rps,
            latency_ms={f"p{q}": self.percentile(q) for q in (50, 95, 99)},
            non_2xx=self.failed,
            cpu_us_per_request=self.cpu_us_per_request,
        )


async def _drive(
    url: str,
    rate: float,
    duration: float,
    method: str,
    body: Callable[[int], Any] | None,
    connections: int,
    timeout: float,
) -> OpenLoopResult:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    failed = 0
    total = max(1, round(rate * duration))
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def one(n: int, due: float) -> None:
            nonlocal failed
            try:
                response = await client.request(
                    method, url, json=body(n) if body is not None else None
                )
            except httpx.HTTPError:
                failed += 1
                return
            if 200 <= response.status_code < 300:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                failed += 1

        tasks = []
        start = time.perf_counter()
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        # The rate this driver really offered (below ``rate`` if it could not keep up).
        sending = max(time.perf_counter() - start, (total - 1) / rate, 1e-9)
        await asyncio.gather(*tasks)
    return OpenLoopResult(
        rate=rate,
        sent=total,
        ok=len(latencies),
        failed=failed,
        achieved_rps=total / sending,
        latencies_ms=latencies,
    )


def constant_rate(
    url: str,
    *,
    rate: float,
    duration: float,
    method: str = "GET",
    body: Callable[[int], Any] | None = None,
    connections: int = 64,
    timeout: float = 10.0,
    server_pid: int | None = None,
) -> OpenLoopResult:
    """Send ``rate`` requests per second for ``duration`` seconds; with ``server_pid``
    the server's CPU time per request is measured too."""
    cpu_before = process_cpu_seconds(server_pid) if server_pid else 0.0
    result = asyncio.run(_drive(url, rate, duration, method, body, connections, timeout))
    if server_pid and result.sent:
        used = process_cpu_seconds(server_pid) - cpu_before
        result.cpu_us_per_request = used / result.sent * 1e6
    return result
