"""Ledger benchmark against pymerkle (SQLite backend) on the same leaves. A script, not a test.

    .venv/bin/python tests/benchmarks/bench_ledger.py --n 1000000

Measures, for N leaves of ~600 bytes appended in batches of 1,000 (pre-verified: hashing,
node storage, lookup keys, SQLite with WAL + synchronous=FULL, a signed checkpoint at most once
a second): append rate (and the slowest batch, which includes a lookup-index merge); median
and p99 inclusion and consistency proof time at N, warm (same process) and cold (a fresh
process per proof); event-id and decision lookups; offline bundle verification rate; audit
time. ``--decisions F`` makes a fraction F of the leaves AuthorizationGranted decisions whose
parent_ref is the previous leaf (each adds a decision_for key).
pymerkle gets the same leaves in the same batch size (``append_entries`` per batch, its own
SQLite settings), 1-based indices, and the closest equivalent of each figure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.core.bundles import verify_bundle  # noqa: E402
from ledger.core.envelope import payload_type  # noqa: E402
from ledger.core.keys import Signer  # noqa: E402
from ledger.log.audit import audit_store  # noqa: E402
from ledger.log.proofs import inclusion_bundle  # noqa: E402
from ledger.log.recompute import leaf_columns  # noqa: E402
from ledger.log.records import LeafRecord  # noqa: E402
from ledger.log.sequencer import Sequencer  # noqa: E402
from ledger.log.store import LedgerStore  # noqa: E402

ORIGIN = "bench.govledger.local/log"
PAD = hashlib.sha256(b"filler").hexdigest().encode() * 6  # 384 bytes
PLAIN, DECISION = (payload_type(kind).encode() for kind in ("PolicyPublished",
                                                            "AuthorizationGranted"))


def _payload(i: int, parent: bytes | None) -> bytes:
    """Leaf i's payload, ~340 bytes of JSON; a decision's names the leaf before."""
    ref = b"" if parent is None else b'"request_id":"%s",' % parent
    return b'{"n":"%012d",%s"pad":"%s"}' % (i, ref, PAD[:320 - len(ref)])


def leaf(i: int, every: int = 0) -> bytes:
    """Leaf i: ~600 bytes shaped like a stored envelope (the audit and the start-up check
    read event id, kind and parent from it; its signature is not a real one: the benchmark
    appends pre-verified records). With ``every``, each every-th leaf is an
    AuthorizationGranted of the leaf before it."""
    decision = bool(every) and i % every == every - 1
    parent = hashlib.sha256(_payload(i - 1, None)).hexdigest().encode() if decision else None
    return (b'{"payload":"' + base64.b64encode(_payload(i, parent)) + b'","payloadType":"'
            + (DECISION if decision else PLAIN)
            + b'","signatures":[{"keyid":"bench","sig":"AAAA"}]}')


def batches(n: int, size: int, every: int = 0) -> Iterator[list[bytes]]:
    for start in range(0, n, size):
        yield [leaf(i, every) for i in range(start, min(n, start + size))]


def refuse(data: bytes) -> LeafRecord:
    raise AssertionError("the benchmark appends pre-verified records only")


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"median_ms": statistics.median(ordered) * 1e3, "p99_ms": p99 * 1e3,
            "samples": len(ordered)}


def every_of(decisions: float) -> int:
    """Every how many leaves one is a decision (0: none); a decision's parent is not one."""
    every = round(1 / decisions) if decisions else 0
    if every == 1:
        raise SystemExit("--decisions must be at most 0.5")
    return every


def records(chunk: list[bytes]) -> list[LeafRecord]:
    """Pre-verified records, their columns read from the leaf as the audit reads them."""
    out = []
    for data in chunk:
        columns = leaf_columns(data)
        assert columns is not None
        raw_id, kind, parent = columns
        out.append(LeafRecord(raw_id.hex(), kind, data, None if parent is None else parent.hex()))
    return out


