"""The schedule store: accepted events and their status in SQLite, written as they change,
and the signed messages seen (the replay memory).

After a restart (or a kill -9) the gateway reloads it, so events still in their window
resume without a second ``started`` and events that ended meanwhile are completed. Each
change is one small transaction in WAL mode; the file lives in ``gateway.state_dir``.

A commit is written into the WAL before the call returns (it survives ``kill -9``) but not
fsynced there (``synchronous=NORMAL``): the event loop never waits for an SD card. A thread
of the store's own (`durable.Syncer`, as the outbox's) fsyncs each commit and says so
(``durable``, ``on_durable``); the control loop hands an answer on only once the commit
that stored what it says is durable, so no answer is ahead of what survives a power cut.

The file keeps the model's own dataclasses (`Event`, `Control`) as JSON, through pydantic's
`TypeAdapter`: its format is the gateway's, not the MQTT contract's, so the contract can
change without touching stored schedules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic import TypeAdapter

from derms_edge.control import OPEN, Record
from derms_edge.model import Control, Event, Status
from derms_edge.outbox.durable import Syncer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    mrid TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS defaults (
    role TEXT PRIMARY KEY,
    control TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signed_seen (
    digest TEXT PRIMARY KEY,
    until REAL NOT NULL
);
"""
KEEP_DAYS = 7
"""Finished events are kept this long (to answer repeats and spot duplicate mrids)."""

_EVENT = TypeAdapter(Event)
_CONTROL = TypeAdapter(Control)


class ScheduleStore:
    """SQLite file of event records and retained default controls."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA synchronous=NORMAL")  # from now on the thread fsyncs
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # and checkpoints
        self._syncer = Syncer(path, what="schedule store", thread="schedule-fsync")

    @property
    def commits(self) -> int:
        """Commits since the fsync thread started (the last one's number)."""
        return self._syncer.commits

    @property
    def durable(self) -> int:
        """The number of the newest commit on disk; every commit once the fsync thread failed
        (it said so loudly: answers are not held back for ever)."""
        return self.commits if self._syncer.failed else self._syncer.durable[0]

    def on_durable(self, callback: Callable[[], object] | None) -> None:
        """Call ``callback()`` after each fsync: in the fsync thread, so it must be
        thread-safe (``loop.call_soon_threadsafe``). None: call nothing."""
        self._syncer.on_durable = callback

    def wait_durable(self, timeout_s: float = 10.0) -> None:
        """Block until every commit so far is durable: for a caller that may block (a test,
        a tool), never the event loop."""
        if not self._syncer.wait(self.commits, timeout_s) and not self._syncer.failed:
            raise TimeoutError(f"schedule store {self.path}: not fsynced in {timeout_s:g} s")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction, handed to the fsync thread once committed."""
        with self._db:
            self._db.execute("BEGIN")
            yield self._db
        self._syncer.committed()

    def save(self, records: Iterable[Record], now: datetime) -> None:
        """Write these records (insert or update) in one transaction."""
        rows = [
            (r.event.mrid, _EVENT.dump_json(r.event).decode(), str(r.status), now.isoformat())
            for r in records
        ]
        if not rows:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO events (mrid, event, status, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mrid) DO UPDATE SET status = excluded.status, "
                "updated = excluded.updated",
                rows,
            )

    def load(self, now: datetime) -> list[Record]:
        """Every stored record, after dropping finished ones older than KEEP_DAYS."""
        cutoff = now.timestamp() - KEEP_DAYS * 86400
        records = []
        stale = []
        for mrid, event, status, updated in self._db.execute(
            "SELECT mrid, event, status, updated FROM events"
        ):
            record = Record(_EVENT.validate_json(event), Status(status))
            finished = record.status not in OPEN
            if finished and datetime.fromisoformat(updated).timestamp() < cutoff:
                stale.append((mrid,))
            else:
                records.append(record)
        if stale:
            with self._transaction() as db:
                db.executemany("DELETE FROM events WHERE mrid = ?", stale)
        return records

    def save_default(self, role: str, control: Control | None) -> None:
        """Remember a role's default control (None forgets it)."""
        with self._transaction() as db:
            if control is None:
                db.execute("DELETE FROM defaults WHERE role = ?", (role,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO defaults (role, control) VALUES (?, ?)",
                    (role, _CONTROL.dump_json(control).decode()),
                )

    def load_defaults(self) -> dict[str, Control]:
        """The remembered default controls by role."""
        return {
            role: _CONTROL.validate_json(text)
            for role, text in self._db.execute("SELECT role, control FROM defaults")
        }

    def remember_signed(self, digest: str, until: datetime, now: datetime) -> None:
        """Remember a signed message (by the digest of what its signature covers) until
        ``until``; those remembered past their time are forgotten."""
        with self._transaction() as db:
            db.execute("DELETE FROM signed_seen WHERE until < ?", (now.timestamp(),))
            db.execute(
                "INSERT OR REPLACE INTO signed_seen (digest, until) VALUES (?, ?)",
                (digest, until.timestamp()),
            )

    def seen_signed(self, digest: str) -> bool:
        """Whether a signed message with this digest is remembered."""
        row = self._db.execute("SELECT 1 FROM signed_seen WHERE digest = ?", (digest,))
        return row.fetchone() is not None

    def close(self) -> None:
        """fsync what was committed and close the database."""
        self._syncer.stop()
        self._db.close()
