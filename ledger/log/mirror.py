"""A verifying mirror of a tlog-tiles log (``govledger ledger mirror``).

The mirror directory has the layout ``ledger.log.tiles.export_tiles`` writes (so it can be
served as is) and its ``checkpoint`` file is the verified state: the last checkpoint the
mirror accepted. One run, in order:

1. Fetch the log's ``checkpoint``; it must verify under the vkey the operator gave and
   name the held origin (or the vkey's name on a first run). A smaller tree than the held
   one is a rollback, the same size with another root a fork: both refused.
2. Fetch every tile the new tree has that the held tree lacks or holds narrower.
3. Consistency: the RFC 9162 consistency proof from the held size to the new one, read
   out of the held and fetched tiles, must verify between the held root and the new
   checkpoint's root; the new root folded from the tiles must equal the checkpoint's.
4. Fetch the entry bundles from the held size on; entries already held must hash to the
   held level-0 hashes; every changed tile is rebuilt from the entries alone
   (:func:`ledger.core.tiles.extend_tiles`, as tessera's fsck does) and must equal the
   served tile byte for byte (a tile reader alone can accept a corrupted upper tile:
   DESIGN.md section 9).
5. Only then write the bundles and tiles, and the ``checkpoint`` last. A log that rewrote
   history fails step 1, 3 or 4 and nothing of it is stored.

Memory: the fetched tiles (8 KiB each, ~4,000 for a million leaves) and 32 bytes per new
leaf; bundles wait in a hidden staging directory inside the mirror until verified.

Fetching is a callable (a path under the log's prefix -> bytes) the caller provides: the
CLI's is HTTP (``ledger.cli.remote``), a test's may read a directory.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.core import merkle
from ledger.core.checkpoint import Checkpoint, parse_vkey, verify_checkpoint
from ledger.core.tiles import (
    MAX_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileId,
    bundles_for_size,
    changed_tiles,
    decode_bundle,
    extend_tiles,
    level_count,
    node_from_tiles,
    split_tile,
    tile_width,
)
from ledger.errors import ConfigError, ProofError, Unavailable
from ledger.log.tiles import CHECKPOINT_FILE, Progress, held_checkpoint, write_file

Fetch = Callable[[str], bytes]
"""Bytes of a path under the log's prefix (``checkpoint``, ``tile/0/000``, ...). Raises
NotFound or Unavailable."""


@dataclass(frozen=True, slots=True)
class MirrorReport:
    origin: str
    old_size: int
    new_size: int
    root_hash: str
    tiles_fetched: int
    bundles_fetched: int
    files_written: int


def _read_held(out: Path, tile: TileId) -> list[bytes]:
    try:
        return split_tile((out / tile.path).read_bytes(), tile)
    except OSError as exc:
        raise ConfigError(f"the mirror lacks {tile.path} of its own checkpoint: {exc}") from exc


def _tiles_for(nodes: Sequence[merkle.NodeId], old: int, new: int, fetched: dict[TileId, bytes],
               out: Path) -> dict[tuple[int, int], list[bytes]]:
    """The hashes of every tile the nodes need at size ``new``: fetched ones, else held."""
    by_key = {(t.level, t.index): split_tile(b, t) for t, b in fetched.items()}
    for node in nodes:
        level, rise = divmod(node.level, TILE_HEIGHT)
        key = (level, (node.index << rise) // TILE_WIDTH)
        if key not in by_key:
            by_key[key] = _read_held(out, TileId(*key, tile_width(*key, old)))
    return by_key


def _check_consistency(held: Checkpoint, new: Checkpoint, fetched: dict[TileId, bytes],
                       out: Path) -> None:
    """Step 3 (module docstring). Raises ProofError."""
    plan = merkle.consistency_plan(held.size, new.size)
    root_nodes = merkle.root_plan(new.size)
    tiles = _tiles_for([*plan.node_ids(), *root_nodes], held.size, new.size, fetched, out)
    proof = plan.combine({n: node_from_tiles(n, tiles) for n in plan.node_ids()})
    try:
        merkle.verify_consistency(held.size, new.size, held.root_hash, new.root_hash, proof)
    except ProofError as exc:
        raise ProofError(f"the log's tree of size {new.size} is not an extension of the "
                         f"held tree of size {held.size} (it rewrote history): {exc}") from exc
    root = merkle.fold([node_from_tiles(n, tiles) for n in root_nodes])
    if root != new.root_hash:
        raise ProofError("the served tiles do not fold to the checkpoint's root",
                         expected=new.root_hash.hex(), calculated=root.hex())


def _fetch_bundles(fetch: Fetch, bundles: Sequence[TileId], staging: Path,
                   tick: Callable[[], None]) -> list[bytes]:
    """Step 4's fetch: each bundle's leaf hashes, its bytes kept in ``staging`` (not in
    memory: a mirror from empty fetches the whole log) until they are verified. Raises
    ProofError (malformed bundle), NotFound or Unavailable."""
    hashes: list[bytes] = []
    for n, bundle in enumerate(bundles):
        data = fetch(bundle.path)
        hashes.extend(merkle.leaf_hash(e) for e in decode_bundle(data, bundle))
        try:
            (staging / str(n)).write_bytes(data)
        except OSError as exc:
            raise Unavailable(f"cannot stage {bundle.path}: {exc.strerror}") from exc
        tick()
    return hashes


def _new_leaf_hashes(held: Checkpoint, hashes: list[bytes], out: Path) -> list[bytes]:
    """Step 4's entries: the leaf hashes from the held size on; the held entries a partial
    bundle repeats must hash as held. Raises ProofError."""
    first = held.size - held.size % TILE_WIDTH
    repeated, hashes = hashes[:held.size - first], hashes[held.size - first:]
    if repeated and repeated != _read_held(out, TileId(0, first // TILE_WIDTH,
                                                       len(repeated))):
        raise ProofError(f"the log's entries {first}..{held.size - 1} differ from the ones "
                         "this mirror verified (it rewrote history)")
    return hashes


def _rebuild_and_compare(held: Checkpoint, new_hashes: list[bytes],
                         fetched: dict[TileId, bytes], out: Path) -> None:
    """Step 4's byte-for-byte check. Raises ProofError."""
    partials: dict[int, list[bytes]] = {}
    for level in range(MAX_LEVEL + 1):
        count = level_count(held.size, level)
        if count % TILE_WIDTH:
            partials[level] = _read_held(out, TileId(level, count // TILE_WIDTH,
                                                     count % TILE_WIDTH))
    rebuilt = extend_tiles(partials, held.size, new_hashes)
    if rebuilt.keys() != fetched.keys():
        raise ProofError("the tiles rebuilt from the entries are not the tiles served")
    for tile, data in fetched.items():
        if rebuilt[tile] != data:
            raise ProofError(f"served {tile.path} differs from the tile rebuilt from the "
                             "entry bundles")


