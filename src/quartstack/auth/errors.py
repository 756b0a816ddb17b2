"""RFC 6750 answers as problem+json: 401 with ``WWW-Authenticate: Bearer``, 403 for a
missing scope. The reason is logged (never the credential); the client learns the
error code, not which check failed beyond that."""

from __future__ import annotations

import logging

from quartstack.web.problems import Problem

logger = logging.getLogger("quartstack.auth")

REALM = "quartstack"


def missing_credentials() -> Problem:
    """No credential at all: RFC 6750 §3.1 says no error code then."""
    logger.info("authentication required", extra={"reason": "no credentials"})
    return Problem(
        401,
        "unauthorized",
        "This route needs a bearer token or an API key.",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
    )


def invalid_token(reason: str) -> Problem:
    """A credential that is malformed, expired, not yet valid, wrongly signed, for
    another audience or issuer, or unknown: ``error="invalid_token"``. ``reason`` is
    logged, and must never contain the token."""
    logger.info("authentication failed", extra={"reason": reason})
    return Problem(
        401,
        "invalid-token",
        "The credential is invalid, expired or not accepted here.",
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="{REALM}", error="invalid_token", '
                'error_description="the credential is not valid"'
            )
        },
    )


def insufficient_scope(scope: str, principal_id: str) -> Problem:
    """Authenticated, but without the scope the route needs."""
    logger.info(
        "authorization failed",
        extra={"reason": "insufficient scope", "scope": scope, "principal": principal_id},
    )
    return Problem(
        403,
        "insufficient-scope",
        f"This route needs the '{scope}' scope.",
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"'
            )
        },
    )
