"""C2SP tlog-tiles (https://c2sp.org/tlog-tiles): tile paths, which hashes a tile holds,
entry bundles, and tiles rebuilt from entries. Pure: no I/O.

* A tile at level ``L``, index ``N`` holds the Merkle Tree Hashes
  ``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])``, ``i`` from 0 to 255: in this
  project's terms the stored complete subtrees ``NodeId(8*L, N*256 + i)``
  (:func:`tile_node_ids`). A full tile is 256 hashes (8,192 bytes); the rightmost tile of
  a level is *partial* with ``floor(size / 256**L) mod 256`` hashes; empty tiles do not
  exist (:func:`tile_width`).
* Paths: ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``. ``<L>`` is 0..63 in
  decimal without leading zeros; ``<N>`` is written in zero-padded 3-digit elements, all
  but the last prefixed with ``x`` (1234067 is ``x001/x234/067``); ``.p/<W>`` (1..255)
  only for a partial tile. :func:`parse_tile_path` accepts only the one canonical spelling
  (``x000/001`` for 1 is refused), so one tile has one path in a cache or a bucket.
* Entry bundles are the entries, each prefixed with its length as a big-endian uint16: an
  entry longer than 65,535 bytes cannot be carried (:func:`encode_bundle` refuses it).
* :func:`extend_tiles` rebuilds tiles from leaf hashes alone (the approach of tessera's
  fsck), so a reader can compare served tiles byte for byte with ones it computed itself;
  :func:`node_from_tiles` reads any complete subtree's hash out of tiles, which is how a
  tile reader turns tiles into RFC 9162 proofs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.core.merkle import HASH_SIZE, NodeId, node_hash
from ledger.errors import InvalidEvent, NotFound, ProofError, Reason

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
MAX_LEVEL: Final = 63
MAX_ENTRY_BYTES: Final = 0xFFFF
MAX_PATH_CHARS: Final = 200          # 21 index digits and a level: far above any real log
ENTRIES: Final = "entries"
_LEVEL_RE = re.compile(r"^(0|[1-9][0-9]?)$")
_WIDTH_RE = re.compile(r"^[1-9][0-9]{0,2}$")
_ELEMENT_RE = re.compile(r"^x?[0-9]{3}$")


class EntryTooLarge(ProofError):
    """An entry longer than 65,535 bytes: an entry bundle cannot carry it."""


@dataclass(frozen=True, slots=True)
class TileId:
    """A hash tile (``level`` 0..63) or, with ``entries``, an entry bundle (level 0), of
    ``width`` 1..256 hashes or entries (256: full)."""

    level: int
    index: int
    width: int = TILE_WIDTH
    entries: bool = False

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """The tlog-tiles path, e.g. ``tile/1/x001/234.p/7`` (no leading slash)."""
        level = ENTRIES if self.entries else str(self.level)
        partial = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{partial}"


def encode_index(index: int) -> str:
    """``<N>`` of a tile path: 3-digit elements, all but the last prefixed with ``x``."""
    if index < 0:
        raise ProofError(f"tile index {index} is negative")
    elements = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        elements.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(elements))


def _malformed(path: str, why: str) -> InvalidEvent:
    return InvalidEvent(Reason.MALFORMED, f"malformed tile path {path[:80]!r}: {why}")


def parse_tile_path(path: str) -> TileId:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` (no leading slash),
    accepting only the canonical spelling. Raises InvalidEvent (reason MALFORMED)."""
    if len(path) > MAX_PATH_CHARS or not path.isascii():
        raise _malformed(path, "too long or not ASCII")
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise _malformed(path, "expected tile/<L>/<N>[.p/<W>]")
    entries = parts[1] == ENTRIES
    if not entries and not (_LEVEL_RE.match(parts[1]) and int(parts[1]) <= MAX_LEVEL):
        raise _malformed(path, "level must be 0..63 without leading zeros, or 'entries'")
    elements, width = parts[2:], TILE_WIDTH
    if len(elements) >= 2 and elements[-2].endswith(".p"):
        if not _WIDTH_RE.match(elements[-1]) or int(elements[-1]) >= TILE_WIDTH:
            raise _malformed(path, "partial width must be 1..255 without leading zeros")
        width = int(elements[-1])
        elements = [*elements[:-2], elements[-2][:-2]]
    if not all(_ELEMENT_RE.match(e) for e in elements) or \
            any(e.startswith("x") != (n < len(elements) - 1) for n, e in enumerate(elements)):
        raise _malformed(path, "index must be 3-digit elements, all but the last x-prefixed")
    index = 0
    for element in elements:
        index = index * 1000 + int(element.lstrip("x"))
    tile = TileId(0 if entries else int(parts[1]), index, width, entries)
    if tile.path != path:
        raise _malformed(path, f"not the canonical spelling {tile.path!r}")
    return tile


# -- what a tile holds in a tree of a given size ----------------------------------------------


def level_count(size: int, level: int) -> int:
    """How many hashes level ``level`` of the tiling has in a tree of ``size`` leaves."""
    return size >> (TILE_HEIGHT * level)


def tile_width(level: int, index: int, size: int) -> int:
    """How many hashes tile (``level``, ``index``) holds in a tree of ``size`` leaves: 256,
    1..255 (partial) or 0 (no such tile)."""
    return max(0, min(TILE_WIDTH, level_count(size, level) - index * TILE_WIDTH))


def check_in_tree(tile: TileId, size: int) -> None:
    """Require ``tile`` to exist in a tree of ``size`` leaves with at least its width (a
    partial tile narrower than the current one is a prefix of it: still the same hashes).
    Raises NotFound."""
    if tile_width(tile.level, tile.index, size) < tile.width:
        raise NotFound(f"{tile.path} is past the tree size {size}")


