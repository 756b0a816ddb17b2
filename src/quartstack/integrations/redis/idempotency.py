"""``Idempotency-Key`` for every POST, stored in Redis so any replica can replay it.

The first request with a key claims it atomically (``SET NX``) with a fingerprint
of the request; its response (status, the headers that matter, body) is stored
for ``IDEMPOTENCY_TTL_SECONDS``. A retry with the same key and request replays the
stored response with ``Idempotency-Replayed: true``; the same key with another
request is a 422; a retry while the first is still running is a 409. A 5xx or
429 is not stored, so the client can retry it. A body larger than
``IDEMPOTENCY_MAX_STORED_BYTES`` is not stored (only its status and digest), so
keyed requests cannot fill Redis; a retry of such a key is a 409. If Redis is
unreachable, or too old for ``SET NX GET`` (Redis < 7), the request is processed
without the guarantee (logged once, counted), because refusing all POSTs would turn
a cache outage into an API outage; each call waits at most
``IDEMPOTENCY_TIMEOUT_SECONDS`` for Redis, and none while its circuit is open.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
from typing import Any

from quart import Quart, Response, g, request
from redis.exceptions import ResponseError

from quartstack.auth.principal import current_principal
from quartstack.integrations.redis.client import RedisClient, RedisDataError
from quartstack.metrics import IDEMPOTENCY_NOT_ENFORCED
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.web.problems import Problem

logger = logging.getLogger("quartstack.idempotency")

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_KEPT_HEADERS = ("Content-Type", "Location", "ETag")
_RUNNING_TTL = 300  # a crashed request frees its key after this


class IdempotencyUnsupported(Exception):
    """Redis refused ``SET NX GET``: it is older than 7.0."""


class IdempotencyStore:
    """The records in Redis: claim a key, keep a finished response, free a key."""

    def __init__(
        self, redis: RedisClient, ttl: int, max_stored_bytes: int, timeout: float | None = None
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.max_stored_bytes = max_stored_bytes
        self.timeout = timeout  # of every call: all of them fail open; None: the backend's

    def redis_key(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.redis.key(f"idem:{{{digest}}}")

    async def claim(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """Claim ``key``; return None if claimed now, else the stored record."""
        record = json.dumps({"state": "running", "fingerprint": fingerprint})
        redis_key = self.redis_key(key)

        # SET NX GET (Redis >= 7.0): claim and read the previous record in one atomic step.
        try:
            stored = await self.redis.run(
                "idempotency_claim",
                lambda c: c.set(redis_key, record, nx=True, get=True, ex=_RUNNING_TTL),
                timeout=self.timeout,
            )
        except ResponseError as exc:  # Redis 6 answers "syntax error"
            raise IdempotencyUnsupported() from exc
        if stored is None:
            return None
        try:
            result: dict[str, Any] = json.loads(stored)
        except ValueError:  # not a record we wrote
            raise RedisDataError() from None
        return result

    def record(self, fingerprint: str, response: Response, body: bytes) -> dict[str, Any]:
        """What is kept of a finished request: the whole response, or above the size
        limit only its status and digest."""
        headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
        record: dict[str, Any] = {
            "state": "done",
            "fingerprint": fingerprint,
            "status": response.status_code,
            "headers": headers,
        }
        if len(body) > self.max_stored_bytes:
            record["digest"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
        else:
            record["body"] = base64.b64encode(body).decode()
        return record

    async def complete(self, key: str, record: dict[str, Any]) -> None:
        await self.redis.run(
            "idempotency_store",
            lambda c: c.set(self.redis_key(key), json.dumps(record), ex=self.ttl),
            timeout=self.timeout,
        )

    async def release(self, key: str) -> None:
        await self.redis.run(
            "idempotency_release", lambda c: c.delete(self.redis_key(key)), timeout=self.timeout
        )


async def _fingerprint() -> str:
    body = await request.get_data(as_text=False)
    if isinstance(body, str):
        body = body.encode()
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.full_path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _replay(record: dict[str, Any]) -> Response:
    if "body" not in record:
        raise Problem(
            409,
            "idempotency-response-not-stored",
            f"The response to this Idempotency-Key (status {record['status']}) was too large "
            "to keep, so it cannot be replayed; the request was processed once.",
            headers={
                "Idempotency-Original-Status": str(record["status"]),
                "Idempotency-Original-Digest": f"sha-256=:{record['digest']}:",
            },
        )
    response = Response(
        base64.b64decode(record["body"]), status=record["status"], headers=record["headers"]
    )
    response.headers["Idempotency-Replayed"] = "true"
    return response


class _NotEnforced:
    """Counts every keyed request processed without the guarantee; logs once per reason
    until a claim succeeds again (one line per outage, not one per request)."""

    def __init__(self) -> None:
        self._logged: set[str] = set()

    def __call__(self, reason: str) -> None:
        IDEMPOTENCY_NOT_ENFORCED.labels(reason).inc()
        if reason not in self._logged:
            self._logged.add(reason)
            logger.warning("idempotency not enforced", extra={"reason": reason})

    def restored(self) -> None:
        self._logged.clear()


class KeyClaims:
    """The request hook: claim a POST's ``Idempotency-Key``, or answer from its record."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store
        self.not_enforced = _NotEnforced()

    async def claim(self) -> Response | None:
        if request.method != "POST":
            return None
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not _VALID_KEY.fullmatch(key):
            raise Problem(
                400,
                "invalid-idempotency-key",
                "Idempotency-Key must be 1-255 visible ASCII characters.",
            )
        fingerprint = await _fingerprint()
        principal = current_principal()
        if principal is not None:  # one principal can neither replay nor block another's key
            key = f"{principal.id}\n{key}"
        try:
            stored = await self.store.claim(key, fingerprint)
        except RedisDataError:
            self.not_enforced("unreadable_record")
            return None
        except BackendError:
            self.not_enforced("redis_unavailable")
            return None
        except IdempotencyUnsupported:
            self.not_enforced("unsupported_server")
            return None
        self.not_enforced.restored()
        if stored is None:
            g.idempotency = (key, fingerprint)
            return None
        if stored["fingerprint"] != fingerprint:
            raise Problem(
                422,
                "idempotency-key-reused",
                "This Idempotency-Key was already used for a different request.",
            )
        if stored["state"] == "running":
            raise Problem(
                409,
                "idempotency-in-progress",
                "A request with this Idempotency-Key is still being processed.",
                headers={"Retry-After": "1"},
            )
        return _replay(stored)


