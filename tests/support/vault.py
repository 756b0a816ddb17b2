"""Start and drive the Vault-API test server (tests/vault_server) as a separate process.

Administration goes through Vault's own HTTP API with the root token (the same
calls one would make against a real Vault); only the fault switches use the
server's ``/_test/`` paths.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.net import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class VaultTestServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root_token = "root-" + secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(
            base_url=self.url, timeout=10.0, headers={"X-Vault-Token": self.root_token}
        )

    def start(self) -> VaultTestServer:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.vault_server.server",
                "--port",
                str(self.port),
                "--root-token",
                self.root_token,
            ],
            cwd=REPO_ROOT,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self) -> VaultTestServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- Vault API as an operator would use it -------------------------------------
    def write_secret(self, name: str, data: dict[str, Any]) -> None:
        self._http.post(f"/v1/secret/data/{name}", json={"data": data}).raise_for_status()

    def delete_secret(self, name: str) -> None:
        self._http.delete(f"/v1/secret/metadata/{name}").raise_for_status()

    def create_approle(
        self,
        role_name: str,
        *,
        token_ttl: int = 60,
        token_max_ttl: int = 3600,
        renewable: bool = True,
    ) -> tuple[str, str]:
        self._http.post(
            f"/v1/auth/approle/role/{role_name}",
            json={"token_ttl": token_ttl, "token_max_ttl": token_max_ttl, "renewable": renewable},
        ).raise_for_status()
        role_id = self._http.get(f"/v1/auth/approle/role/{role_name}/role-id").json()
        secret = self._http.post(f"/v1/auth/approle/role/{role_name}/secret-id").json()
        return role_id["data"]["role_id"], secret["data"]["secret_id"]

    def approle_dir(self, directory: Path, role_name: str, **role: Any) -> Path:
        role_id, secret_id = self.create_approle(role_name, **role)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "role-id").write_text(role_id + "\n")
        (directory / "secret-id").write_text(secret_id + "\n")
        return directory

    # --- fault switches ----------------------------------------------------------------
    def set_sealed(self, sealed: bool) -> None:
        self._http.post("/_test/seal", json={"sealed": sealed}).raise_for_status()

    def set_latency(self, seconds: float) -> None:
        self._http.post("/_test/latency", json={"seconds": seconds}).raise_for_status()

    def set_failure(self, status: int | None) -> None:
        self._http.post("/_test/failure", json={"status": status}).raise_for_status()

    def expire_tokens(self) -> None:
        self._http.post("/_test/expire-tokens").raise_for_status()

    def request_counts(self, reset: bool = False) -> dict[str, int]:
        response = self._http.request("DELETE" if reset else "GET", "/_test/counts")
        counts: dict[str, int] = response.json()
        return counts
