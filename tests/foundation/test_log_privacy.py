"""Personal data never reaches a log line: a corpus of positives and look-alike negatives
through the real logger (message, extra fields at any depth, exception messages and
tracebacks, the access line), the cheap pre-check never waves one through, and client
addresses are truncated on request."""

from __future__ import annotations

import json
import logging
import random
import uuid

import pytest

from quartstack.log_masking import masked
from quartstack.pii import mask_personal_data, may_hold_personal_data
from quartstack.redaction import MASK, register_secret
from quartstack.web.client_address import truncated_address
from tests.support.app import captured_json_logs, running_app

# (text, what it must become): each positive inside some surrounding words.
POSITIVES = [
    ("signup for jane.doe+news@example.co.uk done", "signup for [email] done"),
    ("contact: Zoë.Ünal@mail.example.de.", "contact: [email]."),
    ("card 4111 1111 1111 1111 exp 12/28", "card [card] exp 12/28"),
    ("card 4111-1111-1111-1111", "card [card]"),
    ("pan=4111111111111111;", "pan=[card];"),
    ("amex 3782 822463 10005 ok", "amex [card] ok"),
    ("mastercard 2223003122003222", "mastercard [card]"),
    ("card 4111 1111 1111 1111 2026", "card [card] 2026"),  # a year after it
    ("/examples/cache/5555555555554444", "/examples/cache/[card]"),
    ("iban DE89 3704 0044 0532 0130 00 paid", "iban [iban] paid"),
    ("iban DE89370400440532013000", "iban [iban]"),
    ("GB82 WEST 1234 5698 7654 32", "[iban]"),
    ("to SE45 5000 0000 0583 9825 7466 FROM x", "to [iban] FROM x"),
    ("call +1 (415) 555-2671 now", "call [phone] now"),
    ("tel:+44 20 7946 0958", "tel:[phone]"),
    ("+4915123456789", "[phone]"),
    ("office (415) 555-2671", "office [phone]"),
    ("office 415-555-2671", "office [phone]"),
    ("office 415.555.2671", "office [phone]"),
    ("Berlin 030 12345678", "Berlin [phone]"),
    ("mobile 0151-23456789", "mobile [phone]"),
    ("Paris 06 12 34 56 78", "Paris [phone]"),
    ("Authorization: Bearer abc.DEF-ghi_123~+/=", "Authorization: Bearer [token]"),
    ("authorization=bearer 0123456789abcdef", "authorization=bearer [token]"),
    ("BEARER xyzzy-plugh", "BEARER [token]"),
    (
        "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl-_x rejected",
        "jwt [token] rejected",
    ),
    ("unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "unsigned [token]"),
    ("line one\n4111111111111111\nline three", "line one\n[card]\nline three"),
]

NEGATIVES = [
    "order ORD-2024-000123 shipped",
    "order 1234567890 shipped",
    "invoice 2024/000123",
    "at 2026-12-02T04:05:22.298Z",
    "at 2026-12-02 04:05:22+01:00",
    "epoch ms 1733112000123",
    "compact 20261202035956123",
    "version 1.2.3 and 10.0.19045.2006",
    "python 3.11.7",
    "id 123e4567-e89b-12d3-a456-426614174000",
    "not a card 4111111111111112",
    "not a card 4111 1111 1111 1112",
    "too long 41111111111111111111111",
    "not an iban DE89 3704 0044 0532 0130 01",
    "not an iban GB82 WEST 1234 5698 7654 33",
    "not an iban XX00 0000 0000 0000 0000",
    "peer 127.0.0.1 and 192.168.100.200",
    "ipv6 2001:db8::8a2e:370:7334",
    "request 0123456789abcdef0123456789abcdef",
    "date 01-12-2026 10:30",
    "date 02.12.2026",
    'WWW-Authenticate: Bearer realm="quartstack", error="invalid_token"',
    "duration 0.0123456789 s",
    "decorator @app.route",
    "1e+1234567890",
    "port 5432, pid 123456",
    "sha 4a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
    "bearer tokens are masked",
    "count 99999999",
]


def _lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(("text", "expected"), POSITIVES)
def test_positives_are_masked_in_messages_extras_and_exceptions(text, expected):
    log = logging.getLogger("quartstack.test.privacy")
    with captured_json_logs() as stream:
        log.info("user said %s", text, extra={"detail": text, "nested": {"list": [text, 1]}})
        try:
            raise ValueError(text)
        except ValueError:
            log.exception("failed")
    message, failure = _lines(stream)
    assert message["message"] == f"user said {expected}"
    assert message["detail"] == expected
    assert message["nested"] == {"list": [expected, 1]}
    assert f"ValueError: {expected}" in failure["exception"]
    assert text not in stream.getvalue()


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_are_left_alone(text):
    log = logging.getLogger("quartstack.test.privacy")
    with captured_json_logs() as stream:
        log.info(text, extra={"detail": text})
    (line,) = _lines(stream)
    assert line["message"] == text and line["detail"] == text


def test_card_numbers_as_ints_and_secrets_with_json_escapes_are_masked():
    secret = f'pw"{uuid.uuid4().hex}\\x'  # quote and backslash: escaped in the JSON text
    register_secret(secret)
    log = logging.getLogger("quartstack.test.privacy")
    with captured_json_logs() as stream:
        log.info("values", extra={"pan": 4111111111111111, "count": 42, "value": secret})
    (line,) = _lines(stream)
    assert line["pan"] == "[card]" and line["count"] == 42
    assert line["value"] == MASK


def test_the_pre_check_never_waves_personal_data_through():
    """Random mixes of positives, negatives and separators: whenever masking changes a
    text, the cheap test in front of it said it might."""
    pieces = [text for text, _ in POSITIVES] + NEGATIVES + ["a", "Z", "-", " ", ".", "/", "("]
    rng = random.Random(14)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))
        if mask_personal_data(text) != text:
            assert may_hold_personal_data(text), text
    for text, _ in POSITIVES:
        assert may_hold_personal_data(text), text


