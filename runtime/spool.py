"""A bounded, ordered, on-disk queue of outgoing messages (SQLite, stdlib).

Why on disk: a broker that is down for an hour must not cost an hour of decisions,
and a runtime restarted by systemd in the meantime must still send them. Why
SQLite: ordered by an integer key, atomic batches, bounded with one DELETE, and no
new dependency. The per-station sequence number lives in the same file, so it keeps
increasing across restarts and a consumer can tell a gap from a restart.

Only one thread (the MQTT sender) touches the connection.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)


class Spool:
    """``push`` messages (seq, payload), ``pending`` the oldest, ``ack`` sent ones."""

    def __init__(self, path: Path, max_messages: int, station: str = "default") -> None:
        self.path = Path(path)
        self.max_messages = int(max_messages)
        self.station = station
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_beside(self.path)
        try:
            self._open()
        except BaseException:
            self._lock.close()
            raise

    def _open(self) -> None:
        station = self.station
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a process crash, not a power cut
        self._db.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, payload TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (station TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, dropped INTEGER NOT NULL)")
        row = self._db.execute("SELECT last_seq, dropped FROM meta WHERE station=?", (station,)).fetchone()
        self.last_seq, self.dropped = (row[0], row[1]) if row else (0, 0)
        for name, v in (("last_seq", self.last_seq), ("dropped", self.dropped)):
            if not isinstance(v, int) or v < 0:  # SQLite keeps what it is given: 'abc' made every push raise
                raise ValueError(f"corrupt spool: meta.{name} is {v!r}, not a count")
        bad = self._db.execute("SELECT COUNT(*) FROM queue WHERE typeof(seq) != 'integer' OR typeof(payload) != 'text'").fetchone()[0]
        if bad:
            raise ValueError(f"corrupt spool: {bad} queued messages are not (integer seq, text payload)")
        self.depth = self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def push(self, items: Iterable[tuple]) -> int:
        """Append (seq, payload) pairs in one transaction; drop the oldest beyond
        ``max_messages`` (counted). Returns how many were dropped now."""
        items = list(items)
        if not items:
            return 0
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT INTO queue (seq, payload) VALUES (?, ?)", items)
        self.depth += len(items)
        over = self.depth - self.max_messages
        if over > 0:
            db.execute("DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?)", (over,))
            self.depth -= over
            self.dropped += over
        self.last_seq = max(self.last_seq, max(s for s, _ in items))
        db.execute("INSERT OR REPLACE INTO meta (station, last_seq, dropped) VALUES (?, ?, ?)", (self.station, self.last_seq, self.dropped))
        db.execute("COMMIT")
        return max(over, 0)

    def pending(self, after_id: int, limit: int) -> list:
        """Up to ``limit`` queued (id, seq, payload), oldest first, with id > after_id."""
        return self._db.execute("SELECT id, seq, payload FROM queue WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()

    def ack(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM queue WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")
            self.depth = max(self.depth - (self._db.total_changes - before), 0)  # ids dropped meanwhile are gone

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            log.debug("spool: close failed", exc_info=True)
        self._lock.close()  # releases the lock


def _lock_beside(path: Path):
    """An exclusive lock on ``PATH.lock``, held while the spool is open. Why: two
    `edge-mla run` processes on one host with the same station name share the default
    spool, and each published the other's decisions with repeated sequence numbers."""
    import fcntl
    import os

    f = open(path.with_name(path.name + ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise ValueError(f"in use by another edge-mla run (pid {holder}); give each run its own --mqtt-spool or station name") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
