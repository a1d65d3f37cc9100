"""tlog-tiles benchmark: export, tile reads and a mirror catch-up. A script, not a test.

    .venv/bin/python tests/benchmarks/bench_tiles.py --n 262144

Builds a ledger of N fake pre-verified leaves (tests/tiles_support.py), then measures: one
full `export_tiles` into an empty directory and an idempotent re-export (process CPU time
beside wall time); single tile and entry-bundle reads from the store (the API's work per
request, before HTTP), median and floor over every level-0 tile; and a first mirror run
(`mirror_log`, fetching from the store in process) of the whole log. Prints the load
average: on a shared machine the floor is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.core.tiles import TileId, parse_tile_path, tiles_for_size  # noqa: E402
from ledger.log.ledger_dir import DB_NAME, read_vkey  # noqa: E402
from ledger.log.mirror import mirror_log  # noqa: E402
from ledger.log.store import LedgerStore  # noqa: E402
from ledger.log.tiles import CHECKPOINT_FILE, export_tiles, published, read_path  # noqa: E402
from tests.tiles_support import tiles_ledger  # noqa: E402


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=262_144)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tiles-"))
    data_dir = tiles_ledger(work, [args.n])
    out: dict[str, object] = {"n": args.n, "cpus": os.cpu_count()}
    wall, cpu = timed(lambda: export_tiles(data_dir, work / "export"))
    files = sum(1 for p in (work / "export").rglob("*") if p.is_file())
    out["export"] = {"files": files, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    wall, cpu = timed(lambda: export_tiles(data_dir, work / "export"))
    out["reexport"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    with LedgerStore(data_dir / DB_NAME) as store:
        size = published(store)[0].size
        level0 = [t for t in tiles_for_size(size) if t.level == 0]
        for name, tiles in (("tile_read_us", level0),
                            ("bundle_read_us", [TileId(0, t.index, t.width, True)
                                                for t in level0])):
            samples = []
            for tile in tiles:
                start = time.perf_counter()
                read_path(store, tile, size)
                samples.append((time.perf_counter() - start) * 1e6)
            out[name] = {"median": round(statistics.median(samples)),
                         "floor": round(min(samples))}

        def fetch(path: str) -> bytes:
            if path == CHECKPOINT_FILE:
                return published(store)[1].encode()
            return read_path(store, parse_tile_path(path), size)

        wall, cpu = timed(lambda: mirror_log(fetch, work / "mirror", read_vkey(data_dir)))
    out["mirror_from_empty"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
