"""Dynamic credentials: one Vault lease per backend, renewed, rotated and revoked.

With ``<NAME>_CREDENTIALS=dynamic`` a backend's user and password come from a
Vault secrets engine (``<VAULT_DATABASE_MOUNT>/creds/<role>``) instead of KV.
Each such secret is a lease: Vault drops the database user when it ends. The
:class:`LeaseKeeper` renews the lease at about two thirds of its TTL; once a
renewal no longer grants a full TTL (the lease's max TTL is near), the lease is
unknown to Vault, or the lease is about to end while renewals keep failing, it
asks the backend to rebuild its pool, which fetches new credentials (a new
lease); so it does when the Vault client logged in again, since Vault revokes
the leases of a token when that token ends. In-flight requests finish on the
old pool, then the old lease is revoked. While Vault is unreachable the current
credentials stay in use until they end. On shutdown the keeper revokes what it
holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import hvac.exceptions

from quartstack.integrations.vault.client import VaultAccessDenied, VaultClient
from quartstack.metrics import VAULT_LEASE_RENEWALS, VAULT_LEASE_ROTATIONS, VAULT_LEASE_SECONDS_LEFT
from quartstack.redaction import register_secret
from quartstack.resilience import BackendError, BackendUnavailable

logger = logging.getLogger("quartstack.leases")

#: A renewal granting less than this share of the lease's TTL means its max TTL is near.
_FULL_TTL_SHARE = 0.9
#: Rotate rather than keep retrying a renewal once this share of the TTL is left.
_LAST_CHANCE_SHARE = 0.2
_MIN_WAIT = 0.2
#: How often the keeper looks whether the Vault client logged in again.
_TICK = 1.0


@dataclass
class Lease:
    """One dynamic secret: its id, the credentials and when it ends (monotonic)."""

    lease_id: str
    user: str
    password: str
    ttl: float
    renewable: bool
    expires_at: float
    generation: int  # the Vault client's login that issued it

    @property
    def seconds_left(self) -> float:
        return self.expires_at - time.monotonic()


class LeaseKeeper:
    """Holds ``service``'s current lease and keeps it alive; ``rotate`` rebuilds the
    backend's pool (which calls :meth:`issue` through the credential provider)."""

    def __init__(
        self,
        service: str,
        vault: VaultClient,
        creds_path: str,
        rotate: Callable[[], Awaitable[None]],
    ) -> None:
        self.service = service
        self.vault = vault
        self.creds_path = creds_path
        self._rotate_backend = rotate
        self.current: Lease | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        VAULT_LEASE_SECONDS_LEFT.labels(service).set_function(self._seconds_left)

    def _seconds_left(self) -> float:
        lease = self.current
        return max(0.0, lease.seconds_left) if lease is not None else 0.0

    async def get(self, *, fresh: bool) -> Lease:
        """The current lease, or a new one if ``fresh``, if there is none or it ended."""
        async with self._lock:
            lease = self.current
            if fresh or lease is None or lease.seconds_left <= 0:
                lease = await self._issue()
            return lease

    async def _issue(self) -> Lease:
        path = self.creds_path
        generation = self.vault.generation
        try:
            response: dict[str, Any] = await self.vault.call("lease_issue", lambda c: c.read(path))
        except VaultAccessDenied:
            raise BackendUnavailable(
                "vault", f"the vault policy does not let the service read {path}"
            ) from None
        except hvac.exceptions.InvalidPath:
            raise BackendUnavailable("vault", f"vault has no role at {path}") from None
        data = response["data"]
        register_secret(data["password"], owner=f"vault:lease:{self.service}")
        ttl = float(response["lease_duration"])
        lease = Lease(
            lease_id=response["lease_id"],
            user=data["username"],
            password=data["password"],
            ttl=ttl,
            renewable=bool(response["renewable"]),
            expires_at=time.monotonic() + ttl,
            generation=generation,
        )
        self.current = lease
        logger.info(
            "dynamic credentials issued",
            extra={"service": self.service, "ttl_s": ttl, "lease_id": lease.lease_id},
        )
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name=f"{self.service}-lease")
        return lease

    # --- keeping it alive --------------------------------------------------------------
    async def _keep(self) -> None:
        renew_at = backoff_until = 0.0
        lease: Lease | None = None
        while True:
            if self.current is not lease:  # new (issued here or after a rejection)
                lease = self.current
                if lease is None:
                    return
                renew_at = time.monotonic() + max(_MIN_WAIT, lease.seconds_left * 2 / 3)
            await asyncio.sleep(min(_TICK, max(_MIN_WAIT, renew_at - time.monotonic())))
            if lease is None or lease is not self.current or time.monotonic() < backoff_until:
                continue
            # Vault revokes a token's leases when the token ends: after a new login,
            # move to credentials issued under the new token while the old one lives.
            relogged = self.vault.generation != lease.generation
            if not relogged and time.monotonic() < renew_at:
                continue
            try:
                if not relogged and lease.renewable and not await self._renew(lease):
                    renew_at = time.monotonic() + max(_MIN_WAIT, lease.seconds_left * 2 / 3)
                    continue
                await self._rotate(lease)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must survive anything, or the lease ends
                logger.warning(
                    "dynamic credentials not renewed",
                    extra={"service": self.service, "reason": str(exc)},
                )
                renew_at = backoff_until = time.monotonic() + max(1.0, lease.seconds_left * 2 / 3)

    async def _renew(self, lease: Lease) -> bool:
        """Renew ``lease``; True when it should be rotated instead (max TTL near, or
        Vault no longer knows it, or renewals keep failing close to its end)."""
        lease_id, increment = lease.lease_id, int(lease.ttl)
        try:
            response: dict[str, Any] = await self.vault.call(
                "lease_renew", lambda c: c.sys.renew_lease(lease_id=lease_id, increment=increment)
            )
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):
            VAULT_LEASE_RENEWALS.labels(self.service, "failed").inc()
            return True  # expired or revoked: only new credentials help
        except (BackendError, VaultAccessDenied) as exc:
            VAULT_LEASE_RENEWALS.labels(self.service, "failed").inc()
            last_chance = lease.seconds_left < lease.ttl * _LAST_CHANCE_SHARE
            logger.warning(
                "dynamic credentials lease renewal failed; keeping the current ones",
                extra={"service": self.service, "reason": str(exc), "left_s": lease.seconds_left},
            )
            return last_chance
        granted = float(response["lease_duration"])
        lease.expires_at = time.monotonic() + granted
        VAULT_LEASE_RENEWALS.labels(self.service, "renewed").inc()
        return granted < lease.ttl * _FULL_TTL_SHARE

    async def _rotate(self, old: Lease) -> None:
        """New credentials and a new pool, then the old lease is revoked."""
        try:
            await self._rotate_backend()
            if self.current is old:  # the backend had no pool to rebuild
                await self.get(fresh=True)
        except Exception:
            VAULT_LEASE_ROTATIONS.labels(self.service, "failed").inc()
            raise
        VAULT_LEASE_ROTATIONS.labels(self.service, "rotated").inc()
        logger.info("dynamic credentials rotated", extra={"service": self.service})
        await self._revoke(old)

    async def _revoke(self, lease: Lease) -> None:
        lease_id = lease.lease_id
        try:
            await self.vault.call("lease_revoke", lambda c: c.sys.revoke_lease(lease_id=lease_id))
        except Exception as exc:  # best effort: the lease still ends with its TTL
            logger.warning(
                "dynamic credentials lease not revoked",
                extra={"service": self.service, "reason": type(exc).__name__},
            )

    async def release(self) -> None:
        """Stop renewing and revoke the current lease (its database user goes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lease, self.current = self.current, None
        if lease is not None:
            await self._revoke(lease)
            logger.info("dynamic credentials revoked", extra={"service": self.service})
