"""The outbox: every telemetry message and control response in SQLite until each sink
(the MQTT broker, a history database) has delivered it.

Plain sqlite3, no asyncio. One ``add`` is one transaction (a telemetry round, a batch of
responses), so an SD card sees one commit per round, not one per message. The file is in WAL
mode with ``synchronous=NORMAL``: a commit is written to the WAL before ``add`` returns (it
survives ``kill -9``), and fsynced by a thread of its own (``durable.Syncer``) so the
caller, the event loop, never waits for the disk; a row is *sendable* once the commit that
wrote it is fsynced (it survives a power cut), and only then does the forwarder send it.
Pages are 1 KiB, not SQLite's 4 KiB: a commit writes whole pages to the WAL, and a round of
telemetry is a few KiB, so small pages write about 40 % fewer bytes (bench/outbox_bench.py).

A round the caller expects to be delivered at once (the broker is connected) may be *held*:
kept in memory, not written. Delivered (every sink's ``done``) before the next ``add``, it
never reaches the disk; still undelivered then, it is written in that ``add``'s transaction
(the broker is slow, or went away). So at any moment at most the last held round is in
memory only: all that a power cut or ``kill -9`` can lose while the broker is up. A held
round's seq numbers are covered by a reservation stored ahead (``SEQ_RESERVE``), so seq
never repeats after a crash (it jumps: the numbers of the lost round and those reserved and
never given). Rows not held (responses, rounds while the broker is away) are written before
``add`` returns, and sent once fsynced.

Each row carries a bit per sink that still has to deliver it; a sink's ``done`` clears its
bit and a row with no bit left is deleted. Every row is for every sink (a history store
keeps the responses too: a dashboard shows them on the events' timeline). The buffer is
bounded by the pages in use: beyond ``max_bytes`` the oldest telemetry is dropped (never
responses) and counted, persistently.
Rows get ids in insertion order; an id that reached the file is never reused, and
``next_seq`` hands out the telemetry sequence numbers, strictly increasing across restarts,
and across a file found unreadable (moved aside; seq goes on from the time in milliseconds).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from derms_edge.northbound.mqtt import Message, MessageKind
from derms_edge.outbox.durable import Syncer

log = logging.getLogger(__name__)

BUFFERED: tuple[MessageKind, ...] = ("telemetry", "response")
"""The kinds of message the outbox keeps (retained state is published directly)."""
MQTT = "mqtt"
"""The broker's sink (a gateway always has it)."""
SCHEMA_VERSION = 1
MAX_SINKS = 62
"""Sinks are bits of a SQLite integer."""
PAGE_SIZE = 1024
"""Bytes per page of a new file (an existing file keeps its own)."""
SEQ_RESERVE = 1000
"""Seq numbers reserved on disk ahead of held rounds: one small commit per 1000 messages (100
rounds of 10 devices) rather than one per round; a crash skips at most this many."""
WAL_LIMIT_BYTES = 2 * 1024 * 1024
"""The WAL file is truncated back to this size after a checkpoint (about 1 MiB is written
between checkpoints: SQLite's 1000 pages)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY,   -- insertion order, never reused (meta.last_id)
    kind TEXT NOT NULL,       -- telemetry | response
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    todo INTEGER NOT NULL     -- one bit per sink (table sink) that has not delivered it yet
);
CREATE TABLE IF NOT EXISTS sink (
    name TEXT PRIMARY KEY,
    bit INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS meta (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_id INTEGER NOT NULL,  -- the newest row id ever given
    seq INTEGER NOT NULL,      -- the newest telemetry seq ever stored
    dropped INTEGER NOT NULL   -- telemetry rows dropped because the buffer was full
);
INSERT OR IGNORE INTO meta (one, last_id, seq, dropped) VALUES (1, 0, 0, 0);
"""


@dataclass(frozen=True, slots=True)
class Row:
    """A message in the outbox; ``id`` gives the insertion order."""

    id: int
    kind: MessageKind
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False

    @property
    def message(self) -> Message:
        """The message as it is sent."""
        return Message(self.kind, self.topic, self.payload, self.qos, self.retain)


