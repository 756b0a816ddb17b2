"""A small Vault-API-compatible server: the subset of Vault's HTTP API quartstack uses.

It speaks Vault's real envelopes, status codes and token header so the service's
client code runs unchanged: ``sys/health``, ``sys/seal``/``unseal``, AppRole roles,
role-id, secret-id and login, ``auth/token/lookup-self`` and ``renew-self`` (TTL,
renewable, max TTL), KV v2 read/write/delete under ``secret/``, and 403 for a
missing, wrong or expired ``X-Vault-Token``. Test switches (latency, forced
failures, counters) live under ``/_test/`` where no Vault client looks.

Run: ``python -m tests.vault_server.server --port N --root-token T``
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Token:
    id: str
    accessor: str
    policies: list[str]
    ttl: int  # 0 = never expires (root)
    max_ttl: int
    renewable: bool
    issued: float = field(default_factory=time.time)
    expires: float = 0.0
    meta: dict[str, str] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        return self.ttl > 0 and now >= self.expires

    def remaining(self, now: float) -> int:
        return 0 if self.ttl == 0 else max(0, int(self.expires - now))


@dataclass
class Role:
    name: str
    role_id: str
    token_ttl: int = 60
    token_max_ttl: int = 3600
    renewable: bool = True
    secret_ids: set[str] = field(default_factory=set)


class VaultState:
    def __init__(self, root_token: str) -> None:
        self.lock = threading.Lock()
        self.sealed = False
        self.latency = 0.0
        self.failure: int | None = None
        self.tokens: dict[str, Token] = {
            root_token: Token(root_token, uuid.uuid4().hex, ["root"], 0, 0, False)
        }
        self.roles: dict[str, Role] = {}
        self.kv: dict[str, list[dict[str, Any]]] = {}  # path -> versions
        self.counts: dict[str, int] = {}


class Handler(BaseHTTPRequestHandler):
    server_version = "VaultTestServer"
    protocol_version = "HTTP/1.1"
    state: VaultState

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # --- plumbing ------------------------------------------------------------------
    def _send(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _errors(self, status: int, *messages: str) -> None:
        self._send(status, {"errors": list(messages)})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _token(self) -> Token | None:
        value = self.headers.get("X-Vault-Token")
        if not value and self.headers.get("Authorization", "").startswith("Bearer "):
            value = self.headers["Authorization"][7:]
        if not value:
            return None
        token = self.state.tokens.get(value)
        if token is None or token.expired(time.time()):
            return None
        return token

    def _envelope(self, data: Any = None, auth: Any = None, lease: int = 0) -> dict[str, Any]:
        return {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": lease,
            "data": data,
            "wrap_info": None,
            "warnings": None,
            "auth": auth,
            "mount_type": "",
        }

    def _auth_block(self, token: Token, now: float) -> dict[str, Any]:
        return {
            "client_token": token.id,
            "accessor": token.accessor,
            "policies": token.policies,
            "token_policies": token.policies,
            "metadata": token.meta,
            "lease_duration": token.remaining(now),
            "renewable": token.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
        }

    # --- dispatch ------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_LIST(self) -> None:
        self._dispatch("LIST")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        st = self.state
        if path.startswith("/_test/"):
            self._control(method, path)
            return
        with st.lock:
            st.counts[path] = st.counts.get(path, 0) + 1
            latency, failure, sealed = st.latency, st.failure, st.sealed
        if latency:
            time.sleep(latency)
        if failure:
            self._errors(failure, "test failure injected")
            return
        if path == "/v1/sys/health":
            self._health(sealed)
            return
        if path == "/v1/sys/seal-status":
            self._send(
                200,
                {
                    "type": "shamir",
                    "initialized": True,
                    "sealed": sealed,
                    "t": 1,
                    "n": 1,
                    "progress": 0,
                    "version": "1.17.0",
                },
            )
            return
        if path == "/v1/sys/unseal" and method in ("PUT", "POST"):
            with st.lock:
                st.sealed = False
            self._send(200, {"sealed": False, "t": 1, "n": 1, "progress": 0})
            return
        if sealed:
            self._errors(503, "Vault is sealed")
            return
        if path == "/v1/auth/approle/login" and method in ("PUT", "POST"):
            self._approle_login()
            return
        token = self._token()
        if token is None:
            self._errors(403, "permission denied")
            return
        self._authenticated(method, path, token)

    def _health(self, sealed: bool) -> None:
        body = {
            "initialized": True,
            "sealed": sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": "1.17.0",
            "cluster_name": "vault-test",
            "cluster_id": "test",
        }
        self._send(503 if sealed else 200, body)

    def _approle_login(self) -> None:
        body = self._body()
        role_id, secret_id = body.get("role_id"), body.get("secret_id")
        st = self.state
        with st.lock:
            role = next((r for r in st.roles.values() if r.role_id == role_id), None)
            if role is None or secret_id not in role.secret_ids:
                self._errors(400, "invalid role or secret ID")
                return
            now = time.time()
            token = Token(
                "hvs." + secrets.token_urlsafe(24),
                uuid.uuid4().hex,
                ["default", role.name],
                role.token_ttl,
                role.token_max_ttl,
                role.renewable,
                issued=now,
                expires=now + role.token_ttl,
                meta={"role_name": role.name},
            )
            st.tokens[token.id] = token
        self._send(200, self._envelope(auth=self._auth_block(token, now)))

    def _authenticated(self, method: str, path: str, token: Token) -> None:
        now = time.time()
        st = self.state
        if path == "/v1/auth/token/lookup-self" and method == "GET":
            data = {
                "accessor": token.accessor,
                "id": token.id,
                "policies": token.policies,
                "ttl": token.remaining(now),
                "creation_ttl": token.ttl,
                "explicit_max_ttl": token.max_ttl,
                "renewable": token.renewable,
                "issue_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.issued)),
                "meta": token.meta,
                "type": "service",
                "orphan": True,
            }
            self._send(200, self._envelope(data=data))
            return
        if path == "/v1/auth/token/renew-self" and method in ("PUT", "POST"):
            if not token.renewable:
                self._errors(400, "lease is not renewable")
                return
            increment = int(self._body().get("increment") or token.ttl)
            with st.lock:
                ceiling = token.issued + token.max_ttl if token.max_ttl else now + increment
                token.expires = min(now + increment, ceiling)
            self._send(200, self._envelope(auth=self._auth_block(token, now)))
            return
        if path.startswith("/v1/auth/approle/role/"):
            self._approle_admin(method, path, token)
            return
        if path.startswith("/v1/secret/data/"):
            self._kv(method, path[len("/v1/secret/data/") :])
            return
        if path.startswith("/v1/secret/metadata/") and method == "DELETE":
            with st.lock:
                st.kv.pop(path[len("/v1/secret/metadata/") :], None)
            self._send(204)
            return
        self._errors(404, f"no handler for route {path!r}")

    def _approle_admin(self, method: str, path: str, token: Token) -> None:
        if "root" not in token.policies:
            self._errors(403, "permission denied")
            return
        parts = path[len("/v1/auth/approle/role/") :].split("/")
        st = self.state
        name = parts[0]
        with st.lock:
            if len(parts) == 1 and method in ("PUT", "POST"):
                body = self._body()
                role = st.roles.get(name) or Role(name, str(uuid.uuid4()))
                role.token_ttl = int(body.get("token_ttl", role.token_ttl))
                role.token_max_ttl = int(body.get("token_max_ttl", role.token_max_ttl))
                if "renewable" in body:
                    role.renewable = bool(body["renewable"])
                st.roles[name] = role
                self._send(204)
                return
            role = st.roles.get(name)
            if role is None:
                self._errors(404, f"role {name!r} does not exist")
                return
            if parts[1:] == ["role-id"] and method == "GET":
                self._send(200, self._envelope(data={"role_id": role.role_id}))
                return
            if parts[1:] == ["secret-id"] and method in ("PUT", "POST"):
                secret_id = str(uuid.uuid4())
                role.secret_ids.add(secret_id)
                self._send(
                    200,
                    self._envelope(
                        data={
                            "secret_id": secret_id,
                            "secret_id_accessor": uuid.uuid4().hex,
                            "secret_id_ttl": 0,
                            "secret_id_num_uses": 0,
                        }
                    ),
                )
                return
            if parts[1:] == ["secret-id", "destroy"] and method in ("PUT", "POST"):
                role.secret_ids.discard(self._body().get("secret_id"))
                self._send(204)
                return
        self._errors(405, "unsupported operation")

    def _kv(self, method: str, name: str) -> None:
        st = self.state
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        with st.lock:
            versions = st.kv.get(name)
            if method == "GET":
                if not versions or versions[-1]["deleted"]:
                    self._send(404, {"errors": []})
                    return
                latest = versions[-1]
                self._send(
                    200,
                    self._envelope(
                        data={
                            "data": latest["data"],
                            "metadata": {
                                "created_time": latest["created"],
                                "custom_metadata": None,
                                "deletion_time": "",
                                "destroyed": False,
                                "version": len(versions),
                            },
                        }
                    ),
                )
                return
            if method in ("PUT", "POST"):
                data = self._body().get("data")
                if not isinstance(data, dict):
                    self._errors(400, "no data provided")
                    return
                versions = st.kv.setdefault(name, [])
                versions.append({"data": data, "created": now, "deleted": False})
                self._send(
                    200,
                    self._envelope(
                        data={
                            "created_time": now,
                            "custom_metadata": None,
                            "deletion_time": "",
                            "destroyed": False,
                            "version": len(versions),
                        }
                    ),
                )
                return
            if method == "DELETE":
                if versions:
                    versions[-1]["deleted"] = True
                self._send(204)
                return
        self._errors(405, "unsupported operation")

    def _control(self, method: str, path: str) -> None:
        st = self.state
        body = self._body() if method in ("PUT", "POST") else {}
        with st.lock:
            if path == "/_test/latency":
                st.latency = float(body.get("seconds", 0))
            elif path == "/_test/failure":
                status = body.get("status")
                st.failure = int(status) if status else None
            elif path == "/_test/seal":
                st.sealed = bool(body.get("sealed", True))
            elif path == "/_test/expire-tokens":
                for token in st.tokens.values():
                    if token.ttl:
                        token.expires = 0
            elif path == "/_test/counts":
                if method == "DELETE":
                    st.counts.clear()
                self._send(200, dict(st.counts))
                return
            else:
                self._errors(404, "unknown control")
                return
        self._send(204)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root-token", required=True)
    args = parser.parse_args()
    Handler.state = VaultState(args.root_token)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
