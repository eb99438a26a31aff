"""The outbox: order, one transaction per add, the size bound, sinks, seq, crash safety."""

from __future__ import annotations

import json
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from derms_edge.northbound.mqtt import Message
from derms_edge.outbox.buffer import MQTT, Outbox, Row

PAYLOAD = b'{"ts": "2026-11-21T10:00:05.012Z", "seq": 0, "device": "inv1", "w": 4211.0}' * 5


def telemetry(n: int, topic: str = "derms/v1/site/telemetry/inv1") -> list[Message]:
    return [Message("telemetry", topic, PAYLOAD + str(i).encode()) for i in range(n)]


def response(text: str = "started") -> Message:
    return Message("response", "derms/v1/site/responses", text.encode())


def wal_commits(db: Path) -> int:
    """Commit frames in the WAL file: one per transaction that reached the disk."""
    wal = Path(f"{db}-wal")
    if not wal.exists():
        return 0
    data = wal.read_bytes()
    if len(data) < 32:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits = 0
    offset = 32
    while offset + 24 + page_size <= len(data):
        header = data[offset : offset + 24]
        if header[8:16] != salts:
            break  # a frame of an earlier WAL generation
        commits += struct.unpack(">I", header[4:8])[0] != 0
        offset += 24 + page_size
    return commits


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "telemetry.sqlite"


