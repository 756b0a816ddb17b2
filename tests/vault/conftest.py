from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.vault import VaultTestServer


@pytest.fixture
def vault() -> Iterator[VaultTestServer]:
    """A private OpenBao per test (behind its fault proxy): tests here seal it, slow it
    and revoke every token, which no other test may see."""
    with VaultTestServer() as server:
        yield server


@pytest.fixture
def approle(vault: VaultTestServer, tmp_path: Path):
    def make(**role: Any) -> Path:
        return vault.approle_dir(tmp_path / uuid.uuid4().hex, f"app-{uuid.uuid4().hex[:8]}", **role)

    return make
