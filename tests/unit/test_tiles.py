"""C2SP tlog-tiles core (ledger/core/tiles.py): paths, widths, bundles, tiles from leaves.

The tile contents are checked against the spec's own formula evaluated with the recursive
RFC 9162 reference (tests/reference_merkle.py), which the core never imports.
"""

from __future__ import annotations

import hashlib

import pytest

from ledger.core import merkle
from ledger.core.tiles import (
    TileId,
    bundles_for_size,
    changed_tiles,
    check_in_tree,
    decode_bundle,
    encode_bundle,
    encode_index,
    extend_tiles,
    node_from_tiles,
    parse_tile_path,
    split_tile,
    tile_node_ids,
    tiles_for_size,
)
from ledger.errors import InvalidEvent, NotFound, ProofError
from tests.reference_merkle import mth


def leaves(n: int) -> list[bytes]:
    return [b"leaf %d" % i for i in range(n)]


@pytest.mark.parametrize(("tile", "path"), [
    (TileId(0, 0), "tile/0/000"),
    (TileId(0, 1234067), "tile/0/x001/x234/067"),
    (TileId(3, 1234067, 8), "tile/3/x001/x234/067.p/8"),
    (TileId(63, 1000, 255), "tile/63/x001/000.p/255"),
    (TileId(0, 5, 17, entries=True), "tile/entries/005.p/17"),
    (TileId(0, 1000000, entries=True), "tile/entries/x001/x000/000"),
])
def test_tile_paths_follow_the_spec_and_parse_back(tile: TileId, path: str) -> None:
    assert tile.path == path
    assert parse_tile_path(path) == tile


def test_index_1234067_is_the_specs_example() -> None:
    assert encode_index(1234067) == "x001/x234/067"


@pytest.mark.parametrize("path", [
    "tile/64/000", "tile/01/000", "tile/-1/000", "tile/0/00", "tile/0/0000", "tile/0/x000",
    "tile/0/001/002", "tile/0/x000/001", "tile/0/000.p/0", "tile/0/000.p/256",
    "tile/0/000.p/07", "tile/0/000.p/", "tile/0/000.p", "tile/0", "tiles/0/000",
    "tile/0/x001/234.p/5/6", "tile/data/000", "tile/0/0a0", "tile/0/x" + "001/x" * 60 + "000",
    "tile/0/٠٠٠",
])
def test_malformed_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidEvent, match="malformed tile path"):
        parse_tile_path(path)


def test_a_tree_of_70000_has_the_tiles_the_spec_lists() -> None:
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t.level == 0]
    assert len(level0) == 274 and sum(t.full for t in level0) == 273
    assert level0[-1].width == 112
    assert [(t.level, t.index, t.width) for t in tiles if t.level] == [
        (1, 0, 256), (1, 1, 17), (2, 0, 1)]
    assert [(t.level, t.width) for t in tiles_for_size(256)] == [(0, 256), (1, 1)]
    assert tiles_for_size(0) == []


def test_tile_past_the_tree_size_is_not_found() -> None:
    check_in_tree(TileId(0, 0, 5), 300)          # a narrower partial is a prefix: served
    check_in_tree(TileId(0, 1, 44), 300)
    for tile in (TileId(0, 1), TileId(0, 1, 45), TileId(0, 2, 1), TileId(1, 0, 2),
                 TileId(2, 0, 1)):
        with pytest.raises(NotFound, match="past the tree size 300"):
            check_in_tree(tile, 300)


def test_tile_hashes_are_the_mth_of_the_spec_formula() -> None:
    data = leaves(700)
    hashes = [merkle.leaf_hash(x) for x in data]
    tiles = extend_tiles({}, 0, hashes)
    assert set(tiles) == set(tiles_for_size(700))
    for tile, blob in tiles.items():
        span = 256 ** tile.level
        want = [mth(data[(tile.index * 256 + i) * span:(tile.index * 256 + i + 1) * span])
                for i in range(tile.width)]
        assert split_tile(blob, tile) == want, tile.path


@pytest.mark.parametrize(("old", "new"), [(0, 1), (1, 255), (255, 256), (256, 257),
                                          (100, 700), (511, 513), (600, 600), (65535, 65537)])
def test_extending_tiles_equals_rebuilding_them(old: int, new: int) -> None:
    hashes = [hashlib.sha256(b"%d" % i).digest() for i in range(new)]
    before = extend_tiles({}, 0, hashes[:old])
    partials = {t.level: split_tile(b, t) for t, b in before.items() if not t.full}
    after = extend_tiles(partials, old, hashes[old:])
    everything = extend_tiles({}, 0, hashes)
    assert set(after) == set(changed_tiles(old, new))
    assert all(everything[t] == b for t, b in after.items())
    assert {**before, **after}.keys() >= everything.keys()


def test_extending_with_a_wrong_partial_is_refused() -> None:
    with pytest.raises(ProofError, match="partial tile has 0 hashes"):
        extend_tiles({}, 10, [b"\x00" * 32])


def test_any_node_is_read_from_tiles() -> None:
    data = leaves(70_000 // 100)
    tiles = extend_tiles({}, 0, [merkle.leaf_hash(x) for x in data])
    held = {(t.level, t.index): split_tile(b, t) for t, b in tiles.items()}
    for node in merkle.range_nodes(0, len(data)):
        lo = node.index << node.level
        assert node_from_tiles(node, held) == mth(data[lo:lo + (1 << node.level)])
    with pytest.raises(ProofError, match="not held"):
        node_from_tiles(merkle.NodeId(0, 700), held)


def test_tile_node_ids_are_level_8L_subtrees() -> None:
    assert tile_node_ids(TileId(1, 2, 3)) == [merkle.NodeId(8, 512), merkle.NodeId(8, 513),
                                              merkle.NodeId(8, 514)]


def test_entry_bundles_are_uint16_length_prefixed() -> None:
    bundle = TileId(0, 0, 3, entries=True)
    data = encode_bundle([b"a", b"", b"xyz"])
    assert data == b"\x00\x01a\x00\x00\x00\x03xyz"
    assert decode_bundle(data, bundle) == [b"a", b"", b"xyz"]
    for bad, why in [(data[:-1], "runs past the end"), (data + b"\x00", "truncated"),
                     (data + b"\x00\x00", "holds 4 entries")]:
        with pytest.raises(ProofError, match=why):
            decode_bundle(bad, bundle)
    with pytest.raises(ProofError, match="longer than a tlog-tiles entry bundle"):
        encode_bundle([b"x" * 65536])
    assert decode_bundle(encode_bundle([b"x" * 65535]), TileId(0, 0, 1, True)) == [b"x" * 65535]


def test_bundles_for_size_start_at_the_bundle_holding_start() -> None:
    assert [b.path for b in bundles_for_size(600, 300)] == ["tile/entries/001",
                                                             "tile/entries/002.p/88"]
