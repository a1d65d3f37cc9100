"""The tlog-tiles read API and `govledger ledger export-tiles` over a real 70,000-leaf SQLite
ledger served by uvicorn: the spec's tiles (a tree of 70,000 has 273 full level-0 tiles, a
partial of 112, a full and a partial level-1 tile, a partial level-2 tile), their cache
headers, clear errors, and a byte-for-byte cross-check: every served tile equals the tile
rebuilt from the served entry bundles alone (tessera's fsck approach), and the spec's MTH
formula evaluated with the recursive RFC 9162 reference."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.core import merkle
from ledger.core.tiles import (
    TileId,
    bundles_for_size,
    decode_bundle,
    extend_tiles,
    split_tile,
    tiles_for_size,
)
from ledger.log.ledger_dir import read_vkey
from tests.reference_merkle import mth
from tests.tiles_support import fake_leaf, fetch_all, grow, serve, tiles_ledger
from tests.unit.test_api import AUDIT_TOKEN, TOKEN, build_ledger

pytestmark = pytest.mark.integration

GOVLEDGER = str(Path(sys.executable).parent / "govledger")
SIZE = 70_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiles_ledger(tmp_path_factory.mktemp("tiles"), [300, 65_536, SIZE])


@pytest.fixture(scope="module")
def api(data_dir: Path) -> Iterator[str]:
    with serve(data_dir) as url:
        yield url


AUDITOR_HEADERS = {"Authorization": f"Bearer {AUDIT_TOKEN}"}


def get(url: str) -> httpx.Response:
    """GET as the auditor (tenant *): the entry bundles' reader; hash tiles need nobody."""
    return httpx.get(url, timeout=30, headers=AUDITOR_HEADERS)


def test_checkpoint_is_the_signed_note_with_a_short_cache(api: str) -> None:
    answer = get(f"{api}/checkpoint")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["cache-control"] == "public, max-age=2, must-revalidate"
    assert answer.text == get(f"{api}/v1/checkpoint").text
    assert answer.text.split("\n")[1] == str(SIZE)


def test_full_tiles_are_immutable_and_partial_tiles_short_lived(api: str) -> None:
    for path, length, scope in [("tile/0/000", 8192, "public"), ("tile/1/000", 8192, "public"),
                                ("tile/entries/000", 0, "private")]:
        answer = get(f"{api}/{path}")
        assert answer.status_code == 200, path
        assert answer.headers["cache-control"] == f"{scope}, max-age=31536000, immutable"
        assert answer.headers["content-type"] == "application/octet-stream"
        assert not length or len(answer.content) == length
    for path, scope in (("tile/0/273.p/112", "public"), ("tile/1/001.p/17", "public"),
                        ("tile/2/000.p/1", "public"), ("tile/entries/273.p/112", "private"),
                        ("tile/0/273.p/5", "public")):
        answer = get(f"{api}/{path}")
        assert answer.status_code == 200, path
        assert answer.headers["cache-control"] == f"{scope}, max-age=5"


