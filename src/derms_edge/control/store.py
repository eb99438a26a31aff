"""The schedule store: accepted events and their status in SQLite, written as they change.

After a restart (or a kill -9) the gateway reloads it, so events still in their window
resume without a second ``started`` and events that ended meanwhile are completed. Each
change is one small transaction in WAL mode; the file lives in ``gateway.state_dir``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from derms_edge.control.engine import Record
from derms_edge.control.events import Control, Event, Status, value_data
from derms_edge.northbound.commands import ControlPayload

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
"""
KEEP_DAYS = 7
"""Finished events are kept this long (to answer repeats and spot duplicate mrids)."""


class ScheduleStore:
    """SQLite file of event records and retained default controls."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def save(self, records: Iterable[Record], now: datetime) -> None:
        """Write these records (insert or update) in one transaction."""
        rows = [
            (r.event.mrid, json.dumps(event_to_json(r.event)), str(r.status), now.isoformat())
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
            record = Record(event_from_json(json.loads(event)), Status(status))
            finished = record.status not in (Status.SCHEDULED, Status.STARTED)
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
                    (role, json.dumps(control_to_json(control))),
                )

    def load_defaults(self) -> dict[str, Control]:
        """The remembered default controls by role."""
        return {
            role: control_from_json(json.loads(text))
            for role, text in self._db.execute("SELECT role, control FROM defaults")
        }

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def control_to_json(control: Control) -> dict[str, Any]:
    """A control as JSON-ready data, in the contract's field names."""
    return {str(name): value_data(value) for name, value in control.items().items()}


def control_from_json(data: dict[str, Any]) -> Control:
    """The inverse of control_to_json, through the contract's own validation."""
    return ControlPayload.model_validate(data).to_control()


def event_to_json(event: Event) -> dict[str, Any]:
    """An event as JSON-ready data."""
    return {
        "mrid": event.mrid,
        "role": event.role,
        "primacy": event.primacy,
        "creation_time": event.creation_time.isoformat(),
        "start": event.start.isoformat(),
        "duration_s": event.duration_s,
        "control": control_to_json(event.control),
        "devices": list(event.devices) if event.devices is not None else None,
        "randomize_start_s": event.randomize_start_s,
        "body": event.body,
    }


def event_from_json(data: dict[str, Any]) -> Event:
    """The inverse of event_to_json."""
    devices = data["devices"]
    return Event(
        mrid=data["mrid"],
        role=data["role"],
        primacy=data["primacy"],
        creation_time=datetime.fromisoformat(data["creation_time"]),
        start=datetime.fromisoformat(data["start"]),
        duration_s=data["duration_s"],
        control=control_from_json(data["control"]),
        devices=tuple(devices) if devices is not None else None,
        randomize_start_s=data["randomize_start_s"],
        body=data["body"],
    )
