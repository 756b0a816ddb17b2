"""Fixtures shared by the foundation tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from quartstack.logging_setup import stop_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging rewires the root logger: put pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level, srcfile = root.handlers[:], root.level, logging._srcfile
    yield
    stop_logging()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging._srcfile = srcfile
