"""Start and drive the Vault-API test server (tests/vault_server) as a separate process.

Administration goes through Vault's own HTTP API with the root token — the same
calls one would make against a real Vault (AppRole roles, secret-ids, KV v2
writes, ``sys/seal``) — and only the fault switches (latency, forced failures,
expiring tokens, request counts) use the server's ``/_test/`` paths.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class VaultTestServer:
    """One Vault stand-in process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root_token = "hvs.root-" + secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None

    # --- process ---------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> VaultTestServer:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.vault_server.server",
                "--port",
                str(self.port),
                "--root-token",
                self.root_token,
                "--parent-pid",
                str(os.getpid()),
            ],
            cwd=REPO_ROOT,
        )
        self._http = httpx.Client(
            base_url=self.url, timeout=10.0, headers={"X-Vault-Token": self.root_token}
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"vault test server exited with {self.process.returncode}")
            try:
                if self._http.get("/v1/sys/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"vault test server not answering on {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
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

    def __enter__(self) -> VaultTestServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def http(self) -> httpx.Client:
        """An HTTP client for the server, sending the root token."""
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

    def create_approle(
        self,
        role_name: str,
        token_ttl: int = 60,
        token_max_ttl: int = 3600,
        renewable: bool = True,
        **role: Any,
    ) -> tuple[str, str]:
        """Create (or update) an AppRole role; return its role-id and a new secret-id.

        ``renewable=False`` makes the role issue batch tokens, Vault's tokens that
        cannot be renewed. Other keyword arguments are Vault role parameters
        (``token_num_uses``, ``secret_id_num_uses``, ``token_policies``...).
        """
        body = {
            "token_ttl": token_ttl,
            "token_max_ttl": token_max_ttl,
            "token_type": "service" if renewable else "batch",
            **role,
        }
        self._ok(self.http.post(f"/v1/auth/approle/role/{role_name}", json=body))
        role_id = self._ok(self.http.get(f"/v1/auth/approle/role/{role_name}/role-id")).json()
        secret_id = self._ok(self.http.post(f"/v1/auth/approle/role/{role_name}/secret-id"))
        return role_id["data"]["role_id"], secret_id.json()["data"]["secret_id"]

    def new_secret_id(self, role_name: str) -> str:
        """Issue another secret-id for an existing role (rotation)."""
        response = self._ok(self.http.post(f"/v1/auth/approle/role/{role_name}/secret-id"))
        secret_id: str = response.json()["data"]["secret_id"]
        return secret_id

    def approle_dir(self, directory: Path, role_name: str, **role: Any) -> Path:
        """Create the role and write ``role-id`` and ``secret-id`` files into ``directory``."""
        role_id, secret_id = self.create_approle(role_name, **role)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "role-id").write_text(role_id + "\n")
        (directory / "secret-id").write_text(secret_id + "\n")
        return directory

    def create_token(
        self,
        ttl: int = 60,
        *,
        renewable: bool = True,
        explicit_max_ttl: int | None = None,
        num_uses: int = 0,
    ) -> str:
        """A token from ``auth/token/create`` (for the ``VAULT_TOKEN`` fallback)."""
        body: dict[str, Any] = {"ttl": ttl, "renewable": renewable, "num_uses": num_uses}
        if explicit_max_ttl is not None:
            body["explicit_max_ttl"] = explicit_max_ttl
        response = self._ok(self.http.post("/v1/auth/token/create", json=body))
        token: str = response.json()["auth"]["client_token"]
        return token

    def token_accessors(self) -> set[str]:
        """The accessor of every live token (``LIST auth/token/accessors``)."""
        response = self._ok(self.http.request("LIST", "/v1/auth/token/accessors"))
        return set(response.json()["data"]["keys"])

    def set_sealed(self, sealed: bool) -> None:
        """Seal with ``sys/seal`` or unseal with ``sys/unseal`` (any key unseals here)."""
        if sealed:
            self._ok(self.http.put("/v1/sys/seal"))
        else:
            self._ok(self.http.put("/v1/sys/unseal", json={"key": "test-unseal-key"}))

    # --- fault switches (test server only) -----------------------------------------------
    def set_latency(self, seconds: float, path: str = "") -> None:
        """Hold every Vault API answer (or those whose path starts with ``path``,
        e.g. ``/v1/secret/``) for ``seconds``; 0 also releases held answers."""
        self._ok(self.http.post("/_test/latency", json={"seconds": seconds, "path": path}))

    def set_failure(self, status: int | None) -> None:
        """Answer every Vault API call with ``status`` (None: back to normal)."""
        self._ok(self.http.post("/_test/failure", json={"status": status}))

    def set_standby(self, standby: bool) -> None:
        self._ok(self.http.post("/_test/state", json={"standby": standby}))

    def expire_tokens(self) -> None:
        """Expire every token but the root token now."""
        self._ok(self.http.post("/_test/expire-tokens"))

    def request_counts(self, reset: bool = False) -> dict[str, int]:
        """Vault API requests served per path since the last reset."""
        response = self._ok(self.http.request("DELETE" if reset else "GET", "/_test/counts"))
        counts: dict[str, int] = response.json()
        return counts
