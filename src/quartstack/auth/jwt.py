"""JWT bearer tokens from an OIDC issuer, verified with PyJWT.

Checks, each a 401 ``invalid_token`` when it fails: the header's ``alg`` is in
``AUTH_JWT_ALGORITHMS`` (asymmetric only, so neither ``none`` nor HS256 signed with
the public key passes), it names a ``kid`` the JWKS has, the key's type fits the
algorithm, the signature verifies, ``exp``/``nbf``/``iat`` hold within
``AUTH_CLOCK_SKEW_SECONDS``, and ``iss``/``aud`` are the configured ones (required).
Scopes come from ``scope`` (space-separated) or ``scp`` (a list).
"""

from __future__ import annotations

from typing import Any

import jwt

from quartstack.auth.jwks import JwksCache
from quartstack.auth.principal import Principal
from quartstack.settings import Settings

#: The JWK key type each algorithm family needs.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class InvalidJwt(Exception):
    """Why a token was refused; fit to log (never contains the token)."""


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        assert settings.auth_jwt_issuer is not None and settings.auth_jwt_audience is not None
        self.issuer = settings.auth_jwt_issuer
        self.audience = settings.auth_jwt_audience
        self.algorithms = frozenset(settings.auth_jwt_algorithms)
        self.leeway = settings.auth_clock_skew_seconds
        self.jwks = JwksCache(settings)

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidJwt("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidJwt("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidJwt("token names no kid")
        key = await self.jwks.key_for(kid)
        if key is None:
            raise InvalidJwt("unknown kid")
        if key.key_type != _KEY_TYPES.get(alg[:2]) or (key.alg or alg) != alg:
            raise InvalidJwt("key does not fit the algorithm")
        claims = self._decode(token, key.key, alg)
        return principal_from_claims(claims)

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidJwt("token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidJwt("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise InvalidJwt("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidJwt("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidJwt("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidJwt(f"missing claim {exc.claim}") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidJwt("invalid token") from None
        return claims


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """``scope`` (RFC 8693, space-separated) or ``scp`` (a list, as Azure AD/Okta send)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        return frozenset(scp.split())
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    return frozenset()


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    subject = str(claims["sub"])
    name = claims.get("azp") or claims.get("client_id") or subject
    return Principal(id=f"jwt:{subject}", kind="jwt", name=str(name), scopes=scopes_of(claims))
