"""The log's side of C2SP tlog-witness: ask the configured witnesses to cosign each new
checkpoint, keep the cosignatures they return, serve checkpoints with them.

* Off the append path: :class:`Cosigner` runs as its own task, one loop per witness, reading
  ``ledger.db`` read-only; the sequencer never waits for a witness. A witness that is down or
  refuses is retried every ``interval_s`` with the *latest* checkpoint (a witness only needs
  the newest one; tlog-witness lets the log skip sizes).
* The witness's size: the loop remembers the size each witness last cosigned (initially the
  largest size stored for it, else 0). A 409 answer carries the witness's size; if it is not
  beyond our checkpoint the request is repeated at once from that size. A witness ahead of
  our latest checkpoint has seen another tree or a rollback of ours: nothing is sent until
  our log grows past it, and it is logged as an error.
* Every returned line is verified under the witness's key before it is stored (fail closed:
  a bad line is dropped and logged, never served).
* ``DATA/cosignatures.db`` (SQLite, ``synchronous=FULL``; the cosigner writes, the API reads)
  holds ``(size, witness vkey, line)``. :func:`attach` adds a size's lines to its note.

Witnesses are configured as ``"<URL> <witness vkey>"`` strings (``GOVLEDGER_WITNESSES``, a
JSON list): the URL is the submission prefix, ``/add-checkpoint`` is appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import httpx

from ledger.core.checkpoint import parse_vkey, verify_checkpoint
from ledger.core.cosignature import (
    WitnessKey,
    add_cosignatures,
    cosignatures_of,
    parse_witness_vkey,
)
from ledger.core.witnessing import SIZE_CONTENT_TYPE, build_add_checkpoint
from ledger.errors import ConfigError, GovLedgerError, NotFound, ProofError, Unavailable
from ledger.log.ledger_dir import DB_NAME
from ledger.log.sqlite import Transaction, open_sqlite
from ledger.log.store import LedgerStore

COSIGNATURES_DB: Final = "cosignatures.db"
_SCHEMA: Final = ("CREATE TABLE IF NOT EXISTS cosignatures (size INTEGER NOT NULL, "
                  "witness TEXT NOT NULL, line TEXT NOT NULL, PRIMARY KEY (size, witness))")
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WitnessEndpoint:
    """A witness the log asks: its submission URL prefix and its cosignature key."""

    url: str
    key: WitnessKey


def parse_witness_endpoints(entries: Sequence[str]) -> tuple[WitnessEndpoint, ...]:
    """Each entry ``"<http(s) URL> <witness vkey>"``. Raises ConfigError."""
    endpoints = []
    for entry in entries:
        parts = entry.split()
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise ConfigError(f"witness {entry[:100]!r}: give \"<http(s) URL> <vkey>\"")
        try:
            endpoints.append(WitnessEndpoint(parts[0].rstrip("/"), parse_witness_vkey(parts[1])))
        except ProofError as exc:
            raise ConfigError(f"witness {parts[0]}: {exc}") from exc
    if len({e.key.public_key for e in endpoints}) != len(endpoints):
        raise ConfigError("the same witness key is configured twice")
    return tuple(endpoints)


class CosignatureStore:
    """``DATA/cosignatures.db``. A reader of a missing file sees no cosignatures."""

    def __init__(self, data_dir: Path, *, writer: bool = False) -> None:
        """Raises Unavailable."""
        self.path = data_dir / COSIGNATURES_DB
        self.conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one statement or transaction at a time, any thread
        if writer:
            self.conn = open_sqlite(self.path, "cosignatures", check_same_thread=False)
            with Transaction(self.conn, "cosignatures"):
                self.conn.execute(_SCHEMA)
        else:
            self._open_reader()

    def _open_reader(self) -> None:
        """A reader opens the file once the cosigner has created it."""
        if self.conn is None and self.path.exists():
            self.conn = open_sqlite(self.path, "cosignatures", readonly=True,
                                    check_same_thread=False)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _rows(self, sql: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        self._open_reader()
        if self.conn is None:
            return []
        try:
            with self._lock:
                return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created by the writer's first open
                return []
            raise Unavailable(f"cosignatures read failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise Unavailable(f"cosignatures read failed: {exc}") from exc

    def add(self, size: int, witness_vkey: str, line: str) -> None:
        """Store a verified cosignature line. Raises Unavailable."""
        assert self.conn is not None, "a reader cannot add"
        with self._lock, Transaction(self.conn, "cosignatures"):
            self.conn.execute("INSERT OR REPLACE INTO cosignatures VALUES (?, ?, ?)",
                              (size, witness_vkey, line))

    def lines_at(self, size: int) -> list[str]:
        """The cosignature lines stored for ``size``, in witness order."""
        return [str(r[0]) for r in self._rows(
            "SELECT line FROM cosignatures WHERE size = ? ORDER BY witness", (size,))]

    def latest_size(self, *, witness_vkey: str | None = None, at_least: int = 1) -> int | None:
        """The largest size with ``at_least`` cosignatures (by ``witness_vkey`` if given)."""
        rows = self._rows("SELECT size FROM cosignatures WHERE ? IS NULL OR witness = ? "
                          "GROUP BY size HAVING COUNT(*) >= ? ORDER BY size DESC LIMIT 1",
                          [witness_vkey, witness_vkey, at_least])
        return None if not rows else int(str(rows[0][0]))


def attach(note: str, size: int, cosignatures: CosignatureStore) -> str:
    """``note`` (the checkpoint at ``size``) with the cosignatures stored for it."""
    lines = cosignatures.lines_at(size)
    return add_cosignatures(note, lines) if lines else note


_BUNDLE_NOTES: Final = (("checkpoint", "tree_size"), ("old_checkpoint", "old_size"),
                        ("new_checkpoint", "new_size"))


def attach_to_bundle(bundle: dict[str, object],
                     cosignatures: CosignatureStore) -> dict[str, object]:
    """``bundle`` with the stored cosignatures added to each checkpoint note it carries
    (offline verification ignores lines by keys it was not given)."""
    out = dict(bundle)
    for note_key, size_key in _BUNDLE_NOTES:
        note, size = out.get(note_key), out.get(size_key)
        if isinstance(note, str) and isinstance(size, int):
            out[note_key] = attach(note, size, cosignatures)
    return out


def witnessed_size(cosignatures: CosignatureStore, at_least: int) -> int:
    """The largest checkpoint size with ``at_least`` stored cosignatures. Raises NotFound."""
    size = cosignatures.latest_size(at_least=at_least)
    if size is None:
        raise NotFound(f"no checkpoint has {at_least} witness cosignature(s) yet")
    return size


class WitnessConflict(Exception):
    """A 409 answer: the witness's latest cosigned size is ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(f"witness is at size {size}")


