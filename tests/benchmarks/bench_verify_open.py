"""How long the sequencer's start-up check takes on a large ledger. A script, not a test.

    .venv/bin/python tests/benchmarks/bench_verify_open.py --n 1000000 --dir /tmp/bench-open

Builds (once; reused when ``--dir`` already holds one of ``--n`` leaves) a ledger of N real
signed envelopes, half AuthorizationRequested (~870 bytes), half AuthorizationGranted of the
request before (~1,040 bytes, each adding a ``decision_for`` key), appended the way
tests/benchmarks/bench_ledger.py does (``Sequencer.append_records``, batches of 1,000, a
checkpoint at most once a second, the last one at N). Then prints, with the load average:

* ``floor_wall_cpu_s``: reading every leaf row, hash page and lookup-index row, nothing
  computed (wall and CPU seconds: on a shared machine the CPU figure is the steadier one);
* ``open_wall_cpu_s``: ``Sequencer(...)`` on the ledger, i.e. the full check of
  ``Sequencer._verify_on_open`` (leaf and node hashes, checkpoint roots, event id, kind and
  parent of every leaf, the lookup index); one sample per ``--repeat``;
* ``max_rss_mb``: the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.core.envelope import pae, payload_bytes, payload_type  # noqa: E402
from ledger.core.keys import Signer  # noqa: E402
from ledger.log.records import LeafRecord  # noqa: E402
from ledger.log.sequencer import Sequencer  # noqa: E402
from ledger.log.store import LedgerStore  # noqa: E402
from tests.benchmarks.bench_ledger import ORIGIN, refuse  # noqa: E402
from tests.factories import ALICE, AUTHORITY, request  # noqa: E402
from tests.ledger_support import _grant  # noqa: E402

NONCE = "nonce-%012d"
PLACEHOLDER = "a" * 64  # a request id, replaced by the real one in each grant


def envelope_records(n: int) -> Iterator[LeafRecord]:
    """N records of real signed envelopes: request i, then the grant of request i."""
    req = payload_bytes(request(nonce=NONCE % 0))
    grant_event = _grant(PLACEHOLDER, PLACEHOLDER, None, 0, NONCE % 0)[0]
    grant = base64.b64decode(json.loads(grant_event)["payload"])
    kinds = {"AuthorizationRequested": (ALICE, payload_type("AuthorizationRequested")),
             "AuthorizationGranted": (AUTHORITY, payload_type("AuthorizationGranted"))}
    zero = (NONCE % 0).encode()
    request_id = ""
    for i in range(n):
        nonce = (NONCE % i).encode()
        if i % 2 == 0:
            kind, payload, parent = "AuthorizationRequested", req.replace(zero, nonce), None
        else:
            kind = "AuthorizationGranted"
            payload = grant.replace(zero, nonce).replace(PLACEHOLDER.encode(),
                                                         request_id.encode())
            parent = request_id
        signer, ptype = kinds[kind]
        sig = signer.sign(pae(ptype, payload))
        envelope = (b'{"payload":"' + base64.b64encode(payload) + b'","payloadType":"'
                    + ptype.encode() + b'","signatures":[{"keyid":"' + signer.key_id.encode()
                    + b'","sig":"' + base64.b64encode(sig) + b'"}]}')
        event_id = hashlib.sha256(payload).hexdigest()
        if parent is None:
            request_id = event_id
        yield LeafRecord(event_id, kind, envelope, parent)


def signer() -> Signer:
    return Signer.from_private_bytes(hashlib.sha256(b"bench key").digest())


def build(path: Path, n: int, batch: int) -> float:
    seq = Sequencer(LedgerStore(path, writer=True), signer(), ORIGIN, refuse,
                    checkpoint_interval=1.0)
    t0 = time.perf_counter()
    chunk: list[LeafRecord] = []
    for record in envelope_records(n):
        chunk.append(record)
        if len(chunk) == batch:
            seq.append_records(chunk)
            chunk = []
    if chunk:
        seq.append_records(chunk)
    seq.publish()
    seq.close()
    return time.perf_counter() - t0


def floor(path: Path) -> tuple[float, float]:
    """Read every row the check reads, compute nothing. (wall s, CPU s of this process)"""
    t0, c0 = time.perf_counter(), time.process_time()
    with LedgerStore(path) as store:
        for sql in ("SELECT idx, event_id, kind, parent_ref, leaf FROM leaves ORDER BY idx",
                    "SELECT page, hashes FROM hash_pages ORDER BY page",
                    "SELECT role, k, idx FROM keys", "SELECT role, k, idx FROM recent_keys"):
            for _ in store.conn.execute(sql):
                pass
    return time.perf_counter() - t0, time.process_time() - c0


def open_once(path: Path) -> tuple[float, float]:
    """Open the ledger for writing (the start-up check). (wall s, CPU s of this process)"""
    t0, c0 = time.perf_counter(), time.process_time()
    seq = Sequencer(LedgerStore(path, writer=True), signer(), ORIGIN, refuse)
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    seq.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-open-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "ledger.db"
    out: dict[str, object] = {"n": args.n, "load_before": os.getloadavg()}
    if path.exists():
        with LedgerStore(path) as store:
            if store.tree_size() != args.n:
                raise SystemExit(f"{path} holds {store.tree_size()} leaves, not {args.n}")
    else:
        out["build_s"] = build(path, args.n, args.batch)
    out["db_mb"] = path.stat().st_size / 1e6
    out["floor_wall_cpu_s"] = [floor(path) for _ in range(args.repeat)]
    out["open_wall_cpu_s"] = [open_once(path) for _ in range(args.repeat)]
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
