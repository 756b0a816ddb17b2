"""Benchmark: the per-line cost of secret scrubbing, before and after the bounded registry.

Every log line goes through ``redact``. The previous registry kept every secret the
process ever learned and ran one regex alternation of all of them over every line;
the current one keeps each owner's current and previous values (plus a small LRU)
and tests each value with ``in`` before running the regex on the rare line that
holds a secret. The previous implementation is reproduced below so that both run
in the same process on the same lines (absolute numbers drift on shared machines).

Scenario: the Vault token, the AppRole files and 5 KV secrets, rotated ``--rotations``
times (the token at every login, each password once per rotation). Measured on an
access-log line that holds no secret (the common case) and one that does.

    .venv/bin/python -m bench.redaction [--rotations 0 10 100] [--number 20000]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import timeit

from quartstack import redaction

_LINE = json.dumps(
    {
        "timestamp": "2025-01-01T00:00:00.000Z",
        "level": "INFO",
        "logger": "quartstack.access",
        "message": "request",
        "request_id": secrets.token_hex(16),
        "method": "GET",
        "route": "/examples/vault/secret/{service_name}",
        "path": "/examples/vault/secret/postgres",
        "status": 200,
        "duration_ms": 1.23,
        "client": "10.1.2.3",
    }
)
_OWNERS = (
    "vault:token",
    "vault:role-id",
    "vault:secret-id",
    *(f"vault:kv:service-{i}" for i in range(5)),
)


class PreviousRegistry:
    """The registry before the change: grows forever, one regex over every line."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def register(self, value: str) -> None:
        if value in self.values:
            return
        self.values.add(value)
        ordered = sorted(self.values, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(redaction.MASK, text)


def _fill(rotations: int) -> tuple[PreviousRegistry, str]:
    """Both registries after ``rotations`` rotations; returns a live secret too."""
    previous = PreviousRegistry()
    value = ""
    for _ in range(rotations + 1):
        for owner in _OWNERS:
            value = secrets.token_urlsafe(24)
            previous.register(value)
            redaction.register_secret(value, owner=owner)
    return previous, value


def _per_line(func: object, text: str, number: int) -> float:
    """Best of 5 runs, in microseconds per line."""
    runs = timeit.repeat(lambda: func(text), number=number, repeat=5)  # type: ignore[operator]
    return min(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rotations", type=int, nargs="+", default=[0, 10, 100])
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    print(f"{'rotations':>9} {'held before':>11} {'held now':>8}  line    before µs  now µs  ratio")
    for rotations in args.rotations:
        previous, live = _fill(rotations)
        held_now = len(redaction._snapshot.values)
        with_secret = _LINE.replace("10.1.2.3", live)
        assert redaction.redact(with_secret) == previous.redact(with_secret)
        for label, text in (("clean", _LINE), ("secret", with_secret)):
            number = max(100, args.number // (1 + len(previous.values) // 50))
            before = _per_line(previous.redact, text, number)
            now = _per_line(redaction.redact, text, number)
            print(
                f"{rotations:>9} {len(previous.values):>11} {held_now:>8}  {label:<6} "
                f"{before:>10.2f} {now:>7.2f} {before / now:>6.1f}x"
            )


if __name__ == "__main__":
    main()
