"""The startup heap is frozen: the collector's full passes skip what lives until exit."""

from __future__ import annotations

import gc
import weakref

import pytest

from quartstack.heap import freeze_startup_heap


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # this test process builds many apps; give the collector its objects back


def test_freezing_hides_what_is_alive_from_the_collector_and_collects_the_rest(unfrozen):
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    kept = Node()
    kept.other = Node()
    kept.other.other = kept  # a live cycle: startup's objects look like this
    dead = Node()
    dead.other = dead
    dead_ref = weakref.ref(dead)
    del dead  # unreachable cycle: collected before the freeze, not frozen forever

    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() > 0
    tracked = {id(obj) for obj in gc.get_objects()}
    assert id(kept) not in tracked and id(kept.other) not in tracked
    assert dead_ref() is None


def test_objects_made_after_the_freeze_are_still_collected(unfrozen):
    freeze_startup_heap()

    class Node:
        def __init__(self) -> None:
            self.me = self

    Node()  # an unreachable cycle made while serving
    assert gc.collect() >= 1
