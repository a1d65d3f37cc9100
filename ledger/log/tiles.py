"""C2SP tlog-tiles read from the SQLite ledger, and written as static files.

Tiles are read under the latest *published* checkpoint (verified under the log's vkey, as
``ledger.log.proofs`` does for bundles): a leaf sequenced after it is not in any tile yet,
and a tile past that size is NotFound. A tile's hashes are stored node hashes (a tile at
level L is the stored subtrees at level 8L, :func:`ledger.core.tiles.tile_node_ids`), read
in one query; an entry bundle is one range query over ``leaves``.

:func:`export_tiles` writes ``checkpoint``, ``tile/<L>/<N>[.p/<W>]`` and
``tile/entries/<N>[.p/<W>]`` under a directory a CDN or an object store can serve as is.
Re-export is idempotent; a full tile or bundle already there with other bytes is refused
(full tiles are immutable: different bytes mean another log or a rewritten one), and so is
a directory holding a checkpoint of another origin or of a larger tree. Every file is
written to a temporary name and renamed; ``checkpoint`` last, so a reader never sees a
checkpoint whose tiles are missing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ledger.core import merkle
from ledger.core.checkpoint import Checkpoint, parse_checkpoint, parse_vkey, verify_checkpoint
from ledger.core.tiles import (
    TILE_WIDTH,
    TileId,
    bundles_for_size,
    check_in_tree,
    encode_bundle,
    tile_node_ids,
    tiles_for_size,
)
from ledger.errors import ConfigError, ProofError, Unavailable
from ledger.log.ledger_dir import DB_NAME
from ledger.log.proofs import published_note
from ledger.log.store import LedgerStore

CHECKPOINT_FILE: Final = "checkpoint"


def published(store: LedgerStore, vkey: str | None = None) -> tuple[Checkpoint, str]:
    """The latest signed checkpoint (parsed) and its note, verified under ``vkey`` (default:
    the ledger's). Raises ProofError or Unavailable (ledger not verified yet)."""
    note = published_note(store, vkey)
    return parse_checkpoint(note[:note.index("\n\n") + 1]), note


def read_tile(store: LedgerStore, tile: TileId, size: int) -> bytes:
    """The bytes of hash tile ``tile`` in the tree of ``size`` leaves (a published size).
    Raises NotFound (past the tree size), ProofError (a stored hash is missing) or
    Unavailable."""
    check_in_tree(tile, size)
    ids = [merkle.stored_hash_index(n) for n in tile_node_ids(tile)]
    found = store.hashes_by_id(ids)
    if len(found) != len(ids):
        raise ProofError(f"stored hashes of {tile.path} are missing")
    return b"".join(found[i] for i in ids)


def read_entries(store: LedgerStore, bundle: TileId, size: int) -> bytes:
    """The entry bundle ``bundle`` in the tree of ``size`` leaves. Raises NotFound (past the
    tree size), ProofError (a leaf missing, or longer than a bundle carries) or
    Unavailable."""
    check_in_tree(bundle, size)
    first = bundle.index * TILE_WIDTH
    try:
        rows = store.conn.execute("SELECT idx, leaf FROM leaves WHERE idx >= ? AND idx < ? "
                                  "ORDER BY idx", (first, first + bundle.width)).fetchall()
    except sqlite3.Error as exc:
        raise Unavailable(f"ledger read failed: {exc}") from exc
    if [int(r[0]) for r in rows] != list(range(first, first + bundle.width)):
        raise ProofError(f"leaves of {bundle.path} are missing")
    return encode_bundle([bytes(r[1]) for r in rows])


def read_path(store: LedgerStore, tile: TileId, size: int) -> bytes:
    """A hash tile or an entry bundle, by its parsed path."""
    return read_entries(store, tile, size) if tile.entries else read_tile(store, tile, size)


# -- static files -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What one export did: the tree size exported, files written and files kept as they
    were (already there with the same bytes)."""

    tree_size: int
    written: int
    unchanged: int


Progress = Callable[[int, int], None]
"""Called with (files done, files in all) as an export or a mirror goes."""


def write_file(root: Path, relative: str, data: bytes, *, immutable: bool) -> bool:
    """Write ``root/relative`` atomically unless it already holds ``data``; return whether
    it was written. An immutable file (a full tile or bundle) that holds other bytes is
    refused. Raises ProofError (immutable file differs) or Unavailable (disk)."""
    path = root / relative
    try:
        if path.exists():
            old = path.read_bytes()
            if old == data:
                return False
            if immutable:
                raise ProofError(f"{path} already holds other bytes: a full tile never "
                                 "changes (another log, or a log that rewrote history)")
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        temp.write_bytes(data)
        os.replace(temp, path)
    except OSError as exc:
        raise Unavailable(f"cannot write {path}: {exc.strerror}") from exc
    return True


def held_checkpoint(root: Path, vkey: str, origin: str | None = None) -> Checkpoint | None:
    """The checkpoint a tiles directory holds, verified under ``vkey`` (and ``origin``), or
    None if it holds none. Raises ProofError (bad signature, another origin) or
    ConfigError (unreadable)."""
    path = root / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        note = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return verify_checkpoint(note, parse_vkey(vkey), origin)


def export_tiles(data_dir: Path, out: Path, progress: Progress | None = None) -> ExportReport:
    """``govledger ledger export-tiles``: every tile and entry bundle of the latest signed
    checkpoint, then the checkpoint, under ``out``.

    Raises ProofError (a full file differs, the directory holds another origin's or a larger
    tree's checkpoint, or the ledger's checkpoint does not verify), ConfigError or
    Unavailable."""
    with LedgerStore(data_dir / DB_NAME) as store:
        vkey = store.meta("vkey")
        if vkey is None:
            raise ProofError("ledger has no vkey: not a finished ledger")
        checkpoint, note = published(store, vkey)
        _check_held(out, store, vkey, checkpoint)
        todo = [*tiles_for_size(checkpoint.size), *bundles_for_size(checkpoint.size)]
        written = 0
        for done, tile in enumerate(todo, 1):
            data = read_path(store, tile, checkpoint.size)
            written += write_file(out, tile.path, data, immutable=tile.full)
            if progress is not None:
                progress(done, len(todo))
        written += write_file(out, CHECKPOINT_FILE, note.encode(), immutable=False)
    return ExportReport(checkpoint.size, written, len(todo) + 1 - written)


def _check_held(out: Path, store: LedgerStore, vkey: str, checkpoint: Checkpoint) -> None:
    """What ``out`` already holds must be this log at a size it passed through: same
    origin and key, not larger, and the same root at that size. Raises ProofError."""
    held = held_checkpoint(out, vkey, checkpoint.origin)
    if held is None:
        return
    if held.size > checkpoint.size:
        raise ProofError(f"{out} holds a checkpoint of size {held.size}, larger than this "
                         f"ledger's {checkpoint.size}: refusing to go back")
    if store.root_at(held.size) != held.root_hash:
        raise ProofError(f"{out} holds a checkpoint of size {held.size} whose root this "
                         "ledger never had: another history of this log")
