"""The schedule store: accepted events and their status in SQLite, written as they change,
and the signed messages seen (the replay memory).

After a restart (or a kill -9) the gateway reloads it, so events still in their window
resume without a second ``started`` and events that ended meanwhile are completed. Each
change is one small transaction in WAL mode; the file lives in ``gateway.state_dir``.

The file keeps the model's own dataclasses (`Event`, `Control`) as JSON, through pydantic's
`TypeAdapter`: its format is the gateway's, not the MQTT contract's, so the contract can
change without touching stored schedules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from pydantic import TypeAdapter

from derms_edge.control import OPEN, Record
from derms_edge.model import Control, Event, Status

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
        self._db.execute("PRAGMA synchronous=FULL")  # fsynced before any answer says so
        self._db.executescript(_SCHEMA)

    def save(self, records: Iterable[Record], now: datetime) -> None:
        """Write these records (insert or update) in one transaction."""
        rows = [
            (r.event.mrid, _EVENT.dump_json(r.event).decode(), str(r.status), now.isoformat())
            for r in records
        ]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
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
            with self._db:
                self._db.executemany("DELETE FROM events WHERE mrid = ?", stale)
        return records

    def save_default(self, role: str, control: Control | None) -> None:
        """Remember a role's default control (None forgets it)."""
        with self._db:
            if control is None:
                self._db.execute("DELETE FROM defaults WHERE role = ?", (role,))
            else:
                self._db.execute(
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
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM signed_seen WHERE until < ?", (now.timestamp(),))
            self._db.execute(
                "INSERT OR REPLACE INTO signed_seen (digest, until) VALUES (?, ?)",
                (digest, until.timestamp()),
            )

    def seen_signed(self, digest: str) -> bool:
        """Whether a signed message with this digest is remembered."""
        row = self._db.execute("SELECT 1 FROM signed_seen WHERE digest = ?", (digest,))
        return row.fetchone() is not None

    def close(self) -> None:
        """Close the database."""
        self._db.close()
