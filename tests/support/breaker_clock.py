"""A clock for circuit-breaker tests: the ``circuitbreaker`` package reads
``time.monotonic`` (imported into its module) to decide when an open circuit half-opens.
Tests that assert "still open" must not depend on how fast the host runs the lines in
between (collecting metrics walks the whole registry); they move this clock instead."""

from __future__ import annotations

import time

import circuitbreaker
import pytest


class BreakerClock:
    """Real time plus whatever the test has advanced it by."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen_at: float | None = None

    def __call__(self) -> float:
        base = self.frozen_at if self.frozen_at is not None else time.monotonic()
        return base + self.offset

    def freeze(self) -> None:
        """Stop the clock: an open circuit stays open until :meth:`advance`."""
        self.frozen_at = time.monotonic()

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def breaker_clock(monkeypatch: pytest.MonkeyPatch) -> BreakerClock:
    clock = BreakerClock()
    monkeypatch.setattr(circuitbreaker, "monotonic", clock)
    return clock
