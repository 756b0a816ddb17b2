"""Names for what the suite creates on the machine's shared servers, and the sweep of
what an interrupted run left there.

Every name embeds its creation time, ``qs_test_<epoch>_<hex>`` (``-`` where the server
prefers it), so a run can tell an abandoned object from one that a run still going
created (other runs share these servers). At session start each suite removes its own
kind of object whose name says it is older than :data:`MAX_AGE`, and nothing else:
no run lasts that long, and an object without such a name is never touched.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

#: Older than this, a suite object belongs to a run that is over.
MAX_AGE = 3600.0
_PATTERN = r"qs{sep}test{sep}(\d{{10}}){sep}[0-9a-f]{{8}}"


def unique_name(sep: str = "_") -> str:
    """A name of the suite's own: prefix, creation time, random part."""
    return f"qs{sep}test{sep}{int(time.time())}{sep}{secrets.token_hex(4)}"


def stale(names: Iterable[str], sep: str = "_", *, now: float | None = None) -> list[str]:
    """The names of suite objects created more than :data:`MAX_AGE` ago."""
    pattern = re.compile(_PATTERN.format(sep=re.escape(sep)))
    cutoff = (time.time() if now is None else now) - MAX_AGE
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and int(match.group(1)) < cutoff:
            found.append(name)
    return found


def sweep(kind: str, names: list[str], remove: Callable[[str], object]) -> list[str]:
    """Remove each of ``names``; one that is already gone (a concurrent sweep) is fine."""
    removed = []
    for name in names:
        try:
            remove(name)
        except Exception as exc:  # a sweep never fails the run; it says what it left
            warnings.warn(f"leftover {kind} {name} not removed: {exc}", stacklevel=2)
        else:
            removed.append(name)
    return removed


def private_dir(kind: str) -> Path:
    """A temporary directory named like the suite's objects (``qs-test-…-<kind>-…``)."""
    return Path(tempfile.mkdtemp(prefix=f"{unique_name('-')}-{kind}-"))


def stale_dirs(kind: str) -> list[Path]:
    """Directories made by :func:`private_dir` more than :data:`MAX_AGE` ago."""
    found = {
        path.name.split(f"-{kind}-")[0]: path
        for path in Path(tempfile.gettempdir()).glob(f"qs-test-*-{kind}-*")
    }
    return [found[name] for name in stale(found, "-")]


def sweep_redis_leftovers(port: int = 6379) -> list[str]:
    """Keys under the prefix of an interrupted run (``qs-test-<epoch>-<hex>:…``, older
    than :data:`MAX_AGE`); nobody else's are touched."""
    import redis

    with redis.Redis(port=port) as shared:
        names = {key.decode().split(":")[0] for key in shared.scan_iter("qs-test-*", count=1000)}

        def remove(name: str) -> None:
            keys = [
                key
                for key in shared.scan_iter(f"{name}*", count=1000)
                if key.decode(errors="replace").split(":")[0] == name
            ]
            for start in range(0, len(keys), 500):
                shared.unlink(*keys[start : start + 500])

        return sweep("Redis keys", stale(names, "-"), remove)
