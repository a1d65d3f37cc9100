"""What reconciling the processor journal against the ledger costs (processors/reconcile.py).

    .venv/bin/python tests/benchmarks/bench_reconcile.py [--entries 10000]

Builds a data directory, decides ``--entries`` requests with the real engine (grants and
policy denials), journals them and logs inputs and outputs in the ledger, then times, in one
run: the floor (reading the journal entries alone), the check a running worker makes every
few seconds (``Reconciler.unledgered``: journal entries past the watermark against the
ledger), the first start's check of every ledger decision against an intact journal, and a
rebuild of the whole journal from the ledger (``Reconciler.rebuild`` after
processor.db was deleted). Prints microseconds per entry and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ledger.config import Settings
from ledger.core.envelope import sign_event
from ledger.core.streams import Stream
from ledger.datadir import DataDir
from ledger.keyfiles import load_keyring
from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import keyring_verifier
from processors.app import build_engine
from processors.journal import Journal
from processors.reconcile import Reconciler
from tests.factories import ALICE, T0, request
from tests.service_support import make_data_dir


def build(root: Path, entries: int) -> Settings:
    data = make_data_dir(root)
    settings = Settings(data_dir=data.root)
    engine = build_engine(settings)
    journal = Journal(data.journal)
    sequencer = open_ledger(data.root, keyring_verifier(load_keyring(data.keyring)))
    batch, logged = [], []
    for n in range(entries):
        denied = n % 4 == 0
        raw = sign_event(request(nonce=f"bench-nonce-{n:010d}",
                                 actions=("delete",) if denied else ("read",),
                                 resource="prod/db/*" if denied else "db/orders/*"), ALICE)
        now = T0 + timedelta(milliseconds=n)
        outcome = engine.handle(Stream.REQUESTS, raw, now)
        batch.append((Stream.REQUESTS, now, raw, outcome))
        logged += [raw, *(o.value for o in outcome.outputs)]
        if len(batch) == 1000:
            journal.append(batch)
            sequencer.submit(logged)
            batch, logged = [], []
    journal.append(batch)
    sequencer.submit(logged)
    sequencer.close()
    journal.close()
    return settings


def reconciler(settings: Settings) -> Reconciler:
    data = DataDir(settings.data_dir)
    engine = build_engine(settings)
    return Reconciler(data.journal, data.ledger_db, keyring=engine.keyring,
                      authority_identity=engine.identity,
                      limits=engine.limits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        settings = build(Path(tmp) / "data", args.entries)
        print(f"built {args.entries} decided requests in {time.perf_counter() - started:.1f} s")
        data = DataDir(settings.data_dir)

        journal = Journal(data.journal)
        cpu = time.process_time()
        read = sum(1 for _ in journal.entries())
        floor = time.process_time() - cpu
        journal.close()

        check = reconciler(settings)
        cpu = time.process_time()
        found = check.unledgered()
        scan = time.process_time() - cpu
        assert not found.missing and found.scanned == read
        check.close()

        agree = reconciler(settings)
        cpu = time.process_time()
        assert agree.rebuild(T0 + timedelta(days=1)) == 0  # every decision: journal agrees
        agreeing = time.process_time() - cpu
        agree.close()

        for suffix in ("", "-wal", "-shm"):
            Path(f"{data.journal}{suffix}").unlink(missing_ok=True)
        rebuild = reconciler(settings)
        cpu = time.process_time()
        rebuilt = rebuild.rebuild(T0 + timedelta(days=1))
        rebuilding = time.process_time() - cpu
        rebuild.close()
        assert rebuilt == args.entries

    per = 1e6 / args.entries
    print(f"floor: journal read                 {floor * per:7.1f} us CPU per entry")
    print(f"watermark check (unledgered)        {scan * per:7.1f} us CPU per entry")
    print(f"first check, journal agrees         {agreeing * per:7.1f} us CPU per entry")
    print(f"rebuild from the ledger             {rebuilding * per:7.1f} us CPU per entry")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
