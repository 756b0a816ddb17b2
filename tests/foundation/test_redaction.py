"""The secret registry is bounded and cheap: rotated secrets are forgotten, the regex
is rebuilt only on a change, and it stays small after many rotations."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

from quartstack import redaction
from quartstack.redaction import MASK, redact, register_secret, register_secrets


def _value() -> str:
    return "s-" + uuid.uuid4().hex


def test_a_rotated_secret_is_kept_one_generation_then_forgotten():
    owner = f"test:{uuid.uuid4().hex}"
    first, second, third = _value(), _value(), _value()
    register_secret(first, owner=owner)
    register_secret(second, owner=owner)
    assert redact(f"{first} {second}") == f"{MASK} {MASK}"  # the old one may still be in use
    register_secret(third, owner=owner)
    assert redact(f"{first} {second} {third}") == f"{first} {MASK} {MASK}"


def test_many_rotations_keep_the_registry_bounded():
    owner = f"test:{uuid.uuid4().hex}"
    register_secrets(owner, [_value(), _value()])
    held = len(redaction._snapshot.values)
    rotated = []
    for _ in range(500):
        rotated.append(_value())
        register_secrets(owner, [rotated[-1], "user-" + rotated[-1]])
    assert len(redaction._snapshot.values) <= held + 2
    assert redact(rotated[0]) == rotated[0]
    assert redact(rotated[-1]) == MASK and redact(rotated[-2]) == MASK


def test_the_pattern_is_rebuilt_only_when_the_registry_changes():
    owner = f"test:{uuid.uuid4().hex}"
    value = _value()
    register_secret(value, owner=owner)
    snapshot = redaction._snapshot
    register_secret(value, owner=owner)
    register_secret(value)  # already owned: not added again
    assert redaction._snapshot is snapshot
    assert redact(f"x{value}y") == f"x{MASK}y"


def test_a_secret_containing_another_is_masked_whole_and_clean_lines_are_unchanged():
    owner = f"test:{uuid.uuid4().hex}"
    short = _value()
    register_secrets(owner, [short, short + "-longer"])
    assert redact(f"a {short}-longer b") == f"a {MASK} b"
    line = '{"message": "nothing secret here"}'
    assert redact(line) is line


_ISOLATED = textwrap.dedent(
    """
    from quartstack import redaction
    from quartstack.redaction import MASK, redact, register_secret

    values = [f"anonymous-{i:04d}" for i in range(redaction.MAX_ANONYMOUS + 10)]
    for value in values:
        register_secret(value)
    assert redact(values[0]) == values[0], "the least recently registered is forgotten"
    assert redact(values[-1]) == MASK
    assert len(redaction._snapshot.values) == redaction.MAX_ANONYMOUS

    for i in range(redaction.MAX_OWNERS + 5):
        register_secret(f"owned-{i:04d}", owner=f"owner-{i}")
    assert redact("owned-0000") == "owned-0000" and redact("owned-0131") == MASK
    assert len(redaction._snapshot.values) == redaction.MAX_ANONYMOUS + redaction.MAX_OWNERS
    print("ok")
    """
)


def test_values_without_an_owner_and_the_owners_are_bounded():
    # In a process of its own: filling the LRU here would evict the suite's secrets.
    result = subprocess.run(
        [sys.executable, "-c", _ISOLATED], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
