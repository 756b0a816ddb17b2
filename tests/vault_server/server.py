"""A small Vault-API-compatible server: the subset of Vault's HTTP API quartstack uses.

It speaks Vault's real paths, envelopes, status codes and token header, so the
service's hvac code runs unchanged against it:

- ``sys/health`` (200 active, 429 standby, 501 uninitialized, 503 sealed, with
  Vault's ``standbyok``/``*code`` query parameters), ``sys/seal-status``,
  ``sys/seal`` (root), ``sys/unseal`` (any key unseals), ``sys/mounts/<path>``
  (enable another KV v2 mount, root);
- AppRole: ``auth/approle/role/<name>`` (``token_ttl``, ``token_max_ttl``,
  ``token_num_uses``, ``token_type``, ``token_policies``, ``secret_id_num_uses``;
  root), ``role-id``, ``secret-id``, ``secret-id/destroy``, and ``login``;
- tokens: ``auth/token/create`` (root), ``lookup-self``, ``renew-self`` (renewable
  and max TTL respected: the TTL is extended but capped at the max), ``revoke-self``,
  ``accessors`` (LIST, root: the accessor of every live token);
- KV v2 under every enabled mount (``secret`` by default): ``data/<path>`` read
  (``?version=``), write, soft delete, and ``metadata/<path>`` delete.

Every path but ``sys/health``, ``sys/seal-status``, ``sys/unseal`` and the AppRole
login needs a live ``X-Vault-Token`` (403 ``permission denied`` otherwise); a
sealed server answers 503 ``Vault is sealed`` to everything else. Test switches
(latency, forced failures, standby, expiring every token, request counts) live
under ``/_test/``, where no Vault client looks.

Run: ``python -m tests.vault_server.server --port N --root-token T [--parent-pid P]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSION = "1.17.2"
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: Any, default: int = 0) -> int:
    """Vault accepts durations as integer seconds or strings like ``"90s"``, ``"1h"``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError("duration must be a number or a duration string")
    if isinstance(value, int | float):
        return int(value)
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise ValueError(f"invalid duration {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + "Z"


@dataclass
class Token:
    id: str
    policies: list[str]
    ttl: int  # seconds granted at creation; 0 = never expires (root)
    max_ttl: int  # 0 = no max (only for ttl == 0)
    renewable: bool
    num_uses: int = 0  # 0 = unlimited; otherwise uses left
    token_type: str = "service"
    meta: dict[str, str] = field(default_factory=dict)
    accessor: str = field(default_factory=lambda: uuid.uuid4().hex)
    issued: float = field(default_factory=time.time)
    expires: float = 0.0  # absolute; meaningless when ttl == 0

    def __post_init__(self) -> None:
        if self.ttl and not self.expires:
            self.expires = self.issued + self.ttl

    def expired(self, now: float) -> bool:
        return self.ttl > 0 and now >= self.expires

    def remaining(self, now: float) -> int:
        return 0 if self.ttl == 0 else max(0, round(self.expires - now))

    def auth_block(self, now: float) -> dict[str, Any]:
        return {
            "client_token": self.id,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": self.policies,
            "metadata": self.meta,
            "lease_duration": self.remaining(now),
            "renewable": self.renewable,
            "entity_id": "",
            "token_type": self.token_type,
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": self.num_uses,
        }


@dataclass
class Role:
    name: str
    role_id: str
    token_ttl: int = 2764800  # Vault's default TTL: 32 days
    token_max_ttl: int = 2764800
    token_num_uses: int = 0
    token_type: str = "default"
    token_policies: list[str] = field(default_factory=list)
    secret_id_num_uses: int = 0
    secret_ids: dict[str, int] = field(default_factory=dict)  # secret-id -> uses left (0 = inf)

    def settings(self) -> dict[str, Any]:
        return {
            "bind_secret_id": True,
            "token_ttl": self.token_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_num_uses": self.token_num_uses,
            "token_type": self.token_type,
            "token_policies": self.token_policies,
            "secret_id_num_uses": self.secret_id_num_uses,
            "secret_id_ttl": 0,
        }


@dataclass
class Version:
    data: dict[str, Any]
    created: float
    deleted: float | None = None

    def metadata(self, number: int) -> dict[str, Any]:
        return {
            "created_time": _iso(self.created),
            "custom_metadata": None,
            "deletion_time": "" if self.deleted is None else _iso(self.deleted),
            "destroyed": False,
            "version": number,
        }


class VaultState:
    """Everything the server knows; every access holds ``lock``."""

    def __init__(self, root_token: str) -> None:
        self.lock = threading.Lock()
        self.initialized = True
        self.sealed = False
        self.standby = False
        self.latency = 0.0
        self.latency_prefix = ""  # only paths starting with this are held ("" = all)
        self.failure: int | None = None
        self.tokens: dict[str, Token] = {root_token: Token(root_token, ["root"], 0, 0, False)}
        self.roles: dict[str, Role] = {}
        self.kv: dict[str, dict[str, list[Version]]] = {"secret": {}}  # mount -> path -> versions
        self.counts: dict[str, int] = {}


class VaultError(Exception):
    """Answer ``status`` with Vault's error body ``{"errors": [...]}``."""

    def __init__(self, status: int, *messages: str) -> None:
        super().__init__(status, messages)
        self.status = status
        self.messages = list(messages)


def _forbidden() -> VaultError:
    return VaultError(403, "permission denied")


def _unsupported() -> VaultError:
    return VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


class Handler(BaseHTTPRequestHandler):
    server_version = "VaultTestServer"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # like Vault (Go): headers and body leave at once
    state: VaultState

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the tests read the service's logs, not ours

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_LIST(self) -> None:
        self._dispatch("LIST")

    # --- plumbing ------------------------------------------------------------------
    def _send(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None or status == 204 else json.dumps(body).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> dict[str, Any]:
        """Read the whole body first, always: an unread body would corrupt the next
        request on this keep-alive connection."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise VaultError(400, "failed to parse JSON input") from None
        if not isinstance(data, dict):
            raise VaultError(400, "failed to parse JSON input")
        return data

    def _envelope(
        self, data: Any = None, auth: Any = None, warnings: list[str] | None = None
    ) -> dict[str, Any]:
        return {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": warnings,
            "auth": auth,
            "mount_type": "",
        }

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            body = self._read_body()
            if path.startswith("/_test/"):
                self._control(method, path, body)
                return
            st = self.state
            with st.lock:
                st.counts[path] = st.counts.get(path, 0) + 1
                latency, failure = st.latency, st.failure
                if not path.startswith(st.latency_prefix):
                    latency = 0.0
            if latency:
                # Held for ``latency`` seconds, or until a test lowers it to 0: a test can
                # hold answers for "as long as it looks" and release them when done.
                deadline = time.monotonic() + latency
                while time.monotonic() < deadline and st.latency:
                    time.sleep(0.01)
            if failure:
                raise VaultError(failure, "injected failure (test server)")
            if not path.startswith("/v1/"):
                raise VaultError(404, "no handler for route")
            with st.lock:
                status, response = self._route(method, path[len("/v1/") :], query, body)
        except VaultError as exc:
            status, response = exc.status, {"errors": exc.messages}
        self._send(status, response)

    # --- routing (called with the state lock held) ---------------------------------
    def _route(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        st = self.state
        if path == "sys/health" and method in ("GET", "HEAD"):
            return self._health(query)
        if path == "sys/seal-status" and method == "GET":
            return 200, self._seal_status()
        if path == "sys/unseal" and method in ("PUT", "POST"):
            if body.get("reset"):
                return 200, self._seal_status()
            if not body.get("key"):
                raise VaultError(400, "'key' must be specified in request body as JSON")
            st.sealed = False
            return 200, self._seal_status()
        if not st.initialized:
            raise VaultError(503, "Vault is not initialized")
        if st.sealed:
            raise VaultError(503, "Vault is sealed")
        if path == "auth/approle/login" and method in ("PUT", "POST"):
            return self._approle_login(body)
        token = self._use_token()
        now = time.time()
        if path == "sys/seal" and method in ("PUT", "POST"):
            self._require_root(token)
            st.sealed = True
            return 204, None
        if path.startswith("sys/mounts/") and method in ("PUT", "POST"):
            self._require_root(token)
            return self._enable_mount(path[len("sys/mounts/") :], body)
        if path == "auth/token/lookup-self" and method == "GET":
            return 200, self._envelope(data=self._lookup(token, now))
        if path == "auth/token/renew-self" and method in ("PUT", "POST"):
            return self._renew(token, body, now)
        if path == "auth/token/revoke-self" and method in ("PUT", "POST"):
            st.tokens.pop(token.id, None)
            return 204, None
        if path == "auth/token/accessors" and (method == "LIST" or query.get("list") == "true"):
            self._require_root(token)
            return 200, self._envelope(data={"keys": [t.accessor for t in st.tokens.values()]})
        if path == "auth/token/create" and method in ("PUT", "POST"):
            self._require_root(token)
            return self._create_token(body, now)
        if path.startswith("auth/approle/role/"):
            self._require_root(token)
            return self._approle_admin(method, path[len("auth/approle/role/") :], body)
        mount, _, rest = path.partition("/")
        if mount in st.kv:
            return self._kv(method, st.kv[mount], rest, query, body)
        raise VaultError(404, f'no handler for route "{path}". route entry not found.')

    def _health(self, query: dict[str, str]) -> tuple[int, Any]:
        st = self.state
        if not st.initialized:
            status = int(query.get("uninitcode", 501))
        elif st.sealed:
            status = int(query.get("sealedcode", 503))
        elif st.standby and query.get("standbyok", "false").lower() != "true":
            status = int(query.get("standbycode", 429))
        else:
            status = int(query.get("activecode", 200))
        body = {
            "initialized": st.initialized,
            "sealed": st.sealed,
            "standby": st.standby or st.sealed,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": VERSION,
            "cluster_name": "vault-cluster-test",
            "cluster_id": "3e2c1f0a-0000-4000-8000-000000000000",
        }
        return status, body

    def _seal_status(self) -> dict[str, Any]:
        st = self.state
        return {
            "type": "shamir",
            "initialized": st.initialized,
            "sealed": st.sealed,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": VERSION,
            "build_date": "2024-08-01T00:00:00Z",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "inmem",
        }

    # --- tokens --------------------------------------------------------------------
    def _use_token(self) -> Token:
        """The request's live token, one use spent; 403 if missing, wrong or expired."""
        value = self.headers.get("X-Vault-Token")
        authorization = self.headers.get("Authorization", "")
        if not value and authorization.startswith("Bearer "):
            value = authorization[len("Bearer ") :]
        st = self.state
        token = st.tokens.get(value or "")
        if token is None:
            raise _forbidden()
        if token.expired(time.time()):
            del st.tokens[token.id]
            raise _forbidden()
        if token.num_uses:
            token.num_uses -= 1
            if token.num_uses == 0:
                del st.tokens[token.id]  # this was its last use
        return token

    @staticmethod
    def _require_root(token: Token) -> None:
        if "root" not in token.policies:
            raise _forbidden()

    def _lookup(self, token: Token, now: float) -> dict[str, Any]:
        return {
            "accessor": token.accessor,
            "creation_time": int(token.issued),
            "creation_ttl": token.ttl,
            "display_name": "approle" if token.meta.get("role_name") else "token",
            "entity_id": "",
            "expire_time": None if token.ttl == 0 else _iso(token.expires),
            "explicit_max_ttl": 0,
            "id": token.id,
            "issue_time": _iso(token.issued),
            "meta": token.meta or None,
            "num_uses": token.num_uses,
            "orphan": True,
            "path": "auth/approle/login" if token.meta.get("role_name") else "auth/token/create",
            "policies": token.policies,
            "renewable": token.renewable,
            "ttl": token.remaining(now),
            "type": token.token_type,
        }

    def _renew(self, token: Token, body: dict[str, Any], now: float) -> tuple[int, Any]:
        if token.token_type == "batch":
            raise VaultError(400, "batch tokens cannot be renewed")
        if not token.renewable:
            raise VaultError(400, "lease is not renewable")
        increment = duration(body.get("increment"), token.ttl)
        ceiling = token.issued + token.max_ttl
        warnings = None
        if now + increment > ceiling:
            warnings = [
                f"TTL of {increment}s exceeded the effective max_ttl of "
                f"{max(0, round(ceiling - now))}s; TTL value is capped accordingly"
            ]
        token.expires = min(now + increment, ceiling)
        return 200, self._envelope(auth=token.auth_block(now), warnings=warnings)

    def _create_token(self, body: dict[str, Any], now: float) -> tuple[int, Any]:
        ttl = duration(body.get("ttl"), 2764800)
        max_ttl = duration(body.get("explicit_max_ttl"), 2764800) or 2764800
        token_type = str(body.get("type") or "service")
        prefix = "hvb." if token_type == "batch" else "hvs."
        token = Token(
            prefix + secrets.token_urlsafe(24),
            ["default", *body.get("policies", [])],
            min(ttl, max_ttl),
            max_ttl,
            bool(body.get("renewable", True)) and token_type != "batch",
            num_uses=int(body.get("num_uses") or 0),
            token_type=token_type,
            issued=now,
        )
        self.state.tokens[token.id] = token
        return 200, self._envelope(auth=token.auth_block(now))

    # --- AppRole -------------------------------------------------------------------
    def _approle_login(self, body: dict[str, Any]) -> tuple[int, Any]:
        st = self.state
        role_id, secret_id = body.get("role_id"), body.get("secret_id")
        if not role_id:
            raise VaultError(400, "missing role_id")
        role = next((r for r in st.roles.values() if r.role_id == role_id), None)
        if role is None or secret_id not in role.secret_ids:
            raise VaultError(400, "invalid role or secret ID")
        uses_left = role.secret_ids[secret_id]
        if uses_left == 1:
            del role.secret_ids[secret_id]
        elif uses_left > 1:
            role.secret_ids[secret_id] = uses_left - 1
        now = time.time()
        batch = role.token_type == "batch"
        token = Token(
            ("hvb." if batch else "hvs.") + secrets.token_urlsafe(24),
            ["default", *role.token_policies],
            min(role.token_ttl, role.token_max_ttl),
            role.token_max_ttl,
            renewable=not batch,
            num_uses=role.token_num_uses,
            token_type="batch" if batch else "service",
            meta={"role_name": role.name},
            issued=now,
        )
        st.tokens[token.id] = token
        return 200, self._envelope(auth=token.auth_block(now))

    def _approle_admin(self, method: str, rest: str, body: dict[str, Any]) -> tuple[int, Any]:
        st = self.state
        name, _, action = rest.partition("/")
        if not action and method in ("PUT", "POST"):
            role = st.roles.get(name) or Role(name, str(uuid.uuid4()))
            try:
                role.token_ttl = duration(body.get("token_ttl"), role.token_ttl)
                role.token_max_ttl = duration(body.get("token_max_ttl"), role.token_max_ttl)
            except ValueError as exc:
                raise VaultError(400, str(exc)) from None
            role.token_num_uses = int(body.get("token_num_uses", role.token_num_uses))
            role.secret_id_num_uses = int(body.get("secret_id_num_uses", role.secret_id_num_uses))
            role.token_type = str(body.get("token_type", role.token_type))
            if role.token_type not in ("default", "service", "batch"):
                raise VaultError(400, f"invalid 'token_type' value {role.token_type!r}")
            policies = body.get("token_policies", role.token_policies)
            role.token_policies = (
                [p.strip() for p in policies.split(",") if p.strip()]
                if isinstance(policies, str)
                else list(policies)
            )
            st.roles[name] = role
            return 204, None
        role = st.roles.get(name)
        if role is None:
            if not action and method == "DELETE":
                return 204, None
            raise VaultError(404, f'role "{name}" does not exist') if action else VaultError(404)
        if not action and method == "GET":
            return 200, self._envelope(data=role.settings())
        if not action and method == "DELETE":
            del st.roles[name]
            return 204, None
        if action == "role-id" and method == "GET":
            return 200, self._envelope(data={"role_id": role.role_id})
        if action == "secret-id" and method in ("PUT", "POST"):
            secret_id = str(uuid.uuid4())
            role.secret_ids[secret_id] = role.secret_id_num_uses
            data = {
                "secret_id": secret_id,
                "secret_id_accessor": str(uuid.uuid4()),
                "secret_id_ttl": 0,
                "secret_id_num_uses": role.secret_id_num_uses,
            }
            return 200, self._envelope(data=data)
        if action == "secret-id/destroy" and method in ("PUT", "POST", "DELETE"):
            role.secret_ids.pop(str(body.get("secret_id")), None)
            return 204, None
        raise _unsupported()

    # --- KV v2 ---------------------------------------------------------------------
    def _enable_mount(self, mount: str, body: dict[str, Any]) -> tuple[int, Any]:
        mount = mount.strip("/")
        options = body.get("options") or {}
        if body.get("type") not in ("kv", "kv-v2") or (
            body.get("type") == "kv" and str(options.get("version")) != "2"
        ):
            raise VaultError(400, "this test server only mounts KV version 2")
        if mount in self.state.kv or mount in ("sys", "auth", "identity", "cubbyhole"):
            raise VaultError(400, f"path is already in use at {mount}/")
        self.state.kv[mount] = {}
        return 204, None

    def _kv(
        self,
        method: str,
        store: dict[str, list[Version]],
        rest: str,
        query: dict[str, str],
        body: dict[str, Any],
    ) -> tuple[int, Any]:
        kind, _, name = rest.partition("/")
        if not name:
            raise VaultError(404, "no handler for route")
        now = time.time()
        versions = store.get(name)
        if kind == "data" and method == "GET":
            if not versions:
                return 404, {"errors": []}
            number = int(query.get("version") or 0) or len(versions)
            if not 1 <= number <= len(versions):
                return 404, {"errors": []}
            version = versions[number - 1]
            if version.deleted is not None:
                # Vault answers a deleted version with 404 and its metadata.
                return 404, self._envelope(
                    data={"data": None, "metadata": version.metadata(number)}
                )
            return 200, self._envelope(
                data={"data": version.data, "metadata": version.metadata(number)}
            )
        if kind == "data" and method in ("PUT", "POST"):
            data = body.get("data")
            if not isinstance(data, dict):
                raise VaultError(400, "no data provided")
            cas = (body.get("options") or {}).get("cas")
            if cas is not None and int(cas) != len(versions or []):
                raise VaultError(400, "check-and-set parameter did not match the current version")
            versions = store.setdefault(name, [])
            versions.append(Version(data, now))
            return 200, self._envelope(data=versions[-1].metadata(len(versions)))
        if kind == "data" and method == "DELETE":
            if versions and versions[-1].deleted is None:
                versions[-1].deleted = now
            return 204, None
        if kind == "metadata" and method == "DELETE":
            store.pop(name, None)
            return 204, None
        if kind == "metadata" and method == "GET":
            if not versions:
                return 404, {"errors": []}
            return 200, self._envelope(
                data={
                    "current_version": len(versions),
                    "oldest_version": 1,
                    "created_time": _iso(versions[0].created),
                    "updated_time": _iso(versions[-1].created),
                    "versions": {str(i + 1): v.metadata(i + 1) for i, v in enumerate(versions)},
                }
            )
        raise _unsupported()

    # --- test controls (not Vault API) -----------------------------------------------
    def _control(self, method: str, path: str, body: dict[str, Any]) -> None:
        st = self.state
        with st.lock:
            if path == "/_test/counts":
                counts = dict(st.counts)
                if method == "DELETE":
                    st.counts.clear()
                self._send(200, counts)
                return
            if method not in ("PUT", "POST"):
                raise _unsupported()
            if path == "/_test/latency":
                st.latency = float(body.get("seconds") or 0)
                st.latency_prefix = str(body.get("path") or "")
            elif path == "/_test/failure":
                status = body.get("status")
                st.failure = int(status) if status else None
            elif path == "/_test/state":
                for flag in ("sealed", "standby", "initialized"):
                    if flag in body:
                        setattr(st, flag, bool(body[flag]))
            elif path == "/_test/expire-tokens":
                now = time.time()
                for token in st.tokens.values():
                    if token.ttl:
                        token.expires = now
            else:
                raise VaultError(404, "unknown test control")
        self._send(204)


def _exit_with_parent(parent_pid: int) -> None:
    """Never outlive the test run that started us, even if it is killed."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="Vault-API-compatible test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root-token", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args()
    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()
    Handler.state = VaultState(args.root_token)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    server.serve_forever()


if __name__ == "__main__":
    main()
