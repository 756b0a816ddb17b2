"""The extension pattern every backend integration follows, and the registry of them.

An integration is a :class:`Backend` subclass with ``init_app(app)``. It keeps
itself in ``app.extensions[name]``, is started by the app's startup sequence
(in the background, so ``/health/startup`` can answer while it works) and is
closed when the app stops serving. Nothing connects at import time or in
``__init__``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from quart import Quart

from quartstack.resilience import BackendError, BackendGuard, BackendNotConfigured, RetryPolicy
from quartstack.tracing.client import backend_attributes
from quartstack.web.context import current_quart

if TYPE_CHECKING:
    from quartstack.settings import Settings

REGISTRY_KEY = "quartstack.backends"

logger = logging.getLogger("quartstack.backends")

B = TypeVar("B", bound="Backend")


class Backend(abc.ABC):
    """Base of every backend client: owns its connection/pool, guard and health check."""

    name: ClassVar[str]
    #: Backends this one needs started first (e.g. credentials from Vault).
    depends_on: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.guard = BackendGuard(
            self.name,
            timeout=settings.backend_timeout_seconds,
            failure_threshold=settings.circuit_failure_threshold,
            recovery_timeout=settings.circuit_recovery_seconds,
            ignored=self.ignored_exceptions(),
            retry=RetryPolicy(
                attempts=settings.retry_attempts,
                base_delay=settings.retry_base_delay_seconds,
                max_delay=settings.retry_max_delay_seconds,
            ),
            transient=self.is_transient,
            neutral=self.neutral_exceptions(),
            span_attributes=backend_attributes(self.name, settings),
        )
        self.app: Quart | None = None

    @property
    def startup_blocked(self) -> bool:
        """True while this backend must keep ``/health/startup`` at 503."""
        return False

    def ignored_exceptions(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the backend answered correctly (not a circuit failure)."""
        return ()

    def is_transient(self, exc: Exception) -> bool:
        """A connection error after which an idempotent read may run again (the
        driver's own classes; never its timeouts)."""
        return isinstance(exc, ConnectionError)

    def neutral_exceptions(self) -> tuple[type[BaseException], ...]:
        """Exceptions caused by the request or the data: they never move the breaker."""
        return ()

    def init_app(self, app: Quart) -> None:
        self.app = app
        app.extensions[self.name] = self
        registry(app).add(self)

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect or create the pool. Must not raise when the backend is down:
        log, stay degraded and connect lazily on first use instead."""

    async def connect_or_degrade(
        self, connect: Callable[[], Awaitable[object]], message: str
    ) -> None:
        """The usual ``start()``: ``connect`` through the guard; if the backend is down,
        log ``message`` and return, so one dead backend never stops the service from
        starting (the client connects on first use)."""
        try:
            await self.guard.call("connect", connect)
        except BackendError as exc:
            logger.warning(
                message,
                extra={"service": self.name, "reason": str(exc), "cause": exc.cause_name},
            )

    @abc.abstractmethod
    async def stop(self) -> None:
        """Close connections; called once when the app stops serving."""

    @abc.abstractmethod
    async def health(self) -> dict[str, Any]:
        """Check the backend now; return the healthy body, raise a BackendError if not."""


class BackendRegistry:
    """Which integrations this app has, and which of them readiness requires."""

    def __init__(self, required: list[str]) -> None:
        self.backends: dict[str, Backend] = {}
        self.required = tuple(required)

    def add(self, backend: Backend) -> None:
        self.backends[backend.name] = backend

    def get(self, name: str) -> Backend | None:
        return self.backends.get(name)

    def startup_order(self) -> list[list[Backend]]:
        """Group backends into waves: each wave only depends on earlier waves."""
        remaining = dict(self.backends)
        done: set[str] = set()
        waves: list[list[Backend]] = []
        while remaining:
            wave = [
                b
                for b in remaining.values()
                if all(dep in done or dep not in self.backends for dep in b.depends_on)
            ]
            if not wave:  # a cycle: start the rest together rather than hang
                wave = list(remaining.values())
            waves.append(wave)
            for backend in wave:
                done.add(backend.name)
                remaining.pop(backend.name)
        return waves

    async def start_all(self) -> None:
        for wave in self.startup_order():
            await asyncio.gather(*(backend.start() for backend in wave))

    async def stop_all(self) -> None:
        """Stop in reverse startup order: a backend's pool closes and its Vault lease is
        revoked while the Vault client it depends on is still there. One failing does not
        keep the others open."""
        for wave in reversed(self.startup_order()):
            results = await asyncio.gather(*(b.stop() for b in wave), return_exceptions=True)
            for backend, result in zip(wave, results, strict=True):
                if isinstance(result, Exception):
                    logger.error(
                        "backend did not stop cleanly",
                        extra={"backend": backend.name},
                        exc_info=result,
                    )


def registry(app: Quart | None = None) -> BackendRegistry:
    target = app if app is not None else current_quart()
    reg: BackendRegistry = target.extensions[REGISTRY_KEY]
    return reg


def get_backend(name: str, kind: type[B]) -> B:
    """The typed backend ``name`` of the current app, or 503 'not configured'."""
    backend = current_quart().extensions.get(name)
    if not isinstance(backend, kind):
        raise BackendNotConfigured(name)
    return backend