async def post_checkpoint(http: httpx.AsyncClient, url: str, body: bytes) -> str:
    """POST an add-checkpoint body; the response body on 200.

    Raises WitnessConflict (409 with a size), ProofError (any other refusal), Unavailable
    (no answer)."""
    try:
        response = await http.post(f"{url}/add-checkpoint", content=body)
    except httpx.HTTPError as exc:
        raise Unavailable(f"witness {url} unreachable: {exc}") from exc
    if response.status_code == 409 and \
            response.headers.get("content-type", "").startswith(SIZE_CONTENT_TYPE):
        text = response.text
        if text.endswith("\n") and text[:-1].isdigit():
            raise WitnessConflict(int(text[:-1]))
    if response.status_code != 200:
        raise ProofError(f"witness {url} refused ({response.status_code}): "
                         f"{response.text[:200].strip()}")
    return response.text


def _cosignature_line(note: str, answer: str, witness: WitnessEndpoint) -> str:
    """The line of ``answer`` that is a valid cosignature of ``note`` by ``witness``.
    Raises ProofError if the answer is malformed, has a bad line by the witness's key, or
    none by it."""
    lines = answer.splitlines(keepends=True)
    for line in lines:  # a line by the witness's key that does not verify raises
        if cosignatures_of(add_cosignatures(note, [line]), [witness.key])[1]:
            return line
    raise ProofError(f"witness {witness.url} answered no cosignature by its key")


