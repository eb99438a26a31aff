"""serve() collects the start's garbage, then freezes what lives on out of every later
garbage collection (at 200 devices a full one went through ~50,000 startup objects)."""

from __future__ import annotations

import gc
import weakref

from derms_edge.runtime.gateway import freeze_startup_heap


class _Node:
    me: object = None


def test_the_startup_heap_is_frozen_after_its_garbage_is_collected() -> None:
    alive = _Node()
    alive.me = alive  # a cycle still in use
    dead = _Node()
    dead.me = dead  # a cycle nobody holds: garbage
    gone = weakref.ref(dead)
    del dead
    try:
        freeze_startup_heap()
        assert gone() is None  # collected, not frozen for ever
        assert gc.get_freeze_count() > 0
        assert not any(o is alive for o in gc.get_objects())  # frozen: no longer scanned
    finally:
        gc.unfreeze()
