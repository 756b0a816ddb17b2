"""orjson writes the app's JSON: byte for byte what Flask's provider (with quart_schema's
``default``) writes, and ``json`` still takes what orjson would write differently."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from quart_schema import QuartSchema

from quartstack.web.json_provider import OrjsonProvider
from quartstack.web.quart_app import ServiceQuart


@dataclass
class _Point:
    x: int
    label: str


class _Model(BaseModel):
    name: str
    size: int


_VALUES: list[Any] = [
    {"b": 1, "a": [1, 2.5, -3, 0.1, True, False, None], "c": {"z": "y", "x": ""}},
    {"when": datetime(2026, 12, 2, 15, 4, 5, tzinfo=UTC), "day": date(2026, 12, 2)},
    {"id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "amount": Decimal("10.50")},
    {"point": _Point(1, "p"), "model": _Model(name="m", size=2)},
    {"text": 'grüße, 東京 and \u2028 and a "quote" \\ slash'},
    {"big": 2**70, "small": -(2**70)},
    {1: "int key", 2: "keys json sorts and converts"},
    [],
    "plain",
    None,
]


_APPS: list[ServiceQuart] = []  # a provider holds its app weakly


def _providers() -> tuple[Any, Any]:
    """Ours and the reference, both as an app with quart_schema has them."""
    ours, reference = ServiceQuart("ours"), ServiceQuart("reference")
    for app in (ours, reference):
        QuartSchema(app, openapi_path=None, redoc_ui_path=None, scalar_ui_path=None)
    ours.write_json_with_orjson()
    assert isinstance(ours.json, OrjsonProvider)
    assert not isinstance(reference.json, OrjsonProvider)
    _APPS[:] = [ours, reference]
    return ours.json, reference.json


@pytest.mark.parametrize("value", _VALUES, ids=range(len(_VALUES)))
async def test_responses_and_dumps_match_flasks_provider(value: Any) -> None:
    ours, reference = _providers()
    assert ours.dumps(value) == reference.dumps(value)
    compact = {"separators": (",", ":")}
    assert ours.dumps(value, **compact) == reference.dumps(value, **compact)
    assert ours.dumps(value, indent=2) == reference.dumps(value, indent=2)
    theirs = reference.response(value)
    mine = ours.response(value)
    assert await mine.get_data() == await theirs.get_data()
    assert mine.mimetype == theirs.mimetype == "application/json"


@pytest.mark.parametrize("value", [{"x": object()}, {1: "a", "b": "mixed key types"}])
def test_what_neither_can_write_fails_the_same_way(value: Any) -> None:
    ours, reference = _providers()
    errors = []
    for provider in (ours, reference):
        with pytest.raises(Exception) as caught:
            provider.response(value)
        errors.append(type(caught.value))
    assert errors[0] is errors[1]


def test_orjson_writes_the_common_case() -> None:
    ours, _ = _providers()
    assert ours._compact({"b": 1, "a": "x"}) == b'{"a":"x","b":1}'
    assert ours._compact({"text": "grüße"}) is None  # non-ASCII: json escapes it
    assert ours._compact({"big": 2**70}) is None
