"""Durability off the event loop: the thread that fsyncs a SQLite file's WAL and checkpoints it
(the outbox's, and the schedule store's).

The outbox's connection commits with ``synchronous=NORMAL``: a commit is a ``write`` into
the WAL, in the page cache (it survives ``kill -9``), not an fsync, so the event loop never
waits for an SD card. This thread makes each commit durable (survives a power cut): it
fsyncs the WAL file, then says which commit is durable now. The forwarder sends nothing a
commit wrote before that commit is durable (``Outbox.sendable_id``). The thread also moves
the WAL into the database file (a PASSIVE checkpoint, from its own connection) once the
WAL has grown beyond ``checkpoint_bytes``; the outbox's connection never checkpoints.

fsync on a second descriptor of the WAL file flushes the file, whoever wrote it; SQLite
holds no POSIX lock on the WAL file (they are on the database and ``-shm`` files), so the
descriptor cannot release one of SQLite's locks when it is closed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 1024 * 1024
"""The WAL is checkpointed into the database once it is this large."""


class Syncer:
    """fsyncs the WAL of the database at ``path`` after each commit it is told of.

    ``durable`` is (commit number, newest row id written) of the newest commit known to be on
    disk; the commit numbers are the writer's, counted from 1 after the thread started (0:
    the file as it was opened). ``on_durable`` is called in this thread after each fsync.
    ``what`` names the file in the log, ``thread`` the thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        thread: str,
        on_durable: Callable[[], object] | None = None,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
    ) -> None:
        self._wal = Path(f"{path}-wal")
        self._path = path
        self._what = what
        self._checkpoint_bytes = checkpoint_bytes
        self.on_durable = on_durable
        self.durable: tuple[int, int] = (0, 0)
        self.failed = False
        """The thread failed: commits are no longer fsynced (the outbox then sends them all
        the same: delivering beats holding rows back forever)."""
        self._wanted: tuple[int, int] = self.durable
        self.commits = 0
        """The number of the last commit the writer told of (``committed``)."""
        self._stopping = False
        self._changed = threading.Condition()
        self._fd = os.open(self._wal, os.O_RDONLY | os.O_CREAT, 0o644)
        self._thread = threading.Thread(target=self._run, name=thread, daemon=True)
        self._thread.start()

    def committed(self, last_id: int = 0) -> None:
        """The writer committed (rows up to ``last_id``): number it (``commits``) and make it
        durable."""
        with self._changed:
            self.commits += 1
            self._wanted = (self.commits, last_id)
            self._changed.notify()

    def wait(self, commit: int, timeout_s: float) -> bool:
        """Block until commit number ``commit`` is durable or the thread failed (or ended);
        whether it is durable. For callers that may block (a test, a tool), never the loop."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.durable[0] >= commit or self.failed or not self._thread.is_alive(),
                timeout_s,
            )
            return self.durable[0] >= commit

    def stop(self) -> None:
        """Make what was committed durable, and end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()
        os.close(self._fd)

    def _run(self) -> None:
        checkpointer: sqlite3.Connection | None = None
        try:
            while True:
                with self._changed:
                    while self._wanted == self.durable and not self._stopping:
                        self._changed.wait()
                    wanted, stopping = self._wanted, self._stopping
                if wanted != self.durable:
                    os.fsync(self._fd)
                    with self._changed:
                        self.durable = wanted
                        self._changed.notify_all()
                    self._tell()
                if stopping:
                    return
                if os.fstat(self._fd).st_size > self._checkpoint_bytes:
                    if checkpointer is None:
                        checkpointer = sqlite3.connect(self._path, isolation_level=None)
                        checkpointer.execute("PRAGMA synchronous=FULL")
                    checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # the writer goes on; commits are no longer fsynced: say so loudly
            with self._changed:
                self.failed = True
                self._changed.notify_all()
            log.exception("%s: the fsync thread failed; a power cut may lose data", self._what)
            self._tell()
        finally:
            if checkpointer is not None:
                checkpointer.close()

    def _tell(self) -> None:
        """Call ``on_durable``; its failure (a loop already closed) is not this thread's."""
        if self.on_durable is None:
            return
        try:
            self.on_durable()
        except Exception:
            log.exception("%s: telling of fsynced commits failed", self._what)