def tiles_for_size(size: int) -> list[TileId]:
    """Every hash tile of a tree of ``size`` leaves (full ones and each level's partial
    one), level by level."""
    out: list[TileId] = []
    level = 0
    while level_count(size, level):
        count = level_count(size, level)
        out.extend(TileId(level, n, tile_width(level, n, size))
                   for n in range((count + TILE_WIDTH - 1) // TILE_WIDTH))
        level += 1
    return out


def changed_tiles(old_size: int, new_size: int) -> list[TileId]:
    """The tiles of ``new_size`` that a tree of ``old_size`` lacks or holds narrower."""
    return [t for t in tiles_for_size(new_size)
            if tile_width(t.level, t.index, old_size) != t.width]


def bundles_for_size(size: int, start: int = 0) -> list[TileId]:
    """The entry bundles of a tree of ``size`` leaves from the one holding leaf ``start``."""
    return [TileId(0, t.index, t.width, entries=True) for t in tiles_for_size(size)
            if t.level == 0 and t.index >= start // TILE_WIDTH]


def tile_node_ids(tile: TileId) -> list[NodeId]:
    """The stored subtrees whose hashes are the tile's content, in order."""
    first = tile.index * TILE_WIDTH
    return [NodeId(TILE_HEIGHT * tile.level, first + i) for i in range(tile.width)]


def split_tile(data: bytes, tile: TileId) -> list[bytes]:
    """A tile's hashes. Raises ProofError unless it is exactly ``tile.width`` hashes."""
    if len(data) != tile.width * HASH_SIZE:
        raise ProofError(f"{tile.path} is {len(data)} bytes, not {tile.width * HASH_SIZE}")
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


# -- entry bundles ---------------------------------------------------------------------------


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Entries, each prefixed with its big-endian uint16 length. Raises EntryTooLarge for
    an entry longer than 65,535 bytes (the format cannot carry it)."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise EntryTooLarge(f"an entry of {len(entry)} bytes is longer than a tlog-tiles "
                             f"entry bundle can carry ({MAX_ENTRY_BYTES})")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes, bundle: TileId) -> list[bytes]:
    """The entries of a bundle. Raises ProofError unless it holds exactly ``bundle.width``
    well-formed entries and nothing after them."""
    entries: list[bytes] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise ProofError(f"{bundle.path}: truncated length prefix at byte {at}")
        length = int.from_bytes(data[at:at + 2], "big")
        if at + 2 + length > len(data):
            raise ProofError(f"{bundle.path}: entry {len(entries)} runs past the end")
        entries.append(data[at + 2:at + 2 + length])
        at += 2 + length
    if len(entries) != bundle.width:
        raise ProofError(f"{bundle.path} holds {len(entries)} entries, not {bundle.width}")
    return entries


# -- hashes out of tiles, and tiles out of leaf hashes ------------------------------------------


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree over ``hashes`` (a power of two of them), pairwise."""
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            raise ProofError("a perfect subtree needs a power of two of hashes")
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    if not level:
        raise ProofError("a perfect subtree needs at least one hash")
    return level[0]


TileHashes = Mapping[tuple[int, int], Sequence[bytes]]
"""Hashes of the tiles a reader holds, by (level, index)."""


def node_from_tiles(node: NodeId, tiles: TileHashes) -> bytes:
    """The hash of a complete subtree, computed from the tile that covers it (the tile at
    level ``node.level // 8``, folding ``2**(node.level % 8)`` of its hashes). Raises
    ProofError if that tile is not held or too narrow."""
    level, rise = divmod(node.level, TILE_HEIGHT)
    first = node.index << rise
    index, offset = divmod(first, TILE_WIDTH)
    held = tiles.get((level, index))
    if held is None or len(held) < offset + (1 << rise):
        raise ProofError(f"node {node} needs tile {TileId(level, index).path}, not held")
    return perfect_root(held[offset:offset + (1 << rise)])


def extend_tiles(partials: Mapping[int, Sequence[bytes]], old_size: int,
                 new_leaf_hashes: Sequence[bytes]) -> dict[TileId, bytes]:
    """The tiles that change when ``new_leaf_hashes`` are appended to a tree of
    ``old_size`` leaves, computed from hashes alone. ``partials`` are the hashes of the
    old tree's partial tile at each level (levels whose last tile is full need none).
    Extending from an empty tree rebuilds every tile. Raises ProofError if a partial tile
    needed is missing or has the wrong width."""
    out: dict[TileId, bytes] = {}
    size = old_size + len(new_leaf_hashes)
    new = list(new_leaf_hashes)
    level = 0
    while level_count(size, level):
        start = level_count(old_size, level)
        tail_start = start - start % TILE_WIDTH
        held = list(partials.get(level, [])) if start % TILE_WIDTH else []
        if len(held) != start - tail_start:
            raise ProofError(f"level {level} partial tile has {len(held)} hashes, expected "
                             f"{start - tail_start}")
        tail = held + new
        next_new: list[bytes] = []
        for offset in range(0, len(tail), TILE_WIDTH):
            chunk = tail[offset:offset + TILE_WIDTH]
            tile = TileId(level, (tail_start + offset) // TILE_WIDTH, len(chunk))
            if len(chunk) != len(held) or offset:
                out[tile] = b"".join(chunk)
            if len(chunk) == TILE_WIDTH:
                next_new.append(perfect_root(chunk))
        new = next_new
        level += 1
    return out
