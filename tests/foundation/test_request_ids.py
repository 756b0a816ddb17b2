"""Request ids: UUID4s, unique across a page refill and across a fork."""

from __future__ import annotations

import subprocess
import sys
import uuid

from quartstack.web.request_ids import new_request_id


def test_ids_are_uuid4_hex_and_unique_across_page_refills() -> None:
    ids = [new_request_id() for _ in range(1000)]  # ~4 pages of kernel randomness
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


_FORK_SCRIPT = """
import os, sys
from quartstack.web.request_ids import new_request_id
new_request_id()  # the parent now holds a page with ids still unused
child = os.fork()
if child == 0:
    print("child", *(new_request_id() for _ in range(8)), flush=True)
    os._exit(0)
os.waitpid(child, 0)
print("parent", *(new_request_id() for _ in range(8)), flush=True)
"""


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    # Forks in a fresh, single-threaded interpreter: the test process has threads.
    run = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    ids = {line.split()[0]: set(line.split()[1:]) for line in run.stdout.splitlines()}
    assert len(ids["child"]) == 8 and len(ids["parent"]) == 8
    assert not ids["child"] & ids["parent"]
