"""Hypothesis properties of the tlog-tiles core (ledger/core/tiles.py)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import merkle
from ledger.core.tiles import (
    TILE_WIDTH,
    TileId,
    changed_tiles,
    decode_bundle,
    encode_bundle,
    extend_tiles,
    node_from_tiles,
    parse_tile_path,
    split_tile,
)

tile_ids = st.builds(TileId, st.integers(0, 63), st.integers(0, 10**15),
                     st.integers(1, TILE_WIDTH)) | st.builds(
    TileId, st.just(0), st.integers(0, 10**15), st.integers(1, TILE_WIDTH), st.just(True))


@given(tile_ids)
def test_every_tile_path_parses_back_to_its_tile(tile: TileId) -> None:
    assert parse_tile_path(tile.path) == tile


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_bundles_decode_to_what_was_encoded(entries: list[bytes]) -> None:
    bundle = TileId(0, 0, len(entries), entries=True)
    assert decode_bundle(encode_bundle(entries), bundle) == entries


def _hashes(n: int) -> list[bytes]:
    return [hashlib.sha256(b"%d" % i).digest() for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000))
def test_extending_a_tree_changes_exactly_the_changed_tiles_as_a_rebuild_would(
        a: int, b: int) -> None:
    old, new = min(a, b), max(a, b)
    hashes = _hashes(new)
    before = extend_tiles({}, 0, hashes[:old])
    partials = {t.level: split_tile(blob, t) for t, blob in before.items() if not t.full}
    after = extend_tiles(partials, old, hashes[old:])
    rebuilt = extend_tiles({}, 0, hashes)
    assert set(after) == set(changed_tiles(old, new))
    assert all(rebuilt[t] == blob for t, blob in after.items())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_every_proof_read_out_of_tiles_verifies(size: int, data: st.DataObject) -> None:
    hashes = _hashes(size)
    held = {(t.level, t.index): split_tile(blob, t)
            for t, blob in extend_tiles({}, 0, hashes).items()}
    root = merkle.fold([node_from_tiles(n, held) for n in merkle.root_plan(size)])
    compact = merkle.CompactRange()
    for h in hashes:
        compact.append(h)
    assert root == compact.root()
    index = data.draw(st.integers(0, size - 1))
    plan = merkle.inclusion_plan(index, size)
    proof = plan.combine({n: node_from_tiles(n, held) for n in plan.node_ids()})
    merkle.verify_inclusion(index, size, hashes[index], proof, root)