def test_pathological_input_stays_fast():
    """Possessive patterns: long runs that almost match cost linear time."""
    import time

    texts = ["1 " * 5000, "4" * 20000 + "x", "a@" * 5000, "DE89 " + "1234 " * 4000 + "x"]
    started = time.perf_counter()
    for text in texts:
        masked({"v": text})
    assert time.perf_counter() - started < 2.0


async def test_the_access_line_masks_the_path_and_a_clients_request_id():
    card_id = "4111-1111-1111-1111"
    async with running_app() as (_, client):
        with captured_json_logs() as stream:
            response = await client.get(
                "/examples/cache/jane@example.com", headers={"X-Request-ID": card_id}
            )
    assert response.headers["X-Request-ID"] == card_id  # the client gets its id back
    access = [line for line in _lines(stream) if line["logger"] == "quartstack.access"]
    assert access and all(line["request_id"] == "[card]" for line in access)
    assert access[-1]["path"] == "/examples/cache/[email]"
    assert "jane@" not in stream.getvalue() and card_id not in stream.getvalue()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.7", "198.51.100.0/24"),
        ("unknown", "unknown"),
    ],
)
def test_truncated_addresses(address, expected):
    assert truncated_address(address) == expected


async def test_log_client_ip_truncated_shows_only_the_network():
    async def client_line(mode: str) -> str:
        async with running_app(log_client_ip=mode) as (_, client):
            with captured_json_logs() as stream:
                await client.get("/health/", scope_base={"client": ("203.0.113.77", 5000)})
        (line,) = [x for x in _lines(stream) if x["logger"] == "quartstack.access"]
        return line["client"]

    assert await client_line("truncated") == "203.0.113.0/24"
    assert await client_line("full") == "203.0.113.77"
