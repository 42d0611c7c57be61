"""A durable local queue for writes the state store could not take (Redis unreachable).

The router acknowledges a prediction's record or a reward while Redis is away only once it is
in this spool, on local disk (SQLite, WAL, synchronous=FULL: committed means fsynced), and
replays the spool in order when Redis is back. Replay is safe to repeat: a record carries its
call's nonce and a reward is claimed once by the reward script, so an item replayed twice (a
crash between applying and deleting it) changes nothing the second time.

Each router replica owns one file, locked (flock) while the replica lives; a replica that finds
another's file unlocked (its owner died) adopts the items, so nothing spooled is lost with a
replica. An item may be put off (`defer`): a reward whose prediction's record is still in
another replica's spool waits for it.

>>> import tempfile, asyncio
>>> spool = Spool(Path(tempfile.mkdtemp()))
>>> asyncio.run(spool.put("reward", {"request_id": "r1"}))
>>> spool.pending(), asyncio.run(spool.peek(10))[0][1:]
(1, ('reward', {'request_id': 'r1'}))
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from gateway.store.embedded import private_dir

log = logging.getLogger("gateway.spool")


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL)")
    columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    if "not_before" not in columns:  # a spool written by an earlier version
        db.execute("ALTER TABLE items ADD COLUMN not_before REAL NOT NULL DEFAULT 0")
    return db


def default_owner() -> str:
    """Unique across hosts, pods and pid reuse: the spool folder may be shared or kept."""
    return f"router-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class Spool:
    def __init__(self, folder: Path, owner: str | None = None):
        # Spooled records carry request features: for this user's eyes only, whoever made the folder.
        private_dir(folder)
        self.folder = folder
        self.owner = owner or default_owner()
        self.path = folder / f"{self.owner}.sqlite"
        self._lock_file = open(self.path.with_suffix(".lock"), "a+")  # noqa: SIM115 - held for life
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._db = _open(self.path)
        for own in (self.path, self.path.with_suffix(".lock")):
            os.chmod(own, 0o600)
        self._mutex = threading.Lock()
        self._count = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def pending(self) -> int:
        return self._count

    async def put(self, kind: str, payload: dict[str, Any]) -> None:
        """Returns once the item is on disk (fsynced)."""
        await asyncio.to_thread(self._put_many, [(kind, json.dumps(payload))])

    async def put_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        await asyncio.to_thread(self._put_many, [(k, json.dumps(p)) for k, p in items])

    def _put_many(self, rows: list[tuple[str, str]]) -> None:
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO items (kind, payload) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
            self._count += len(rows)

    async def peek(self, limit: int, after: int = 0, now: float | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """The oldest `limit` items after id `after` that are not put off past `now`, in the order
        they were spooled."""
        now = time.time() if now is None else now

        def read():
            with self._mutex:
                rows = self._db.execute(
                    "SELECT id, kind, payload FROM items WHERE id > ? AND not_before <= ? ORDER BY id LIMIT ?",
                    (after, now, limit),
                ).fetchall()
            return [(i, k, json.loads(p)) for i, k, p in rows]

        return await asyncio.to_thread(read)

    async def defer(self, ids: list[int], until: float) -> None:
        """Put items off: `peek` skips them until `until`."""
        def update():
            with self._mutex:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("UPDATE items SET not_before = ? WHERE id = ?", [(until, i) for i in ids])
                self._db.execute("COMMIT")

        await asyncio.to_thread(update)

    def records_pending(self) -> int:
        """Predictions' records still waiting here (a reward for one of them must wait too)."""
        with self._mutex:
            return self._db.execute("SELECT COUNT(*) FROM items WHERE kind = 'record'").fetchone()[0]

    def peers_pending(self) -> int:
        """Items in the other spools of this folder (other replicas on this node, alive or not)."""
        total = 0
        for other in self.folder.glob("*.sqlite"):
            if other == self.path:
                continue
            try:
                db = sqlite3.connect(f"file:{other}?mode=ro", uri=True)
                try:
                    total += db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
                finally:
                    db.close()
            except sqlite3.Error:
                continue  # being adopted or removed right now
        return total

    async def delete(self, ids: list[int]) -> None:
        def remove():
            with self._mutex:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
                self._db.execute("COMMIT")
                self._count = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

        await asyncio.to_thread(remove)

    async def adopt_orphans(self) -> int:
        """Move the items of spools whose replica died (their lock is free) into this one."""
        return await asyncio.to_thread(self._adopt)

    def _adopt(self) -> int:
        moved = 0
        for other in sorted(self.folder.glob("*.sqlite")):
            if other == self.path:
                continue
            with open(other.with_suffix(".lock"), "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its replica is alive
                db = _open(other)
                rows = db.execute("SELECT kind, payload FROM items ORDER BY id").fetchall()  # put-offs are due again
                if rows:
                    self._put_many(rows)
                    moved += len(rows)
                db.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(str(other) + suffix).unlink(missing_ok=True)
                other.with_suffix(".lock").unlink(missing_ok=True)
        if moved:
            log.warning("adopted %d spooled writes of a replica that stopped", moved)
        return moved

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._lock_file.close()