class ResponseRecords:
    """The response hooks: keep the answer to a claimed key for its retries, or free
    the key when there is no answer worth keeping."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def keep(self, response: Response) -> Response:
        claimed = getattr(g, "idempotency", None)
        if claimed is None:
            return response
        g.idempotency = None
        key, fingerprint = claimed
        try:
            if response.status_code >= 500 or response.status_code == 429:
                await self.store.release(key)  # not an answer to keep: the client retries
                return response
            body: bytes = await response.get_data(as_text=False)
            await self.store.complete(key, self.store.record(fingerprint, response, body))
        except BackendError:
            logger.warning("idempotent response not stored: redis unavailable")
        return response

    async def release_abandoned(self, _exc: BaseException | None) -> None:
        claimed = getattr(g, "idempotency", None)
        if claimed is not None:  # no response was produced (client went away)
            with contextlib.suppress(BackendError):
                await self.store.release(claimed[0])


class Idempotency:
    """``Idempotency-Key`` for every POST when Redis is configured (init it after Redis
    and after the rate limiter: a refused request must not claim a key)."""

    KEY = "quartstack.idempotency"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: IdempotencyStore | None = None

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        redis = app.extensions.get(RedisClient.name)
        if not isinstance(redis, RedisClient):
            return
        self.store = IdempotencyStore(
            redis,
            self.settings.idempotency_ttl_seconds,
            self.settings.idempotency_max_stored_bytes,
            self.settings.idempotency_timeout_seconds,
        )
        records = ResponseRecords(self.store)
        app.before_request(KeyClaims(self.store).claim)
        app.after_request(records.keep)
        app.teardown_request(records.release_abandoned)