def bench_ours(path: Path, n: int, batch: int, samples: int,
               decisions: float = 0.0, per_commit: int = 1,
               pipeline: bool = False) -> dict[str, object]:
    signer = Signer.from_private_bytes(hashlib.sha256(b"bench key").digest())
    store = LedgerStore(path, writer=True, commit_thread=pipeline)
    seq = Sequencer(store, signer, ORIGIN, refuse, checkpoint_interval=1.0)
    every = every_of(decisions)
    # The records (what the ingest's verification hands over) are built before the clock
    # starts: the figure is the append alone, and nothing it overlaps is left out of it.
    groups: list[list[LeafRecord]] = [[]]
    for chunk in batches(n, batch, every):
        if len(groups[-1]) >= per_commit * batch:
            groups.append([])
        groups[-1] += records(chunk)
    slowest = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for group in groups:  # each one transaction, one fsync: the group commit
        t1 = time.perf_counter()
        if pipeline:
            seq.append_begin(group)  # its COMMIT runs while the next group is laid out
        else:
            seq.append_records(group)
        slowest = max(slowest, time.perf_counter() - t1)
    seq.publish()  # waits for the last COMMIT, signs the tail
    append_s, append_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    del groups
    rng = random.Random(1)
    picks = (rng.randrange(n) for _ in range(samples))  # then the request before a decision
    ids = [hashlib.sha256(_payload(k - 1 if every and k % every == every - 1 else k, None))
           .hexdigest() for k in picks]
    it0 = iter(ids)
    finds = timed(lambda: store.find(next(it0)), samples)
    it1 = iter(ids)
    decision = timed(lambda: store.decision_for(next(it1)), samples)
    idx = [rng.randrange(n) for _ in range(samples)]
    olds = [rng.randrange(1, n) for _ in range(samples)]
    it = iter(idx)
    incl = timed(lambda: store.inclusion_proof(next(it), n), samples)
    it2 = iter(olds)
    cons = timed(lambda: store.consistency_proof(next(it2), n), samples)
    bundles = [json.dumps(inclusion_bundle(store, index=i)).encode() for i in idx[:300]]
    t0 = time.perf_counter()
    for bundle in bundles:
        verify_bundle(bundle, seq.vkey)
    verify_rate = len(bundles) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    report = audit_store(store, seq.vkey)
    audit_s = time.perf_counter() - t0
    assert report.ok, report.problems
    seq.close()
    return {"append_per_s": n / append_s, "append_s": append_s, "slowest_append_call_ms":
            slowest * 1e3, "batches_per_commit": per_commit, "pipeline": pipeline,
            "load_avg": os.getloadavg(),
            "append_cpu_us_per_leaf": append_cpu_s / n * 1e6,
            "inclusion_warm": summary(incl), "consistency_warm": summary(cons),
            "find_warm": summary(finds), "decision_for_warm": summary(decision),
            "bundle_verify_per_s": verify_rate, "audit_s": audit_s,
            "db_mb": path.stat().st_size / 1e6}


