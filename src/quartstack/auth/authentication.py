"""The request hook that authenticates and authorizes, and the audit line of writes.

It runs before the rate limiter (so limits count per principal) and after the
routing: each route's scope comes from :mod:`quartstack.auth.scopes`. With
``AUTH_MODE=none`` only ``/metrics`` (when ``METRICS_TOKEN`` is set) is guarded,
and a loud warning says so at startup.
"""

from __future__ import annotations

import hmac
import logging

from pydantic import SecretStr
from quart import Quart, Response

from quartstack.auth import api_keys
from quartstack.auth.errors import insufficient_scope, invalid_token, missing_credentials
from quartstack.auth.jwt import InvalidJwt, JwtVerifier
from quartstack.auth.principal import Principal, current_principal, set_principal
from quartstack.auth.scopes import declared_scope, scope_for
from quartstack.integrations.base import get_backend
from quartstack.integrations.vault.client import SecretNotFound, VaultClient
from quartstack.logging_setup import log_info
from quartstack.settings import Settings
from quartstack.web.context import current_quart, current_request
from quartstack.web.headers import optional_header
from quartstack.web.request_steps import request_steps

logger = logging.getLogger("quartstack.auth")
audit_logger = logging.getLogger("quartstack.audit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

OFF_WARNING = (
    "AUTHENTICATION IS OFF (AUTH_MODE=none): anyone who can reach this service can read "
    "secrets, write and delete data and flush caches. Fine on a laptop; anywhere else set "
    "AUTH_MODE=required with AUTH_JWKS_URL/AUTH_JWT_ISSUER/AUTH_JWT_AUDIENCE or "
    "AUTH_API_KEYS_SECRET."
)


class Authentication:
    """Install before :class:`RateLimiting` and after the backends (API keys use Vault)."""

    KEY = "quartstack.authentication"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.required = settings.auth_mode == "required"
        self.jwt = JwtVerifier(settings) if settings.jwt_enabled else None
        self.metrics_token = settings.metrics_token

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        steps = request_steps(app)
        steps.before(self.check_request)
        steps.after(self.audit)
        if not self.required:
            logger.warning(OFF_WARNING)

    async def check_request(self) -> None:
        request = current_request()
        endpoint = request.endpoint
        if request.method == "OPTIONS" or endpoint is None:  # preflight, or 404/405 next
            return
        scope = scope_for(endpoint, current_quart().view_functions.get(endpoint))
        if scope == "public":
            return
        if scope == "metrics":
            check_metrics_token(self.metrics_token)
            return
        if not self.required:
            return
        principal = await self.authenticate()
        set_principal(principal)
        if scope not in principal.scopes:
            raise insufficient_scope(scope, principal.id)

    async def authenticate(self) -> Principal:
        """The principal of the request's credential (``X-API-Key`` or
        ``Authorization: Bearer``), or a 401 problem."""
        api_key = optional_header("X-API-Key")
        authorization = optional_header("Authorization")
        if api_key is not None and authorization is not None:
            raise invalid_token("more than one credential")
        if api_key is not None:
            return await self._api_key(api_key.strip())
        credential = _bearer(authorization)
        if api_keys.looks_like_api_key(credential):
            return await self._api_key(credential)
        if self.jwt is None:
            raise invalid_token("jwt authentication is not configured")
        try:
            return await self.jwt.verify(credential)
        except InvalidJwt as exc:
            raise invalid_token(str(exc)) from None

    async def _api_key(self, credential: str) -> Principal:
        secret = self.settings.auth_api_keys_secret
        if secret is None:
            raise invalid_token("api keys are not configured")
        vault = get_backend("vault", VaultClient)
        try:
            stored = await vault.read_secret(secret)  # cached for VAULT_CACHE_TTL_SECONDS
        except SecretNotFound:
            stored = {}
        try:
            return api_keys.verify(credential, stored)
        except api_keys.InvalidApiKey as exc:
            raise invalid_token(str(exc)) from None

    def audit(self, response: Response) -> Response:
        """One line per write: who, which route, the outcome; no body, no credential."""
        request = current_request()
        rule = request.url_rule
        if request.method in WRITE_METHODS and rule is not None:
            principal = current_principal()
            log_info(
                audit_logger,
                "audit",
                {
                    "principal": principal.id if principal is not None else "anonymous",
                    "method": request.method,
                    "route": rule.rule,
                    "status": response.status_code,
                },
            )
        return response


def check_metrics_token(token: SecretStr | None) -> None:
    """``/metrics`` needs ``Authorization: Bearer <METRICS_TOKEN>`` once the token is set
    (compared in constant time); a 401 problem otherwise."""
    if token is None:
        return
    credential = _bearer(optional_header("Authorization"))
    if not hmac.compare_digest(credential.encode(), token.get_secret_value().encode()):
        raise invalid_token("wrong metrics token")


class MetricsTokenCheck:
    """``METRICS_TOKEN`` on ``/metrics`` alone, for an app without :class:`Authentication`
    (the worker: its only other routes are the probes, which stay open)."""

    def __init__(self, settings: Settings) -> None:
        self.token = settings.metrics_token

    def init_app(self, app: Quart) -> None:
        if self.token is not None:
            request_steps(app).before(self.check_request)

    def check_request(self) -> None:
        endpoint = current_request().endpoint
        if endpoint is None:  # 404/405 next
            return
        if declared_scope(endpoint, current_quart().view_functions.get(endpoint)) == "metrics":
            check_metrics_token(self.token)


def _bearer(authorization: str | None) -> str:
    if authorization is None:
        raise missing_credentials()
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise invalid_token("not a bearer credential")
    return credential.strip()
