"""The tiles checked by an implementation govledger did not write: Go's
golang.org/x/mod/sumdb/tlog tile reader and sumdb/note (Debian's golang-golang-x-mod-dev,
built offline: tests/go/tilecheck/main.go), over real HTTP and over an exported directory.

DESIGN.md section 9: tlog.TileHashReader once accepted a corrupted full level-1 tile, so it
is a second opinion only; the byte-for-byte rebuild from the entry bundles (the mirror's
fsck, also tests/integration/test_tiles_api.py) is what must catch that corruption.

Skips with the reason where Go or the Debian package is absent:
``apt-get install golang-go golang-golang-x-mod-dev``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.errors import ProofError
from ledger.log.ledger_dir import read_vkey
from ledger.log.mirror import mirror_log
from ledger.log.store import LedgerStore
from ledger.log.tiles import export_tiles
from tests.tiles_support import serve, tiles_ledger
from tests.unit.test_api import AUDIT_TOKEN

pytestmark = pytest.mark.integration

GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).resolve().parents[1] / "go" / "tilecheck" / "main.go"
SIZE = 70_000
OLD_SIZES = (1, 300, 65_536, 69_999)


@pytest.fixture(scope="module")
def tilecheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None or not (GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        pytest.skip("Go or golang.org/x/mod is absent: apt-get install golang-go "
                    "golang-golang-x-mod-dev to check the tiles with Go's tlog reader")
    out = tmp_path_factory.mktemp("go") / "tilecheck"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": "",
           "GOCACHE": str(out.parent / "cache"), "GOPROXY": "off"}
    built = subprocess.run([go, "build", "-o", str(out), str(SOURCE)], env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiles_ledger(tmp_path_factory.mktemp("tiles-go"), [*OLD_SIZES[1:3], SIZE])


@pytest.fixture(scope="module")
def api(data_dir: Path) -> Iterator[str]:
    with serve(data_dir) as url:
        yield url


def run_go(tilecheck: Path, base: str, data_dir: Path) -> dict[str, object]:
    with LedgerStore(data_dir / "ledger.db") as store:
        olds = [f"{n}:{store.root_at(n).hex()}" for n in OLD_SIZES]
    args = [str(tilecheck), "-base", base, "-vkey", read_vkey(data_dir).strip()]
    for old in olds:
        args += ["-old", old]
    env = {**os.environ, "TILECHECK_AUTHORIZATION": f"Bearer {AUDIT_TOKEN}"}  # tenant *
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False,
                          env=env)
    result: dict[str, object] = json.loads(done.stdout)
    assert (done.returncode == 0) == result["ok"], done
    return result


def test_go_tlog_verifies_the_served_tiles_entries_and_proofs(tilecheck: Path, api: str,
                                                              data_dir: Path) -> None:
    result = run_go(tilecheck, api, data_dir)
    with LedgerStore(data_dir / "ledger.db") as store:
        root = store.root_at(SIZE).hex()
    assert result == {**result, "ok": True, "size": SIZE, "entries": SIZE, "root": root,
                      "origin": "govledger.test/log"}
    assert result["proofs"] == 2 * 97 + len(OLD_SIZES)     # 97 sampled leaves, both ends


def test_go_tlog_verifies_the_exported_directory(tilecheck: Path, data_dir: Path,
                                                 tmp_path: Path) -> None:
    export_tiles(data_dir, tmp_path / "tiles")
    assert run_go(tilecheck, str(tmp_path / "tiles"), data_dir)["ok"] is True


def corrupt(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_corrupted_level0_tile_fails_go_and_the_rebuild(tilecheck: Path, data_dir: Path,
                                                         tmp_path: Path) -> None:
    export_tiles(data_dir, tmp_path / "tiles")
    corrupt(tmp_path / "tiles/tile/0/100", 32 * 5)
    result = run_go(tilecheck, str(tmp_path / "tiles"), data_dir)
    print("Go tlog on a corrupted level-0 tile:", result)
    assert result["ok"] is False
    with pytest.raises(ProofError, match="differs from the tile rebuilt from the entry bundles"):
        mirror_log(lambda p: (tmp_path / "tiles" / p).read_bytes(), tmp_path / "mirror",
                   read_vkey(data_dir))
    assert not (tmp_path / "mirror" / "checkpoint").exists()


def test_a_corrupted_level1_tile_is_caught_by_the_rebuild(tilecheck: Path, data_dir: Path,
                                                         tmp_path: Path) -> None:
    """The DESIGN.md section 9 case: whatever Go's tile reader says (it is printed), the
    byte-for-byte rebuild from the entries refuses the corrupted level-1 tile."""
    export_tiles(data_dir, tmp_path / "tiles")
    corrupt(tmp_path / "tiles/tile/1/000", 32 * 7)
    print("Go tlog on a corrupted level-1 tile:", run_go(tilecheck, str(tmp_path / "tiles"),
                                                         data_dir))
    with pytest.raises(ProofError, match="differs from the tile rebuilt from the entry bundles"):
        mirror_log(lambda p: (tmp_path / "tiles" / p).read_bytes(), tmp_path / "mirror",
                   read_vkey(data_dir))
    assert not (tmp_path / "mirror" / "checkpoint").exists()