class Cosigner:
    """Asks each witness to cosign the latest checkpoint of the ledger in ``data_dir``."""

    def __init__(self, data_dir: Path, witnesses: Sequence[WitnessEndpoint], *,
                 interval_s: float = 0.5, timeout_s: float = 10.0) -> None:
        self.data_dir, self.witnesses = data_dir, tuple(witnesses)
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.cosignatures = CosignatureStore(data_dir, writer=True)
        # Per witness vkey: the largest size it cosigned for us (stored), and the size we
        # believe it holds (a 409 corrects it).
        self.cosigned: dict[str, int] = {}
        for w in self.witnesses:
            size = self.cosignatures.latest_size(witness_vkey=w.key.vkey)
            if size is not None:
                self.cosigned[w.key.vkey] = size
        self.sizes: dict[str, int] = {w.key.vkey: self.cosigned.get(w.key.vkey, 0)
                                      for w in self.witnesses}
        # Ledger reads run in one thread of their own: the read-only store's connection
        # stays in it, and the event loop never waits on SQLite.
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="cosigner-reads")
        self._ledger: LedgerStore | None = None
        self._closed = False

    def close(self) -> None:
        """Close the ledger reader (in its thread) and the cosignature store."""
        def close_reader() -> None:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
        self._closed = True
        self._reads.submit(close_reader).result()
        self._reads.shutdown()
        self.cosignatures.close()

    def _read(self, work: Callable[[], T]) -> Awaitable[T]:
        """Run a ledger read in the reads thread. Raises Unavailable once closed (a stop
        cut short can close the cosigner before its task has ended)."""
        if self._closed:
            raise Unavailable("the cosigner is closed")
        return asyncio.get_running_loop().run_in_executor(self._reads, work)

    def _store(self) -> LedgerStore:
        if self._ledger is None:
            self._ledger = LedgerStore(self.data_dir / DB_NAME)
        return self._ledger

    def _latest(self) -> tuple[int, str] | None:
        """The latest checkpoint the sequencer verified and signed (checked under the
        ledger's vkey), or None. Runs in a worker thread. Raises ProofError, Unavailable."""
        store = self._store()
        latest, vkey, origin = store.latest_checkpoint(), store.meta("vkey"), store.meta("origin")
        if latest is None or vkey is None or store.verified() is None:
            return None
        verify_checkpoint(latest[1], parse_vkey(vkey), origin)
        return latest

    def _proof(self, old_size: int, new_size: int) -> list[bytes]:
        if old_size in (0, new_size):
            return []
        return self._store().consistency_proof(old_size, new_size)

    async def ask(self, http: httpx.AsyncClient, witness: WitnessEndpoint) -> str:
        """One attempt to have ``witness`` cosign the latest checkpoint; what happened.

        Raises ProofError (a refusal or a bad cosignature) or Unavailable."""
        latest = await self._read(self._latest)
        vkey = witness.key.vkey
        if latest is None:
            return "no checkpoint yet"
        size, note = latest
        if self.cosigned.get(vkey) == size:
            return "up to date"
        for _ in range(2):  # a 409 tells the witness's size: one more try from there
            old = self.sizes[vkey]
            if old > size:
                raise ProofError(f"witness {witness.url} cosigned size {old}, beyond this "
                                 f"log's latest checkpoint {size}: it saw another tree")
            proof = await self._read(functools.partial(self._proof, old, size))
            try:
                answer = await post_checkpoint(http, witness.url,
                                               build_add_checkpoint(old, proof, note))
            except WitnessConflict as conflict:
                if conflict.size == old == size:
                    raise ProofError(f"witness {witness.url} cosigned another tree at size "
                                     f"{size}: this log's view is split") from conflict
                self.sizes[vkey] = conflict.size
                continue
            line = _cosignature_line(note, answer, witness)
            await asyncio.to_thread(self.cosignatures.add, size, vkey, line)
            self.sizes[vkey] = self.cosigned[vkey] = size
            return f"cosigned size {size}"
        raise ProofError(f"witness {witness.url} keeps answering 409")

    async def run(self, stop: asyncio.Event) -> None:
        """Ask every witness, each in its own loop, until ``stop`` is set."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            await asyncio.gather(*(self._loop(http, w, stop) for w in self.witnesses))

    async def _loop(self, http: httpx.AsyncClient, witness: WitnessEndpoint,
                    stop: asyncio.Event) -> None:
        last = ""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                asking = asyncio.ensure_future(self.ask(http, witness))
                await asyncio.wait((asking, stopped), return_when=asyncio.FIRST_COMPLETED)
                if not asking.done():  # stopping: a slow witness does not hold the exit
                    asking.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asking
                    return
                try:
                    outcome = asking.result()
                except GovLedgerError as exc:  # nothing cosigned: retried with the latest
                    outcome = f"not cosigned: {exc}"
                    if outcome != last:
                        log.error("witness %s: %s", witness.url, exc)
                last = outcome
                with contextlib.suppress(TimeoutError):  # the interval passed
                    await asyncio.wait_for(asyncio.shield(stopped), self.interval_s)
        finally:
            stopped.cancel()
