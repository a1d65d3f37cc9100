"""The mirror's incremental steps (ledger/log/mirror.py) across tile boundaries, library
level over a real SQLite ledger (the fetch reads the store as the API does; the HTTP path
and the refusals are in test_remote.py): after each step the mirror holds exactly the files
`export-tiles` writes for that size."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.core.tiles import decode_bundle, encode_bundle, parse_tile_path
from ledger.errors import ProofError
from ledger.log.ledger_dir import DB_NAME, read_vkey
from ledger.log.mirror import Fetch, mirror_log
from ledger.log.store import LedgerStore
from ledger.log.tiles import CHECKPOINT_FILE, export_tiles, published, read_path
from tests.tiles_support import grow, tiles_ledger

pytestmark = pytest.mark.integration

STEPS = (1, 2, 255, 256, 257, 511, 600, 65_536, 65_537)


def fetch_from(data_dir: Path) -> Fetch:
    def fetch(path: str) -> bytes:
        with LedgerStore(data_dir / DB_NAME) as store:
            checkpoint, note = published(store)
            if path == CHECKPOINT_FILE:
                return note.encode()
            return read_path(store, parse_tile_path(path), checkpoint.size)
    return fetch


def test_each_mirror_step_holds_what_an_export_of_that_size_holds(tmp_path: Path) -> None:
    data_dir = tiles_ledger(tmp_path / "log", [STEPS[0]])
    vkey, out, done = read_vkey(data_dir), tmp_path / "mirror", STEPS[0]
    for size in STEPS:
        grow(data_dir, done, size)
        done = size
        report = mirror_log(fetch_from(data_dir), out, vkey)
        assert report.new_size == size
        assert not list(out.glob(".incoming-*"))      # staged bundles moved, staging gone
        export = tmp_path / f"export-{size}"
        export_tiles(data_dir, export)
        for path in export.rglob("*"):
            if path.is_file():
                assert (out / path.relative_to(export)).read_bytes() == path.read_bytes(), path


def test_a_log_that_changes_an_entry_it_served_before_is_refused(tmp_path: Path) -> None:
    """Entries a partial bundle repeats must be the ones the mirror verified, even when the
    tiles are right (the tiles alone would not show it: they carry only hashes)."""
    data_dir = tiles_ledger(tmp_path / "log", [10])
    vkey, out = read_vkey(data_dir), tmp_path / "mirror"
    mirror_log(fetch_from(data_dir), out, vkey)
    held = (out / "tile/entries/000.p/10").read_bytes()
    grow(data_dir, 10, 20)
    honest = fetch_from(data_dir)

    def lying(path: str) -> bytes:
        data = honest(path)
        if path == "tile/entries/000.p/20":     # one byte of entry 3 changed
            entries = decode_bundle(data, parse_tile_path(path))
            entries[3] = entries[3][:20] + bytes([entries[3][20] ^ 1]) + entries[3][21:]
            return encode_bundle(entries)
        return data

    with pytest.raises(ProofError, match=r"entries 0\.\.9 differ from the ones this mirror "
                                         r"verified \(it rewrote history\)"):
        mirror_log(lying, out, vkey)
    assert (out / "tile/entries/000.p/10").read_bytes() == held
    assert not (out / "tile/entries/000.p/20").exists()
    assert not list(out.glob(".incoming-*"))
    assert mirror_log(honest, out, vkey).new_size == 20
