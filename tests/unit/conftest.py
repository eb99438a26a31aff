"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from derms_edge.outbox import durable


@pytest.fixture
def fsync_blocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every fsync thread's fsync (the outbox's, the schedule store's) waits until the event is
    set: an SD card taking its time. Set at the end, so no thread is left waiting."""
    release = threading.Event()
    fsync = os.fsync

    def slow(fd: int) -> None:
        release.wait(10)
        fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", slow)
    yield release
    release.set()