def bench_floor(path: Path, n: int, batch: int, every: int, per_commit: int) -> dict[str, float]:
    """The floor of the same run: the same leaf bytes inserted as (idx, leaf) rows into a
    table with nothing else (no hashes, no index, no offsets), WAL + synchronous=FULL, one
    transaction per group of the same size: what SQLite alone costs on this disk now."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE leaves (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL)")
    rows: list[tuple[int, bytes]] = []
    spent = cpu = 0.0
    size = 0
    for number, chunk in enumerate(batches(n, batch, every), 1):
        rows += [(size + i, data) for i, data in enumerate(chunk)]
        size += len(chunk)
        if number % per_commit and number * batch < n:
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO leaves VALUES (?, ?)", rows)
        conn.execute("COMMIT")
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        rows = []
    conn.close()
    return {"floor_append_per_s": n / spent, "floor_cpu_us_per_leaf": cpu / n * 1e6}


def bench_pymerkle(path: Path, n: int, batch: int, samples: int) -> dict[str, object]:
    from pymerkle import SqliteTree, verify_inclusion

    tree = SqliteTree(str(path))
    t0 = time.perf_counter()
    for chunk in batches(n, batch):
        tree.append_entries(chunk)
    append_s = time.perf_counter() - t0
    rng = random.Random(1)
    idx = [rng.randrange(n) for _ in range(samples)]
    olds = [rng.randrange(1, n) for _ in range(samples)]
    it = iter(idx)
    incl = timed(lambda: tree.prove_inclusion(next(it) + 1, n), samples)
    it2 = iter(olds)
    cons = timed(lambda: tree.prove_consistency(next(it2), n), samples)
    root = tree.get_root(n)
    proofs = [(tree.get_leaf(i + 1), tree.prove_inclusion(i + 1, n)) for i in idx[:300]]
    t0 = time.perf_counter()
    for base, proof in proofs:
        verify_inclusion(base, root, proof)
    verify_rate = len(proofs) / (time.perf_counter() - t0)
    # pymerkle has no audit: re-hash every stored entry, then recompute the root uncached.
    t0 = time.perf_counter()
    reader = sqlite3.connect(path)
    for entry, digest in reader.execute("SELECT entry, hash FROM leaf ORDER BY id"):
        if tree.hash_buff(entry) != digest:
            raise AssertionError("pymerkle leaf hash differs")
    reader.close()
    tree.cache_clear()
    tree.get_root(n)
    audit_s = time.perf_counter() - t0
    tree.close()
    return {"append_per_s": n / append_s, "append_s": append_s, "inclusion_warm":
            summary(incl), "consistency_warm": summary(cons), "bundle_verify_per_s":
            verify_rate, "audit_s": audit_s, "db_mb": path.stat().st_size / 1e6}


def cold_probe(kind: str, path: str, n: int, index: int, old: int) -> None:
    """Run in a fresh process: time one inclusion and one consistency proof."""
    if kind == "ours":
        store = LedgerStore(Path(path))
        t0 = time.perf_counter()
        store.inclusion_proof(index, n)
        t1 = time.perf_counter()
        store.consistency_proof(old, n)
        t2 = time.perf_counter()
    else:
        from pymerkle import SqliteTree
        tree = SqliteTree(path)
        t0 = time.perf_counter()
        tree.prove_inclusion(index + 1, n)
        t1 = time.perf_counter()
        tree.prove_consistency(old, n)
        t2 = time.perf_counter()
    print(json.dumps([t1 - t0, t2 - t1]))


def cold(kind: str, path: Path, n: int, samples: int) -> dict[str, object]:
    rng = random.Random(2)
    incl, cons = [], []
    for _ in range(samples):
        out = subprocess.run([sys.executable, __file__, "--cold-probe", kind, str(path),
                              str(n), str(rng.randrange(n)), str(rng.randrange(1, n))],
                             capture_output=True, text=True, check=True, timeout=600)
        a, b = json.loads(out.stdout)
        incl.append(a)
        cons.append(b)
    return {"inclusion_cold": summary(incl), "consistency_cold": summary(cons)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="warm proofs per kind")
    parser.add_argument("--cold", type=int, default=15, help="fresh processes per system")
    parser.add_argument("--pymerkle-samples", type=int, default=100)
    parser.add_argument("--skip-pymerkle", action="store_true")
    parser.add_argument("--decisions", type=float, default=0.0,
                        help="fraction of leaves that are decisions (0 to 1)")
    parser.add_argument("--group", type=int, default=1,
                        help="batches per commit (group commit: one transaction, one fsync)")
    parser.add_argument("--pipeline", action="store_true",
                        help="each group's COMMIT on the store's commit thread while the next "
                        "group is laid out and hashed (Sequencer.append_begin)")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--cold-probe", nargs=5, metavar=("KIND", "DB", "N", "INDEX", "OLD"))
    args = parser.parse_args()
    if args.cold_probe:
        kind, path, n, index, old = args.cold_probe
        cold_probe(kind, path, int(n), int(index), int(old))
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, object]] = {}
    ours = bench_ours(work / "govledger.db", args.n, args.batch, args.samples, args.decisions,
                      args.group, args.pipeline)
    ours.update(cold("ours", work / "govledger.db", args.n, args.cold))
    ours.update(bench_floor(work / "floor.db", args.n, args.batch, every_of(args.decisions),
                            args.group))
    results["govledger"] = ours
    print(json.dumps({"govledger": ours}, indent=1), flush=True)
    if not args.skip_pymerkle:
        theirs = bench_pymerkle(work / "pymerkle.db", args.n, args.batch, args.pymerkle_samples)
        theirs.update(cold("pymerkle", work / "pymerkle.db", args.n, max(3, args.cold // 3)))
        results["pymerkle"] = theirs
        print(json.dumps({"pymerkle": theirs}, indent=1), flush=True)
        print_ratios(ours, theirs)


def print_ratios(ours: dict[str, object], theirs: dict[str, object]) -> None:
    def median(d: dict[str, object], key: str) -> float:
        value = d[key]
        assert isinstance(value, dict)
        return float(value["median_ms"])

    rows = [("append leaves/s (higher is better)", float(ours["append_per_s"]),  # type: ignore[arg-type]
             float(theirs["append_per_s"]), True)]  # type: ignore[arg-type]
    for key in ("inclusion_warm", "consistency_warm", "inclusion_cold", "consistency_cold"):
        rows.append((f"{key} median ms (lower is better)", median(ours, key),
                     median(theirs, key), False))
    rows.append(("bundle verify /s (higher is better)", float(ours["bundle_verify_per_s"]),  # type: ignore[arg-type]
                 float(theirs["bundle_verify_per_s"]), True))  # type: ignore[arg-type]
    rows.append(("audit s (lower is better)", float(ours["audit_s"]),  # type: ignore[arg-type]
                 float(theirs["audit_s"]), False))  # type: ignore[arg-type]
    print(f"{'figure':44} {'govledger':>12} {'pymerkle':>12} {'advantage':>10}")
    for name, a, b, higher in rows:
        advantage = a / b if higher else b / a
        print(f"{name:44} {a:12.4g} {b:12.4g} {advantage:9.2f}x")


if __name__ == "__main__":
    main()
