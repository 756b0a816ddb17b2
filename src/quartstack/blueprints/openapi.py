"""Shared OpenAPI helpers: document the problem responses a route can give."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from quart_schema import document_response

from quartstack.web.problems import ProblemDetails

F = TypeVar("F", bound=Callable[..., object])


def problems(*statuses: int) -> Callable[[F], F]:
    """Declare in the OpenAPI document that the route may answer these problems."""

    def decorate(func: F) -> F:
        for status in statuses:
            func = document_response(ProblemDetails, status)(func)
        return func

    return decorate
