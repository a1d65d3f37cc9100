"""Added latency of a tool call through the MCP gateway against a direct call (not a pytest file).

    .venv/bin/python tests/benchmarks/bench_gateway.py [--calls 200] [--checkpoint-s 0.1]
        [--json]

Starts ``govledger up`` (embedded broker, processor, sequencer, API) on a temporary data
directory, then times ``--calls`` sequential ``tools/call`` of the test upstream
(tests/mcp_upstream.py, the SDK's MCPServer over stdio) from a real ``ClientSession``:

- direct: the client talks to the upstream itself: the floor of this run;
- gateway, same resource: through ``govledger mcp-gateway`` (stdio), every call on one
  resource, so the artifact is reused: the gate's inclusion-proof check over HTTP, the
  signed ExecutionRequested -> ExecutionAllowed round trip through the processor, the
  upstream call, the ExecutionCompleted report;
- gateway, new resource per call: the same plus a signed AuthorizationRequested -> grant,
  and the inclusion proof of that new grant, which waits for the next signed checkpoint
  (``--checkpoint-s``).

Prints p50 and p99 of each, the added latency (gateway minus direct), CPU seconds per process
(service, processor, broker, gateway, upstreams, this client) over each phase, and the load
average before and after. The machine is shared: read the figures next to the floor.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench_idle import children, cpu_s  # noqa: E402
from bench_service import ServiceUnderTest  # noqa: E402

UPSTREAM = str(HERE.parent / "mcp_upstream.py")
GOVLEDGER = str(Path(sys.executable).parent / "govledger")
# Given a bootstrap address, the settings assume Apache Kafka (idempotent producer, 500 ms
# fetch wait, answered early there); the embedded broker holds each fetch for its full wait,
# so the gateway gets the embedded defaults explicitly.
EMBEDDED_BROKER = {"GOVLEDGER_KAFKA_IDEMPOTENT": "false",
                   "GOVLEDGER_KAFKA_FETCH_MAX_WAIT_MS": "10"}


def alice_key(path: Path) -> Path:
    """The test agent alice's key (tests/factories.py seeds it) as a PEM file."""
    seed = hashlib.sha256(b"govledger test key alice").digest()
    pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def write_config(root: Path, service: ServiceUnderTest, unlogged: bool) -> Path:
    path = root / "gateway.toml"
    log_check = "allow_unlogged = true" if unlogged else f'api = "{service.api}"'
    path.write_text(f"""
agent_key = "{alice_key(root / 'alice.key')}"
data = "{service.data}"
kafka = "{service.kafka}"
{log_check}
[upstreams.db]
command = "{sys.executable}"
args = ["{UPSTREAM}"]
[tools.query]
action = "read"
resource = "db/{{database}}/{{table}}"
""")
    return path


@asynccontextmanager
async def session_of(command: str, args: list[str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=command, args=args, env=EMBEDDED_BROKER)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def timed_calls(session: ClientSession, calls: int, fresh: bool) -> list[float]:
    samples = []
    for n in range(calls):
        args = {"database": "orders", "table": f"t{n}" if fresh else "same"}
        started = time.perf_counter()
        result = await session.call_tool("query", args)
        samples.append(time.perf_counter() - started)
        assert not result.is_error, result
    return samples


def processes(service: ServiceUnderTest) -> dict[str, int]:
    """Every process of the run by role (this client included)."""
    pids = {"service (up)": service.proc.pid, "bench client": os.getpid()}
    pids.update({f"service {role}": pid for role, pid in children(service.proc.pid).items()})
    for pid in children(os.getpid()).values():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"mcp-gateway" in cmdline:
            pids["gateway"] = pid
            for n, child in enumerate(children(pid).values()):
                pids[f"upstream (via gateway){' ' + str(n) if n else ''}"] = child
        elif b"mcp_upstream" in cmdline:
            pids["upstream (direct)"] = pid
    return pids


async def phase(name: str, command: str, args: list[str], calls: int, fresh: bool,
                service: ServiceUnderTest) -> dict[str, Any]:
    async with session_of(command, args) as session:
        # warm up first: the gateway starts its upstream on the first call
        await session.call_tool("query", {"database": "orders", "table": "warmup"})
        pids = processes(service)
        before = {role: cpu_s(pid) for role, pid in pids.items()}
        load_before = os.getloadavg()
        started = time.perf_counter()
        samples = await timed_calls(session, calls, fresh)
        wall = time.perf_counter() - started
        cpu = {role: round(cpu_s(pid) - before[role], 2) for role, pid in pids.items()
               if pid_alive(pid)}
    ms = sorted(s * 1000 for s in samples)
    return {"phase": name, "calls": calls, "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
            "wall_s": round(wall, 2), "cpu_s": cpu,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()]}


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--checkpoint-s", type=float, default=0.1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--unlogged", action="store_true",
                        help="the gateway skips the gate's inclusion-proof check (weaker; "
                        "shows what that check costs)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        root = Path(tmp)
        service = ServiceUnderTest(root, opts.checkpoint_s)
        try:
            config = str(write_config(root, service, opts.unlogged))
            gateway = [GOVLEDGER, ["mcp-gateway", "--config", config]]
            results = [
                anyio.run(phase, "direct", sys.executable, [UPSTREAM], opts.calls, False,
                          service),
                anyio.run(phase, "gateway, same resource", *gateway, opts.calls, False,
                          service),
                anyio.run(phase, "gateway, new resource per call", *gateway,
                          max(10, opts.calls // 4), True, service),
            ]
        finally:
            with contextlib.suppress(Exception):
                service.stop()
    report(results, opts.json)


def report(results: list[dict[str, Any]], as_json: bool) -> None:
    floor = results[0]
    for row in results[1:]:
        row["added_p50_ms"] = round(row["p50_ms"] - floor["p50_ms"], 2)
        row["added_p99_ms"] = round(row["p99_ms"] - floor["p99_ms"], 2)
    if as_json:
        print(json.dumps({"results": results, "cpus": os.cpu_count()}, indent=2))
        return
    print(f"MCP gateway latency ({os.cpu_count()} CPUs, shared machine: compare with the "
          "direct floor of the same run)")
    for row in results:
        added = (f"  added p50 {row['added_p50_ms']:.2f} ms, p99 {row['added_p99_ms']:.2f} ms"
                 if "added_p50_ms" in row else "  (floor)")
        print(f"{row['phase']:32} {row['calls']:4} calls  p50 {row['p50_ms']:8.2f} ms  "
              f"p99 {row['p99_ms']:8.2f} ms{added}")
        print("    cpu s: " + ", ".join(f"{k} {v}" for k, v in row["cpu_s"].items()))
        print(f"    load average before {row['loadavg_before']} after {row['loadavg_after']}")


if __name__ == "__main__":
    main()
