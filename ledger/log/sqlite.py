"""The one SQLite opener, writer lock, transaction and rollback for the ledger and the
processor journal (the journal's batch append runs its own BEGIN/COMMIT, because its
conflict check raises inside the transaction, but rolls back with :func:`rollback`).

Every durable file of govledger is opened here, with the same settings:

* ``journal_mode=WAL`` (writers; a read-only open cannot change it) so readers never block
  the writer;
* ``synchronous=FULL``: a commit is on disk before it returns (DESIGN.md section 6: the
  journal is written before outputs are published, the ledger before offsets move);
* ``busy_timeout=10000``: wait up to 10 s for another connection's lock, never fail at once;
* a reader opens ``file:...?mode=ro`` (it cannot write, even by mistake) and a missing file
  is a ConfigError, not a new empty database;
* any ``sqlite3.Error`` becomes :class:`ledger.errors.Unavailable` (the system is at fault).

Callers add their own ``pragmas`` where they differ on purpose: the ledger store keeps temp
tables in memory, turns ``secure_delete`` off (its deleted rows are copies of public ids) and
gives readers a 64 MiB and the writer a 256 MiB page cache (the writer walks the lookup index
and hash pages of every batch); the journal keeps SQLite's defaults (small rows, one batch at
a time). Processors may import this module (issue 12: the one ``ledger.log`` module they use).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Final

from ledger.errors import ConfigError, Unavailable

DURABLE: Final = ("synchronous=FULL", "busy_timeout=10000")
"""The pragmas of every connection (WAL is set on opening a writer)."""
VARIABLES: Final = 999
"""Bound parameters per statement that every SQLite accepts (the limit before 3.32)."""
MAX_VARIABLES: Final = 30_000 if sqlite3.sqlite_version_info >= (3, 32) else VARIABLES
"""Bound parameters per statement this SQLite accepts (32,766 from 3.32), with room."""


def open_sqlite(path: Path, what: str, *, readonly: bool = False,
                pragmas: Sequence[str] = (), check_same_thread: bool = True
                ) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode (transactions are explicit, see
    :class:`Transaction`) with :data:`DURABLE` and then ``pragmas`` applied. ``what`` names
    the file in errors. Raises ConfigError (``readonly`` and no file) or Unavailable."""
    try:
        if readonly:
            if not path.exists():
                raise ConfigError(f"no {what} at {path}")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=check_same_thread)
        else:
            conn = sqlite3.connect(path, isolation_level=None,
                                   check_same_thread=check_same_thread)
            conn.execute("PRAGMA journal_mode=WAL")
        for pragma in (*DURABLE, *pragmas):
            conn.execute(f"PRAGMA {pragma}")
    except sqlite3.Error as exc:
        raise Unavailable(f"cannot open {what} {path}: {exc}") from exc
    return conn


def insert_rows(conn: sqlite3.Connection, head: str, width: int,
                rows: Sequence[tuple[object, ...]]) -> None:
    """``head VALUES (...), (...), ...``: ``rows`` of ``width`` values each, as many rows
    per statement as :data:`VARIABLES` allows. The ledger's append inserts ~2 rows a leaf:
    one statement per ~200 rows costs ~25% less CPU than ``executemany``'s statement per
    row (measured: docs/ledger.md, Group commit). Raises sqlite3.Error."""
    per = VARIABLES // width
    row = f"({','.join('?' * width)})"
    full = f"{head} VALUES {','.join([row] * per)}"
    for start in range(0, len(rows), per):
        chunk = rows[start:start + per]
        sql = full if len(chunk) == per else f"{head} VALUES {','.join([row] * len(chunk))}"
        conn.execute(sql, list(chain.from_iterable(chunk)))


def lock_writer(path: Path) -> int:
    """Take the single-writer lock of database ``path`` (an exclusive ``flock`` on
    ``<path>.lock``, held until the returned descriptor is closed). Raises Unavailable if
    another process holds it or the lock file cannot be opened."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # a full disk or a read-only directory
        raise Unavailable(f"cannot open {path}.lock: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise Unavailable(f"another writer holds {path}.lock") from exc
    return fd


def writer_holds(path: Path) -> bool:
    """True while a writer holds the lock of :func:`lock_writer` on database ``path``: a
    shared lock on ``<path>.lock`` is refused then. Raises Unavailable if the lock file
    cannot be opened or probed."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise Unavailable(f"cannot open {path}.lock: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as exc:
        raise Unavailable(f"cannot probe {path}.lock: {exc}") from exc
    finally:
        os.close(fd)
    return False


def rollback(conn: sqlite3.Connection) -> str:
    """Roll back what is left of a failed write; "" or why that failed.

    SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR: then a ROLLBACK fails
    with "no transaction is active", which must not hide the error that caused it); a
    ROLLBACK that fails otherwise leaves the connection unusable, which the caller's
    Unavailable reports: it stops the writer.
    """
    if not conn.in_transaction:
        return ""
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as err:
        return f" (and the rollback failed: {err})"
    return ""


class Writing:
    """BEGIN IMMEDIATE, and ROLLBACK on any error: SQLite errors become Unavailable
    ("{what} write failed: ..."), any other error goes on, noting a failed rollback. No
    COMMIT: the caller commits (the ledger's append may commit on another thread)."""

    def __init__(self, conn: sqlite3.Connection, what: str) -> None:
        self.conn, self.what = conn, what

    def __enter__(self) -> None:
        begin(self.conn, self.what)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc is not None:
            error = write_failed(self.conn, exc, self.what)
            if error is not exc:
                raise error


class Transaction(Writing):
    """:class:`Writing`, then COMMIT when the block ends without an error."""

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if kind is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as err:
                raise write_failed(self.conn, err, self.what, "commit") from err
        super().__exit__(kind, exc, tb)


def begin(conn: sqlite3.Connection, what: str) -> None:
    """BEGIN IMMEDIATE: the write lock now, not at the first write. Raises Unavailable."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise Unavailable(f"{what} write failed: {exc}") from exc


def write_failed(conn: sqlite3.Connection, exc: BaseException, what: str,
                 step: str = "write") -> BaseException:
    """Roll back what is left of a failed write and return the error to raise: a SQLite
    error becomes Unavailable ("{what} {step} failed: ...", caused by it); any other (a
    ProofError) is itself, noting a failed rollback."""
    undone = rollback(conn)
    if isinstance(exc, sqlite3.Error):
        error = Unavailable(f"{what} {step} failed: {exc}{undone}")
        error.__cause__ = exc
        return error
    if undone:
        exc.add_note(f"{what} {step}:{undone}")
    return exc
