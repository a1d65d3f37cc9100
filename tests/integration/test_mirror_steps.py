"""The mirror's incremental steps (ledger/log/mirror.py) across tile boundaries, library
level over a real SQLite ledger (the fetch reads the store as the API does; the HTTP path
and the refusals are in test_remote.py): after each step the mirror holds exactly the files
`export-tiles` writes for that size."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.core.tiles import parse_tile_path
from ledger.log.mirror import Fetch, mirror_log
from ledger.log.sequencer import DB_NAME, read_vkey
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
        export = tmp_path / f"export-{size}"
        export_tiles(data_dir, export)
        for path in export.rglob("*"):
            if path.is_file():
                assert (out / path.relative_to(export)).read_bytes() == path.read_bytes(), path
