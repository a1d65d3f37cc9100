"""Idle cost of ``govledger up``, and what the first request after idle waits (not a pytest file).

    .venv/bin/python tests/benchmarks/bench_idle.py [--settle-s 10] [--measure-s 20]
        [--tries 5] [--idle-s 5] [--env GOVLEDGER_X=V] [--json]

Starts ``govledger up`` on a temporary data directory (embedded broker), waits for its ready
file and ``--settle-s`` more, then reads utime+stime (/proc/PID/stat) of the ``up`` process,
the processor, sequencer and monitor children and the broker child over ``--measure-s``
seconds with nothing submitted: cores per process and in total, and the load average
(/proc/loadavg) before and after.
Then ``--tries`` times: stay idle ``--idle-s`` seconds, submit one pre-signed request over the
HTTP API (POST /v1/events, then GET /v1/decisions/{id}?wait=10) and time submit -> decision;
right after each, one more request on a warm service for comparison. Prints numbers; it is not
a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import ALICE, ServiceUnderTest, presign

from ledger.sdk.httpsig import SignedRequests


def children(pid: int) -> dict[str, int]:
    """The direct children of ``pid`` by role: "broker" (tansu), "processor", or their name."""
    out: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != pid:
                continue
            cmdline = stat.parent.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode()
            role = ("broker" if "tansu" in cmdline
                    else "monitor" if "processors.monitor" in cmdline
                    else "sequencer" if "ledger.server.sequencer_process" in cmdline
                    else "processor" if "processors" in cmdline else cmdline[:40])
            out[role] = int(stat.parent.name)
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def idle_cores(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = {role: cpu_s(pid) for role, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cores = {role: (cpu_s(pid) - before[role]) / elapsed for role, pid in pids.items()}
    cores["total"] = sum(cores.values())
    return cores


def one_request(http: httpx.Client, request_id: str, envelope: bytes) -> float:
    """Submit -> decision over the HTTP API, in ms."""
    t0 = time.perf_counter()
    posted = http.post("/v1/events", content=envelope,
                       headers={"content-type": "application/json"})
    if posted.status_code != 202:
        raise RuntimeError(f"POST /v1/events {posted.status_code}: {posted.text}")
    got = http.get(f"/v1/decisions/{request_id}", params={"wait": 10})
    if got.status_code != 200:
        raise RuntimeError(f"GET decision {got.status_code}: {got.text}")
    return (time.perf_counter() - t0) * 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--measure-s", type=float, default=20.0)
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--env", action="append", default=[], metavar="GOVLEDGER_X=V",
                        help="a setting for the service (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="govledger-idle-") as tmp:
        extra = dict(item.split("=", 1) for item in args.env)
        service = ServiceUnderTest(Path(tmp), None, extra)
        try:
            time.sleep(args.settle_s)
            pids = {"up": service.proc.pid, **children(service.proc.pid)}
            load_before = loadavg()
            cores = idle_cores(pids, args.measure_s)
            load_after = loadavg()
            after_idle, warm = [], []
            requests = presign(2 * args.tries, "idle")
            with httpx.Client(base_url=service.api, timeout=30.0,
                              auth=SignedRequests(ALICE)) as http:
                for i in range(args.tries):
                    time.sleep(args.idle_s)
                    after_idle.append(one_request(http, *requests[2 * i]))
                    warm.append(one_request(http, *requests[2 * i + 1]))
        finally:
            service.stop()

    result: dict[str, object] = {
        "cores": {k: round(v, 4) for k, v in cores.items()},
        "measure_s": args.measure_s,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "after_idle_ms": {"p50": round(statistics.median(after_idle), 1),
                          "max": round(max(after_idle), 1),
                          "all": [round(x, 1) for x in after_idle]},
        "warm_ms": {"p50": round(statistics.median(warm), 1), "max": round(max(warm), 1)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"idle cores over {args.measure_s:.0f} s: "
          + ", ".join(f"{k} {v:.4f}" for k, v in cores.items()))
    print(f"load average before {load_before}, after {load_after}")
    print(f"first request after {args.idle_s:.0f} s idle (HTTP submit -> decision, "
          f"{args.tries} tries): p50 {statistics.median(after_idle):.1f} ms, max "
          f"{max(after_idle):.1f} ms (all: {', '.join(f'{x:.0f}' for x in after_idle)}); "
          f"warm: p50 {statistics.median(warm):.1f} ms, max {max(warm):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
