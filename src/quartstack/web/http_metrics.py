"""The three per-request HTTP metrics, counted in plain Python objects and exposed by a
collector: ``http_requests_total``, ``http_request_duration_seconds`` and
``http_requests_in_progress``.

prometheus_client's metric values take a lock on every change so that any thread may
change them; a request changed five (in progress up and down, a counter, a histogram's
sum and bucket), each a method call and a lock, about 16,000 instructions a request on
``GET /health/`` (callgrind). These three change only on the event loop's thread, so
here they are plain attributes of one :class:`RouteStats` per method and route, looked
up once a request. A scrape may run in another thread: it reads copies, and the count
is the sum of the buckets it read, so a scrape is always self-consistent.

The exposition is the one prometheus_client writes for the same metrics, sample for
sample (``_created`` series included unless ``PROMETHEUS_DISABLE_CREATED_SERIES`` is
set; exemplars on the bucket of the observation, in the OpenMetrics format only).
``tests/foundation/test_http_metrics.py`` compares the two outputs.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

#: How prometheus_client writes a bucket bound (``1.0``, ``+Inf``); the library leaves it untyped.
_le_text = cast(Callable[[float], str], floatToGoString)
_WITH_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true",
    "1",
    "t",
)


class RouteStats:
    """One method and route: requests in progress, answers by status, the durations."""

    __slots__ = ("bucket_counts", "created", "exemplars", "in_progress", "statuses", "total")

    def __init__(self, bucket_count: int) -> None:
        self.in_progress = 0
        self.statuses: dict[int, list[float]] = {}  # status -> [count, created]
        self.bucket_counts = [0] * bucket_count  # the last one is +Inf
        self.exemplars: list[Exemplar | None] = [None] * bucket_count
        self.total = 0.0  # the histogram's sum
        self.created = time.time()


class HttpMetrics(Collector):
    """The collector of the three metrics (see the module)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(float(bound) for bound in buckets)
        self._le = [_le_text(bound) for bound in (*self.bounds, float("inf"))]
        self._routes: dict[tuple[str, str], RouteStats] = {}

    def route(self, method: str, endpoint: str) -> RouteStats:
        """The stats of ``method`` on ``endpoint`` (label sets are bounded: route templates)."""
        stats = self._routes.get((method, endpoint))
        if stats is None:
            stats = self._routes[method, endpoint] = RouteStats(len(self._le))
        return stats

    def finished(
        self,
        stats: RouteStats,
        status: int,
        seconds: float,
        exemplar: dict[str, str] | None = None,
    ) -> None:
        """Count one answered request of ``stats``' route."""
        counted = stats.statuses.get(status)
        if counted is None:
            stats.statuses[status] = [1, time.time()]
        else:
            counted[0] += 1
        index = bisect_left(self.bounds, seconds)  # the first bucket with seconds <= le
        stats.bucket_counts[index] += 1
        stats.total += seconds
        if exemplar:
            stats.exemplars[index] = Exemplar(exemplar, seconds, time.time())

    def collect(self) -> Iterator[Metric]:
        routes = list(self._routes.items())
        requests = Metric(
            "http_requests", "HTTP requests answered, by route template and status.", "counter"
        )
        durations = Metric(
            "http_request_duration_seconds",
            "Time from request received to response ready, by route template.",
            "histogram",
        )
        in_progress = Metric(
            "http_requests_in_progress", "Requests being handled now, by route template.", "gauge"
        )
        for (method, endpoint), stats in routes:
            labels = {"method": method, "endpoint": endpoint}
            for status, (count, created) in list(stats.statuses.items()):
                with_status = {**labels, "status": str(status)}
                requests.add_sample("http_requests_total", with_status, float(count))
                if _WITH_CREATED:
                    requests.add_sample("http_requests_created", with_status, created)
            self._add_histogram(durations, labels, stats)
            in_progress.add_sample("http_requests_in_progress", labels, float(stats.in_progress))
        yield requests
        yield durations
        yield in_progress

    def _add_histogram(self, metric: Metric, labels: dict[str, str], stats: RouteStats) -> None:
        counts, exemplars, total = list(stats.bucket_counts), list(stats.exemplars), stats.total
        name = metric.name
        cumulative = 0.0
        for le, count, exemplar in zip(self._le, counts, exemplars, strict=True):
            cumulative += count
            metric.add_sample(f"{name}_bucket", {**labels, "le": le}, cumulative, None, exemplar)
        metric.add_sample(f"{name}_count", labels, cumulative)
        metric.add_sample(f"{name}_sum", labels, total)
        if _WITH_CREATED:
            metric.add_sample(f"{name}_created", labels, stats.created)
