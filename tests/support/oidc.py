"""A test OIDC issuer: real RSA and EC keys (``cryptography``), its JWKS served over
HTTP on a free loopback port, tokens minted with PyJWT.

The server counts the JWKS fetches it answers, so a test can see how often the
service refetched; :meth:`TestIssuer.rotate` replaces the signing key the way an
issuer rotates (the old key leaves the JWKS, a new ``kid`` appears).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support.net import free_port

JWKS_PATH = "/.well-known/jwks.json"


@dataclass
class IssuerKey:
    kid: str
    alg: str
    private: Any

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        data: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}


def rsa_key(alg: str = "RS256") -> IssuerKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return IssuerKey("rsa-" + secrets.token_hex(4), alg, private)


def ec_key(alg: str = "ES256") -> IssuerKey:
    return IssuerKey("ec-" + secrets.token_hex(4), alg, ec.generate_private_key(ec.SECP256R1()))


class TestIssuer:
    """An OIDC issuer's JWKS endpoint and token minting (use as a context manager)."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, audience: str = "quartstack-tests") -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/"
        self.audience = audience
        self.keys = [rsa_key(), ec_key()]
        self.fetches = 0
        self._lock = threading.Lock()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with issuer._lock:
                    issuer.fetches += 1
                    body = json.dumps({"keys": [key.jwk() for key in issuer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    def settings(self, **extra: Any) -> dict[str, Any]:
        """App settings that trust this issuer, with AUTH_MODE=required."""
        return {
            "auth_mode": "required",
            "auth_jwt_issuer": self.issuer,
            "auth_jwt_audience": self.audience,
            "auth_jwks_url": self.jwks_url,
            **extra,
        }

    def take_fetches(self) -> int:
        with self._lock:
            seen, self.fetches = self.fetches, 0
        return seen

    def rotate(self) -> IssuerKey:
        """A new RSA signing key replaces the current one (first in the list)."""
        new = rsa_key()
        with self._lock:
            self.keys = [new, *self.keys[1:]]
        return new

    def claims(self, scopes: str = "read", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "user-" + secrets.token_hex(4),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "scope": scopes,
        }
        return {k: v for k, v in {**base, **overrides}.items() if v is not None}

    def mint(
        self,
        scopes: str = "read",
        *,
        key: IssuerKey | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by ``key`` (default: the current RSA key)."""
        key = key or self.keys[0]
        return jwt.encode(
            self.claims(scopes, **claims),
            key.private,
            algorithm=key.alg,
            headers={"kid": key.kid, **(headers or {})},
        )

    def __enter__(self) -> TestIssuer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
