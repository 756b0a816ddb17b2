"""What a log line may not show: secret values (:mod:`quartstack.redaction`) and personal
data (:mod:`quartstack.pii`), wherever they are in the line.

Masking works on the values of a line, before it is encoded, so a match never spans
two fields or cuts a JSON escape in half. The formatter first asks
:func:`needs_masking` about the line's text values joined together (a few substring
tests and regex searches over one short string); only a line that may hold something
is walked by :func:`masked`, at any depth, then encoded.

A producer that logs the same values on every request (the access line's method, route
template, client address, request id) masks them once and marks them :class:`Checked`;
lines carry those as they are, and the test covers only the rest.
"""

from __future__ import annotations

from typing import Any

from quartstack.pii import mask_personal_data, may_hold_personal_data
from quartstack.redaction import holds_secret, redact

#: An int this large may be a card number (13 digits and more); smaller ones are counts.
LARGE_INT = 10**12
_SEPARATOR = "\x00"  # in no pattern's character classes: a match never spans two values


class Checked(str):
    """A string already masked, or one that cannot hold anything to mask (a route
    template, an id the service generated): log lines carry it unsearched."""

    __slots__ = ()


def checked(text: str) -> Checked:
    """``text`` masked (secrets, personal data) and marked :class:`Checked`."""
    return Checked(mask_text(text) if needs_masking([text]) else text)


def needs_masking(values: list[str]) -> bool:
    """False only when none of ``values`` holds a registered secret or personal data."""
    joined = _SEPARATOR.join(values)
    return holds_secret(joined) or may_hold_personal_data(joined)


def mask_text(text: str) -> str:
    """``text`` with secrets as ``***`` and personal data as ``[email]``, ``[card]``..."""
    return mask_personal_data(redact(text))


def masked(value: Any) -> Any:
    """``value`` with every string in it masked, at any depth; other JSON types are kept,
    anything else becomes its masked ``str``."""
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if -LARGE_INT < value < LARGE_INT:
            return value
        text = str(value)
        return value if mask_text(text) == text else mask_text(text)
    if isinstance(value, dict):
        return {
            mask_text(key) if isinstance(key, str) else key: masked(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [masked(item) for item in value]
    return mask_text(str(value))