class Outbox:
    """The store-and-forward buffer in one SQLite file; use from one thread."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        sinks: Sequence[str] = (MQTT,),
    ) -> None:
        if not sinks or len(set(sinks)) != len(sinks) or len(sinks) > MAX_SINKS:
            raise ValueError(f"outbox sinks must be 1..{MAX_SINKS} distinct names, not {sinks}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        try:
            self._db = _open(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.error("telemetry buffer %s is unreadable (%s): moved to %s", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{path}{suffix}")
                if source.exists():
                    source.rename(Path(f"{aside}{suffix}"))
            self._db = _open(path)
            # The seq given so far is lost with the file: going on from 1 would make every new
            # message look like one seen before. The time in ms is above any seq this gateway
            # gave (it gives fewer than 1000 a second); subscribers see a gap, which is loss.
            floor = time.time_ns() // 1_000_000
            with self._db:
                self._db.execute("UPDATE meta SET seq = max(seq, ?)", (floor,))
            log.error("telemetry seq continues from %d", floor + 1)
        self._written_id = 0  # the newest row id written to the file (from the meta below)
        self._db.execute("PRAGMA synchronous=NORMAL")  # from now on the thread fsyncs
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # and checkpoints
        self._syncer = Syncer(path, what="telemetry buffer", thread="outbox-fsync")
        self._page_size: int = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._bits = self._assign_bits(sinks)
        last_id, seq, dropped = self._db.execute(
            "SELECT last_id, seq, dropped FROM meta"
        ).fetchone()
        self._last_id: int = last_id
        self._seq: int = seq
        self._dropped: int = dropped
        self._stored_seq = self._seq
        self._rows: int = self._db.execute("SELECT COUNT(*) FROM message").fetchone()[0]
        self._backlog: dict[str, int] = {
            sink: self._db.execute(
                "SELECT COUNT(*) FROM message WHERE todo & ?", (bit,)
            ).fetchone()[0]
            for sink, bit in self._bits.items()
        }
        self._held: dict[int, tuple[Row, int]] = {}  # id -> (row, todo): in memory only
        self._written_id = self._last_id
        self._sendable: int = self._last_id  # what the file held when opened may go at once
        self._listeners: list[Callable[[], None]] = []
        self._drop_logged = False
        self._full_logged = False

    # -- writing --------------------------------------------------------------------------

    def add(self, messages: Sequence[Message], *, hold: bool = False) -> list[int]:
        """Store these messages; their row ids, in order.

        Held rows of an earlier ``add`` that some sink has not delivered yet are written
        first, in the same transaction. Then these rows: held in memory with ``hold`` (only
        telemetry may be; a transaction only when the seq reservation must move), else
        written. Beyond ``max_bytes`` the oldest telemetry rows are dropped in the
        transaction. Listeners (``add_listener``) are called after it.
        """
        if not messages:
            return []
        first = self._last_id + 1
        rows: list[tuple[Row, int]] = []
        for offset, message in enumerate(messages):
            if message.kind not in BUFFERED:
                raise ValueError(
                    f"outbox message kind must be one of {BUFFERED}, not {message.kind!r}"
                )
            if hold and message.kind != "telemetry":
                raise ValueError(f"only telemetry may be held in memory, not {message.kind!r}")
            row = Row(
                first + offset,
                message.kind,
                message.topic,
                message.payload,
                message.qos,
                message.retain,
            )
            rows.append((row, sum(self._bits.values())))
        for sink, bit in self._bits.items():
            self._backlog[sink] += sum(bool(todo & bit) for _row, todo in rows)
        self._last_id = first + len(rows) - 1
        if hold:
            reserve = self._seq > self._stored_seq
            if self._held or reserve:
                self._write([], seq=self._seq + SEQ_RESERVE if reserve else self._stored_seq)
            self._held.update((row.id, (row, todo)) for row, todo in rows)
        else:
            self._write(rows, seq=self._seq)
        for listener in self._listeners:
            listener()
        return list(range(first, self._last_id + 1))

    def _write(self, rows: list[tuple[Row, int]], *, seq: int) -> None:
        """One transaction: the held rows still undelivered, then ``rows``; the meta (``seq``
        as the stored seq); drops beyond the bound."""
        written = [*self._held.values(), *rows]
        if written:
            self._written_id = written[-1][0].id
        with self._transaction():
            self._db.executemany(
                "INSERT INTO message (id, kind, topic, payload, qos, retain, todo) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (row.id, row.kind, row.topic, row.payload, row.qos, int(row.retain), todo)
                    for row, todo in written
                ],
            )
            dropped, dropped_per_sink = self._bound(self._rows + len(written))
            self._db.execute(
                "UPDATE meta SET last_id = ?, seq = ?, dropped = ?",
                (self._last_id, seq, self._dropped + dropped),
            )
        self._held.clear()
        self._stored_seq = seq
        self._dropped += dropped
        self._rows += len(written) - dropped
        for sink in self._bits:
            self._backlog[sink] -= dropped_per_sink[sink]

    def done(self, sink: str, ids: Sequence[int]) -> None:
        """``sink`` delivered these rows (one transaction); a row that every sink delivered
        is deleted. Ids no longer stored (dropped, or done before) are ignored."""
        if not ids:
            return
        bit = self._bit(sink)
        if self._held:
            ids = self._done_held(bit, sink, ids)
            if not ids:
                return
        params = [(id_,) for id_ in ids]
        with self._transaction():
            cleared = self._db.executemany(
                "UPDATE message SET todo = todo & ~? WHERE id = ? AND todo & ?",
                [(bit, id_, bit) for id_ in ids],
            ).rowcount
            deleted = self._db.executemany(
                "DELETE FROM message WHERE id = ? AND todo = 0", params
            ).rowcount
        self._backlog[sink] -= cleared
        self._rows -= deleted
        if deleted:  # deliveries resumed: a new run of drops will be logged again
            self._drop_logged = self._full_logged = False

    def _done_held(self, bit: int, sink: str, ids: Sequence[int]) -> list[int]:
        """Clear ``sink``'s bit of the held rows among ``ids`` (a held row no sink needs any
        more is forgotten); the ids that are not held."""
        rest = []
        for id_ in ids:
            held = self._held.get(id_)
            if held is None:
                rest.append(id_)
                continue
            row, todo = held
            if todo & bit:
                self._backlog[sink] -= 1
                if todo & ~bit:
                    self._held[id_] = (row, todo & ~bit)
                else:
                    del self._held[id_]
        return rest

    def is_held(self, id_: int) -> bool:
        """Whether row ``id_`` is held in memory (not written)."""
        return id_ in self._held

    def next_seq(self, count: int = 1) -> int:
        """Reserve ``count`` telemetry sequence numbers; the first of them.

        Strictly increasing across restarts: the reservation is stored by the next ``add``
        (which stores the messages carrying these numbers) or by ``close``. After a crash
        before that ``add``, the same numbers are handed out again, which is harmless, as no
        stored message carries them.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        first = self._seq + 1
        self._seq += count
        return first

    def on_durable(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` when more rows became sendable: in the fsync thread, so it
        must be thread-safe (``loop.call_soon_threadsafe``)."""
        self._syncer.on_durable = callback

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every ``add`` (in the thread that added)."""
        self._listeners.append(callback)

    def close(self) -> None:
        """Write the held rows not yet delivered, store the seq and close the file;
        undelivered rows stay for the next start."""
        if self._held:
            self._write([], seq=self._seq)
        elif self._seq != self._stored_seq:
            with self._transaction():
                self._db.execute("UPDATE meta SET seq = ?", (self._seq,))
            self._stored_seq = self._seq
        self._syncer.stop()  # what was committed is fsynced
        self._db.close()

    # -- reading --------------------------------------------------------------------------

    def pending(
        self, sink: str, limit: int, after_id: int = 0, up_to: int | None = None
    ) -> list[Row]:
        """Up to ``limit`` rows after ``after_id`` (and up to ``up_to``) that ``sink`` has not
        delivered, oldest first."""
        bit = self._bit(sink)
        last = self._last_id if up_to is None else up_to
        rows = []
        if after_id < self._written_id:  # else only held rows can follow: no query
            cursor = self._db.execute(
                "SELECT id, kind, topic, payload, qos, retain FROM message "
                "WHERE id > ? AND id <= ? AND todo & ? ORDER BY id LIMIT ?",
                (after_id, last, bit, limit),
            )
            rows = [
                Row(id_, cast(MessageKind, kind), topic, bytes(payload), qos, bool(retain))
                for id_, kind, topic, payload, qos, retain in cursor
            ]
        # held rows are newer than every written row: they come after
        for id_, (row, todo) in self._held.items():
            if len(rows) >= limit or id_ > last:
                break
            if id_ > after_id and todo & bit:
                rows.append(row)
        return rows

    @property
    def sendable_id(self) -> int:
        """Rows up to this id may be sent (it never decreases): every row once every commit
        is fsynced (held rows too: the fsynced reservation covers their seq), else up to the
        newest row of the last fsynced commit."""
        if self._syncer.failed:
            self._sendable = self._last_id
        else:
            commit, last_id = self._syncer.durable
            done = commit >= self._syncer.commits
            self._sendable = self._last_id if done else max(self._sendable, last_id)
        return self._sendable

    def backlog(self, sink: str) -> int:
        """Rows ``sink`` has not delivered yet."""
        self._bit(sink)
        return self._backlog[sink]

    @property
    def dropped(self) -> int:
        """Telemetry rows dropped because the buffer was full, since the file was created."""
        return self._dropped

    @property
    def last_id(self) -> int:
        """The id of the newest row ever added (0 before the first)."""
        return self._last_id

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sinks rows are kept for."""
        return tuple(self._bits)

    def size_bytes(self) -> int:
        """Bytes of the pages in use (what ``max_bytes`` bounds; the file may be larger by
        free pages it reuses)."""
        pages, free = (
            self._db.execute("PRAGMA page_count").fetchone()[0],
            self._db.execute("PRAGMA freelist_count").fetchone()[0],
        )
        return int((pages - free) * self._page_size)

    # -- inside ---------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._syncer.committed(self._written_id)

    def _bit(self, sink: str) -> int:
        try:
            return self._bits[sink]
        except KeyError:
            raise ValueError(
                f"unknown outbox sink {sink!r} (sinks: {', '.join(self._bits)})"
            ) from None

    def _assign_bits(self, sinks: Sequence[str]) -> dict[str, int]:
        """Each sink's bit, kept across restarts; sinks no longer configured are forgotten
        and rows only they still had to deliver are deleted."""
        with self._transaction():
            known = dict(self._db.execute("SELECT name, bit FROM sink").fetchall())
            for name, bit in known.items():
                if name not in sinks:
                    self._db.execute(
                        "UPDATE message SET todo = todo & ~? WHERE todo & ?", (bit, bit)
                    )
                    gone = self._db.execute("DELETE FROM message WHERE todo = 0").rowcount
                    self._db.execute("DELETE FROM sink WHERE name = ?", (name,))
                    log.info("telemetry buffer: sink %s removed; %d rows only for it", name, gone)
            bits = {name: bit for name, bit in known.items() if name in sinks}
            for name in sinks:
                if name not in bits:
                    used = set(bits.values())
                    bits[name] = next(1 << i for i in range(MAX_SINKS) if 1 << i not in used)
                    self._db.execute(
                        "INSERT INTO sink (name, bit) VALUES (?, ?)", (name, bits[name])
                    )
        return {name: bits[name] for name in sinks}

    def _bound(self, rows: int) -> tuple[int, dict[str, int]]:
        """Drop the oldest telemetry until the pages in use fit ``max_bytes`` (inside the
        caller's transaction); how many rows were dropped, in all and per sink."""
        per_sink = dict.fromkeys(self._bits, 0)
        dropped = 0
        used = self.size_bytes()
        while used > self.max_bytes and rows > 0:
            row_bytes = used / rows
            count = max(16, math.ceil((used - self.max_bytes) / row_bytes))
            victims = self._db.execute(
                "SELECT id, todo FROM message WHERE kind = 'telemetry' ORDER BY id LIMIT ?",
                (count,),
            ).fetchall()
            if not victims:
                if not self._full_logged:
                    log.error(
                        "telemetry buffer %s is full (%d bytes) of control responses only",
                        self.path,
                        used,
                    )
                    self._full_logged = True
                break
            self._db.executemany("DELETE FROM message WHERE id = ?", [(v[0],) for v in victims])
            for _id, todo in victims:
                for sink, bit in self._bits.items():
                    per_sink[sink] += bool(todo & bit)
            dropped += len(victims)
            rows -= len(victims)
            used = self.size_bytes()
        if dropped and not self._drop_logged:
            log.warning(
                "telemetry buffer %s reached %d bytes: dropping the oldest telemetry "
                "(counted in the status message)",
                self.path,
                self.max_bytes,
            )
            self._drop_logged = True
        return dropped, per_sink


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"telemetry buffer {path} has schema version {version}, newer than this "
                f"gateway's {SCHEMA_VERSION}: use a newer derms-edge or another buffer_path"
            )
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before the first write, else ignored
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db