def mirror_log(fetch: Fetch, out: Path, vkey: str, *, origin: str | None = None,
               progress: Progress | None = None) -> MirrorReport:
    """Bring the mirror in ``out`` up to the log's latest checkpoint, verifying every step
    from the checkpoint it holds (module docstring). Raises ProofError (bad signature,
    another origin, rollback, fork, inconsistent or corrupt tiles), NotFound, Unavailable
    or ConfigError."""
    verifier = parse_vkey(vkey)
    held = held_checkpoint(out, vkey, origin)
    want_origin = held.origin if held is not None else origin or verifier.name
    try:
        note = fetch(CHECKPOINT_FILE).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProofError("the log's checkpoint is not UTF-8 text") from exc
    new = verify_checkpoint(note, verifier, want_origin)
    held = held or Checkpoint(want_origin, merkle.TreeSize(0), merkle.EMPTY_ROOT)
    if new.size < held.size:
        raise ProofError(f"the log went back from size {held.size} to {new.size} "
                         "(a rollback): refused")
    if new.size == held.size:
        if new.root_hash != held.root_hash:
            raise ProofError(f"the log shows another tree of size {new.size} (a fork)",
                             expected=held.root_hash.hex(), calculated=new.root_hash.hex())
        return MirrorReport(new.origin, held.size, new.size, new.root_hash.hex(), 0, 0, 0)
    tiles, bundles = changed_tiles(held.size, new.size), bundles_for_size(new.size, held.size)
    tick = _ticker(len(tiles) + len(bundles), progress)
    fetched: dict[TileId, bytes] = {}
    for tile in tiles:
        fetched[tile] = fetch(tile.path)
        split_tile(fetched[tile], tile)
        tick()
    _check_consistency(held, new, fetched, out)
    staging = _staging(out)
    try:
        hashes = _fetch_bundles(fetch, bundles, staging, tick)
        _rebuild_and_compare(held, _new_leaf_hashes(held, hashes, out), fetched, out)
        written = sum(write_file(out, b.path, _read_staged(staging, n), immutable=b.full)
                      for n, b in enumerate(bundles))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a temporary copy, nothing verified
    written += sum(write_file(out, t.path, data, immutable=t.full)
                   for t, data in fetched.items())
    written += write_file(out, CHECKPOINT_FILE, note.encode(), immutable=False)
    return MirrorReport(new.origin, held.size, new.size, new.root_hash.hex(), len(tiles),
                        len(bundles), written)


def _ticker(total: int, progress: Progress | None) -> Callable[[], None]:
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
    return tick


def _staging(out: Path) -> Path:
    """A fresh hidden directory inside ``out`` for bundles not verified yet; removed after
    the run whatever its outcome. Raises Unavailable."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".incoming-", dir=out))
    except OSError as exc:
        raise Unavailable(f"cannot write in {out}: {exc.strerror}") from exc


def _read_staged(staging: Path, n: int) -> bytes:
    try:
        return (staging / str(n)).read_bytes()
    except OSError as exc:
        raise Unavailable(f"cannot read a staged bundle: {exc.strerror}") from exc
