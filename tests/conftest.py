"""Session-wide fixtures: the Vault-API test server every backend suite uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.vault import VaultTestServer


@pytest.fixture(scope="session")
def vault_server() -> Iterator[VaultTestServer]:
    with VaultTestServer() as server:
        yield server