def test_rows_come_back_oldest_first_with_everything_stored(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    first = outbox.add(telemetry(3))
    second = outbox.add([response(), Message("telemetry", "t/x", b"\x00\xff", qos=0, retain=True)])
    assert first == [1, 2, 3] and second == [4, 5]
    rows = outbox.pending(MQTT, 10)
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    assert rows[3] == Row(4, "response", "derms/v1/site/responses", b"started", 1, False)
    assert rows[4] == Row(5, "telemetry", "t/x", b"\x00\xff", 0, True)
    assert [r.id for r in outbox.pending(MQTT, 2, after_id=2)] == [3, 4]
    assert outbox.backlog(MQTT) == 5
    outbox.close()
    reopened = Outbox(path, max_bytes=10_000_000)
    assert reopened.pending(MQTT, 10) == rows
    assert reopened.add(telemetry(1)) == [6]


def test_ids_are_never_reused_after_everything_was_delivered(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    ids = outbox.add(telemetry(4))
    outbox.done(MQTT, ids)
    assert outbox.pending(MQTT, 10) == [] and outbox.backlog(MQTT) == 0
    outbox.close()
    reopened = Outbox(path, max_bytes=10_000_000)
    assert reopened.add(telemetry(1)) == [5]
    assert reopened.last_id == 5


def test_one_add_is_one_transaction_and_one_done_is_one(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    before = wal_commits(path)
    ids = outbox.add(telemetry(10))
    assert wal_commits(path) == before + 1
    outbox.next_seq(10)  # a seq reservation alone writes nothing
    assert wal_commits(path) == before + 1
    outbox.add([response(), response("completed")])
    assert wal_commits(path) == before + 2
    outbox.done(MQTT, ids)
    assert wal_commits(path) == before + 3
    outbox.add([])
    outbox.done(MQTT, [])
    assert wal_commits(path) == before + 3


def test_the_file_is_wal_and_the_callers_commits_never_fsync(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    pragma = outbox._db.execute  # synchronous is a setting of the connection, not the file
    assert pragma("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert pragma("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: the thread fsyncs
    assert pragma("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # and checkpoints
    thread = outbox._syncer._thread  # type: ignore[union-attr]
    assert thread.is_alive() and thread.name == "outbox-fsync"
    outbox.close()
    assert not thread.is_alive()


def test_a_row_is_sendable_only_once_its_commit_is_fsynced(
    path: Path, fsync_blocked: threading.Event
) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    told = threading.Event()
    outbox.on_durable(told.set)
    outbox.next_seq(2)
    held = outbox.add(telemetry(2), hold=True)  # reserves seq ahead: a commit
    assert outbox.sendable_id == 0 and outbox.pending(MQTT, 10, up_to=0) == []
    fsync_blocked.set()
    assert told.wait(5)
    deadline = time.monotonic() + 5  # the opening's own commit may be fsynced first
    while outbox.sendable_id != held[-1] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outbox.sendable_id == held[-1]  # the reservation is on disk: the round may go
    fsync_blocked.clear()
    told.clear()
    written = outbox.add([response()])
    assert outbox.sendable_id == held[-1]
    later = outbox.add(telemetry(1), hold=True)  # held behind an unsynced commit: waits too
    assert outbox.sendable_id == held[-1]
    fsync_blocked.set()
    assert told.wait(5)
    assert outbox.sendable_id == later[-1] and written[0] < later[0]
    outbox.close()


def test_when_full_the_oldest_telemetry_goes_and_responses_stay(path: Path) -> None:
    limit = 128 * 1024
    outbox = Outbox(path, max_bytes=limit)
    responses: list[int] = []
    added: list[int] = []
    for round_ in range(300):
        added += outbox.add(telemetry(10))
        if round_ % 30 == 0:
            responses += outbox.add([response(f"r{round_}")])
        assert outbox.size_bytes() <= limit
    rows = outbox.pending(MQTT, 100_000)
    kept = [r.id for r in rows if r.kind == "telemetry"]
    assert [r.id for r in rows if r.kind == "response"] == responses
    assert 0 < len(kept) < 3000
    assert kept == added[-len(kept) :]  # the newest are kept
    assert outbox.dropped == 3000 - len(kept)
    assert outbox.backlog(MQTT) == len(rows)
    dropped = outbox.dropped
    outbox.close()
    reopened = Outbox(path, max_bytes=limit)
    assert reopened.dropped == dropped
    assert reopened.backlog(MQTT) == len(rows)
    assert path.stat().st_size <= limit + 64 * 1024  # free pages are reused, the file stays near


def test_a_buffer_of_responses_only_is_kept_beyond_the_bound(path: Path) -> None:
    outbox = Outbox(path, max_bytes=32 * 1024)
    for _ in range(200):
        outbox.add([Message("response", "r", PAYLOAD)])
    assert outbox.backlog(MQTT) == 200
    assert outbox.dropped == 0
    assert outbox.size_bytes() > 32 * 1024


def test_seq_is_strictly_increasing_across_restarts(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    assert outbox.next_seq(10) == 1
    outbox.add(telemetry(10))
    assert outbox.next_seq() == 11
    outbox.close()  # the reservation of 11 is kept by close
    reopened = Outbox(path, max_bytes=10_000_000)
    assert reopened.next_seq(5) == 12
    reopened.add(telemetry(5))
    reopened.close()
    assert Outbox(path, max_bytes=10_000_000).next_seq() == 17
    with pytest.raises(ValueError, match="at least 1"):
        reopened.next_seq(0)


def test_a_row_stays_until_every_sink_delivered_it(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000, sinks=(MQTT, "influx"))
    telemetry_ids = outbox.add(telemetry(3))
    [response_id] = outbox.add([response()])  # a response too: the history shows it
    assert [r.id for r in outbox.pending("influx", 10)] == [*telemetry_ids, response_id]
    assert [r.id for r in outbox.pending(MQTT, 10)] == [*telemetry_ids, response_id]
    assert (outbox.backlog(MQTT), outbox.backlog("influx")) == (4, 4)
    outbox.done(MQTT, [*telemetry_ids, response_id])
    assert outbox.pending(MQTT, 10) == []
    assert [r.id for r in outbox.pending("influx", 10)] == [*telemetry_ids, response_id]
    outbox.done(MQTT, telemetry_ids)  # again: nothing changes
    assert (outbox.backlog(MQTT), outbox.backlog("influx")) == (0, 4)
    outbox.done("influx", [*telemetry_ids[:2], response_id])
    outbox.close()
    # the sinks' bits are kept by name, whatever the order they are given in
    reopened = Outbox(path, max_bytes=10_000_000, sinks=("influx", MQTT))
    assert [r.id for r in reopened.pending("influx", 10)] == telemetry_ids[2:]
    assert reopened.pending(MQTT, 10) == []
    assert (reopened.backlog(MQTT), reopened.backlog("influx")) == (0, 1)
    with pytest.raises(ValueError, match="unknown outbox sink 'victoria'"):
        reopened.pending("victoria", 1)
    reopened.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM message").fetchone()[0] == 1
    db.close()


def test_a_sink_no_longer_configured_is_forgotten(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000, sinks=(MQTT, "influx"))
    ids = outbox.add(telemetry(4))
    outbox.done(MQTT, ids[:3])
    outbox.close()
    alone = Outbox(path, max_bytes=10_000_000)
    assert [r.id for r in alone.pending(MQTT, 10)] == ids[3:]
    assert alone.sinks == (MQTT,)
    alone.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM message").fetchone()[0] == 1
    db.close()


def test_listeners_hear_of_every_add_after_its_commit(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    heard: list[int] = []
    outbox.add_listener(lambda: heard.append(outbox.backlog(MQTT)))
    outbox.add(telemetry(2))
    outbox.add([])
    outbox.add([response()])
    assert heard == [2, 3]


def test_entries_of_unknown_kind_are_refused_whole(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    with pytest.raises(ValueError, match="kind"):
        outbox.add([*telemetry(2), Message("status", "s", b"{}")])  # type: ignore[arg-type]
    assert outbox.backlog(MQTT) == 0 and outbox.last_id == 0


def test_an_unreadable_file_is_moved_aside_and_a_new_one_started(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database, an SD card ate it" * 100)
    before_ms = time.time_ns() // 1_000_000
    outbox = Outbox(path, max_bytes=10_000_000)
    assert outbox.add(telemetry(1)) == [1]
    [aside] = path.parent.glob("telemetry.sqlite.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    # the seq given before is unknown: new ones must not pass for messages already seen
    assert outbox.next_seq() > before_ms
    outbox.close()
    assert Outbox(path, max_bytes=10_000_000).next_seq() > before_ms  # and it is kept


def test_a_newer_schema_is_refused_with_what_to_do(path: Path) -> None:
    Outbox(path, max_bytes=10_000_000).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this gateway's 1"):
        Outbox(path, max_bytes=10_000_000)


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from derms_edge.northbound.mqtt import Message
    from derms_edge.outbox.buffer import Outbox

    outbox = Outbox(Path(sys.argv[1]), max_bytes=100_000_000)
    while True:
        seq = outbox.next_seq(10)
        entries = [
            Message("telemetry", f"t/{i}", json.dumps({"seq": seq + i}).encode() + b" " * 300)
            for i in range(10)
        ]
        outbox.add(entries)
        print(seq + 9, flush=True)
    """
)


def test_kill_9_keeps_every_round_that_was_added(path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    stored = [int(child.stdout.readline()) for _ in range(200)]
    child.send_signal(signal.SIGKILL)  # in the middle of its next rounds
    child.wait(10)
    outbox = Outbox(path, max_bytes=100_000_000)
    seqs = [json.loads(r.payload)["seq"] for r in outbox.pending(MQTT, 1_000_000)]
    assert seqs[: stored[-1]] == list(range(1, stored[-1] + 1))  # nothing acknowledged is lost
    assert seqs == list(range(1, len(seqs) + 1))  # and nothing else is broken
    assert len(seqs) % 10 == 0  # a round is stored whole or not at all
    assert outbox.next_seq() == len(seqs) + 1
    assert outbox.last_id == len(seqs)


# -- held rounds: what the broker acknowledges in time never reaches the disk -------------


def test_a_round_delivered_before_the_next_is_never_written(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    outbox.next_seq(10)
    ids = outbox.add(telemetry(10), hold=True)  # the first held add reserves seq ahead
    commits = wal_commits(path)
    assert [r.id for r in outbox.pending(MQTT, 100)] == ids
    assert outbox.backlog(MQTT) == 10 and all(outbox.is_held(i) for i in ids)
    for _ in range(50):
        outbox.done(MQTT, ids)
        outbox.next_seq(10)
        ids = outbox.add(telemetry(10), hold=True)
    assert wal_commits(path) == commits  # 50 rounds, not one commit
    assert outbox._db.execute("SELECT COUNT(*) FROM message").fetchone()[0] == 0


def test_a_round_not_delivered_by_the_next_add_is_written_in_it(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000, sinks=(MQTT, "influx"))
    first = outbox.add(telemetry(3), hold=True)
    outbox.done(MQTT, first)  # the history database has not taken it yet
    commits = wal_commits(path)
    second = outbox.add(telemetry(3), hold=True)
    assert wal_commits(path) == commits + 1
    assert not any(outbox.is_held(i) for i in first)
    assert [r.id for r in outbox.pending("influx", 100)] == first + second  # order kept
    assert [r.id for r in outbox.pending(MQTT, 100)] == second
    assert [r.id for r in outbox.pending("influx", 4)] == [*first, second[0]]
    assert [r.id for r in outbox.pending("influx", 100, after_id=first[-1])] == second
    assert (outbox.backlog(MQTT), outbox.backlog("influx")) == (3, 6)
    outbox.add([response()])  # a response is written at once, the held round with it
    reopened_rows = sqlite3.connect(path).execute("SELECT id FROM message ORDER BY id")
    assert [r[0] for r in reopened_rows] == [*first, *second, second[-1] + 1]


def test_a_response_is_never_held(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    with pytest.raises(ValueError, match="only telemetry may be held"):
        outbox.add([*telemetry(2), response()], hold=True)
    assert outbox.backlog(MQTT) == 0 and outbox.last_id == 0


def test_close_writes_what_is_held_and_undelivered(path: Path) -> None:
    outbox = Outbox(path, max_bytes=10_000_000)
    seq = outbox.next_seq(3)
    ids = outbox.add(telemetry(3), hold=True)
    outbox.done(MQTT, ids[:1])
    outbox.close()
    reopened = Outbox(path, max_bytes=10_000_000)
    assert [r.id for r in reopened.pending(MQTT, 100)] == ids[1:]
    assert reopened.next_seq() == seq + 3  # a clean stop: seq goes on without a gap


HOLDING_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from derms_edge.northbound.mqtt import Message
    from derms_edge.outbox.buffer import MQTT, Outbox

    outbox = Outbox(Path(sys.argv[1]), max_bytes=100_000_000)
    ids = []
    while True:
        outbox.done(MQTT, ids)  # the broker acknowledged the last round
        seq = outbox.next_seq(10)
        entries = [
            Message("telemetry", f"t/{i}", json.dumps({"seq": seq + i}).encode())
            for i in range(10)
        ]
        undelivered = seq % 70 == 1  # every 7th round the broker is slow
        ids = outbox.add(entries, hold=True)
        print(seq + 9, int(undelivered), flush=True)
        if undelivered:
            ids = []
    """
)


def test_kill_9_while_holding_loses_at_most_the_last_round_and_seq_never_repeats(
    path: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDING_CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    lines = [child.stdout.readline().split() for _ in range(300)]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    given = max(int(top) for top, _ in lines)  # the child may have given more
    slow = {int(top) - 9 for top, undelivered in lines if undelivered == "1"}
    outbox = Outbox(path, max_bytes=100_000_000)
    seqs = [json.loads(r.payload)["seq"] for r in outbox.pending(MQTT, 1_000_000)]
    firsts = {s for s in seqs if s % 10 == 1}
    # every slow round was written, whole, by the add after it: all but the last, if the kill
    # came before that add
    assert slow - firsts <= {max(slow)}
    assert sorted(seqs) == sorted(s + i for s in firsts for i in range(10))
    assert outbox.next_seq() > given  # a number given before the kill is never given again
