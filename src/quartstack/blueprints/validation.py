"""Validation of path parameters, reported as 422 problems in the same shape as
quart-schema's body and query errors."""

from __future__ import annotations

import re

from quartstack.web.problems import Problem


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


def validation_problem(where: str, field: str, message: str) -> Problem:
    """A 422 problem for one invalid ``field``, shaped like quart-schema's errors."""
    return Problem(
        422,
        "validation-error",
        f"The {where} is invalid.",
        title="Validation failed",
        errors=[{"field": field, "message": message, "type": "value_error"}],
    )
