"""Validation of path parameters, reported as 422 problems in the same shape as
quart-schema's body and query errors."""

from __future__ import annotations

import re

from quartstack.web.problems import validation_problem


def check_path_param(name: str, value: str, pattern: str, max_length: int) -> str:
    """Return ``value`` if it is 1..max_length characters of ``pattern``, else a 422 problem."""
    message = None
    if not 1 <= len(value) <= max_length:
        message = f"must be 1-{max_length} characters long"
    elif not re.fullmatch(pattern, value):
        message = f"must match {pattern}"
    if message is None:
        return value
    raise validation_problem(f"path parameter {name!r}", f"path.{name}", message)