def test_hash_tiles_are_public_and_entry_bundles_only_for_tenant_star(api: str) -> None:
    """Entry bundles carry every tenant's envelopes: an auditor or operator of tenant *
    reads them; without a credential 401, a reader of one tenant 403."""
    assert httpx.get(f"{api}/checkpoint", timeout=30).status_code == 200
    assert httpx.get(f"{api}/tile/0/000", timeout=30).status_code == 200
    nobody = httpx.get(f"{api}/tile/entries/000", timeout=30)
    assert (nobody.status_code, nobody.json()["reason"]) == (401, "UNAUTHENTICATED")
    alice = httpx.get(f"{api}/tile/entries/000", timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert (alice.status_code, alice.json()["reason"]) == (403, "FORBIDDEN")
    assert "tenant *" in alice.json()["detail"]
    assert get(f"{api}/tile/entries/000").status_code == 200


@pytest.mark.parametrize(("accept", "gzipped"), [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("identity", False), ("gzip;q=0", False),
    ("gzip;q=nope", False), ("", False)])
def test_entry_bundles_are_gzipped_for_clients_that_accept_it(api: str, accept: str,
                                                             gzipped: bool) -> None:
    with httpx.Client(timeout=30, headers={"accept-encoding": accept, **AUDITOR_HEADERS}) as http:
        answer = http.get(f"{api}/tile/entries/001")
        tile = http.get(f"{api}/tile/0/001")
    assert answer.status_code == 200
    assert answer.headers["vary"] == "Accept-Encoding"
    assert answer.headers.get("content-encoding") == ("gzip" if gzipped else None)
    entries = decode_bundle(answer.content, TileId(0, 1, entries=True))   # httpx decoded it
    assert [merkle.leaf_hash(e) for e in entries] == split_tile(tile.content, TileId(0, 1))
    assert "content-encoding" not in tile.headers


def test_the_tree_has_exactly_the_tiles_of_the_spec_example(api: str) -> None:
    tiles = tiles_for_size(SIZE)
    assert sum(t.full for t in tiles if t.level == 0) == 273
    assert [t.path for t in tiles if not t.full] == [
        "tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"]


def test_every_served_tile_equals_the_tile_rebuilt_from_the_served_entries(api: str) -> None:
    bundles, tiles = bundles_for_size(SIZE), tiles_for_size(SIZE)
    got = fetch_all(api, [t.path for t in (*bundles, *tiles)])
    entries = [e for b in bundles for e in decode_bundle(got[b.path], b)]
    served = {t: got[t.path] for t in tiles}
    assert entries[:3] == [fake_leaf(0), fake_leaf(1), fake_leaf(2)]
    assert extend_tiles({}, 0, [merkle.leaf_hash(e) for e in entries]) == served
    level1 = split_tile(served[TileId(1, 0)], TileId(1, 0))
    assert level1 == [mth(entries[i * 256:(i + 1) * 256]) for i in range(256)]
    assert served[TileId(2, 0, 1)] == mth(entries[:65_536])


@pytest.mark.parametrize(("path", "status", "reason"), [
    ("tile/0/274", 404, "NOT_FOUND"),               # past the tree size
    ("tile/0/273", 404, "NOT_FOUND"),               # full tile of a partial one
    ("tile/0/273.p/113", 404, "NOT_FOUND"),         # wider than the tree
    ("tile/1/002.p/1", 404, "NOT_FOUND"),
    ("tile/3/000.p/1", 404, "NOT_FOUND"),
    ("tile/entries/x001/000", 404, "NOT_FOUND"),
    ("tile/0/00", 400, "MALFORMED"),
    ("tile/0/x000/001", 400, "MALFORMED"),
    ("tile/64/000", 400, "MALFORMED"),
    ("tile/0/000.p/256", 400, "MALFORMED"),
    ("tile/0/000.p/0", 400, "MALFORMED"),
    ("tile/entries/000.p/-1", 400, "MALFORMED"),
])
def test_bad_tile_requests_are_clear_errors(api: str, path: str, status: int,
                                            reason: str) -> None:
    answer = get(f"{api}/{path}")
    assert answer.status_code == status, answer.text
    assert answer.json()["reason"] == reason
    assert "cache-control" not in answer.headers


def test_tiles_stop_at_the_published_checkpoint(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path)            # 13 leaves published, a 14th sequenced only
    with serve(ledger.data_dir) as url:
        assert get(f"{url}/tile/0/000.p/13").status_code == 200
        assert get(f"{url}/tile/entries/000.p/13").status_code == 200
        answer = get(f"{url}/tile/0/000.p/14")
        assert answer.status_code == 404
        assert "past the tree size 13" in answer.json()["detail"]


def export(data_dir: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOVLEDGER, "ledger", "export-tiles", str(out), "--data",
                           str(data_dir), "--json"], capture_output=True, text=True,
                          timeout=300, check=False)


def test_export_writes_what_the_api_serves_and_reexport_is_idempotent(
        api: str, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    first = export(data_dir, out)
    assert first.returncode == 0, first.stderr
    assert "\"written\": 552" in first.stdout    # 277 tiles + 274 bundles + checkpoint
    paths = ["checkpoint", *(t.path for t in (*tiles_for_size(SIZE), *bundles_for_size(SIZE)))]
    for path, data in fetch_all(api, paths).items():
        assert (out / path).read_bytes() == data, path
    again = export(data_dir, out)
    assert again.returncode == 0, again.stderr
    assert '"written": 0' in again.stdout and '"unchanged": 552' in again.stdout


def test_export_refuses_to_rewrite_a_full_tile_differently(data_dir: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    assert export(data_dir, out).returncode == 0
    tile = out / "tile" / "0" / "007"
    tile.write_bytes(b"\xff" * 8192)
    refused = export(data_dir, out)
    assert refused.returncode == 1
    assert "already holds other bytes: a full tile never changes" in refused.stderr
    assert tile.read_bytes() == b"\xff" * 8192          # left for the operator to look at


def test_export_refuses_a_directory_of_another_history(tmp_path: Path) -> None:
    ours = tiles_ledger(tmp_path / "ours", [100])
    other = tiles_ledger(tmp_path / "other", [100], tag="other")
    out = tmp_path / "tiles"
    assert export(ours, out).returncode == 0
    refused = export(other, out)
    assert refused.returncode == 1
    assert "govledger: verification failed" in refused.stderr
    assert read_vkey(ours) != read_vkey(other)


def test_an_entry_too_long_for_a_bundle_is_a_clear_error(tmp_path: Path) -> None:
    data_dir = tiles_ledger(tmp_path, [2])
    grow(data_dir, 2, 3, tag="x" * 70_000)     # one leaf over the 65,535 bytes of a uint16
    with serve(data_dir) as url:
        assert get(f"{url}/tile/0/000.p/3").status_code == 200    # its hash is in the tiles
        answer = get(f"{url}/tile/entries/000.p/3")
        assert answer.status_code == 500
        assert answer.json()["reason"] == "ENTRY_TOO_LARGE"
        assert "longer than a tlog-tiles entry bundle can carry" in answer.json()["detail"]
        assert get(f"{url}/tile/entries/000.p/2").status_code == 200
    refused = export(data_dir, tmp_path / "tiles")
    assert refused.returncode == 1
    assert "longer than a tlog-tiles entry bundle can carry (65535)" in refused.stderr
    assert not (tmp_path / "tiles" / "checkpoint").exists()
