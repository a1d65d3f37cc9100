"""The governance monitor's sustained rate on the embedded broker (not a pytest file).

    .venv/bin/python tests/benchmarks/bench_monitor.py [--flows 4000] [--json]

An embedded broker, a data directory (``govledger init`` plus the test agents) and the
monitor (``python -m processors.monitor``, as ``govledger up`` starts it, metrics on a free
port). Once it is ready, ``--flows`` honest executions (request, grant, execution request,
allowance, completion: 5 signed events each, pre-signed) are produced as fast as possible;
the rate is all events over first produce -> the monitor's ``govledger_monitor_events_total``
reaching them (polled every 50 ms), and the monitor's CPU per event is its /proc CPU time
meanwhile over the events. The monitor's lag (``govledger_monitor_lag``) is sampled while
it works. No sequencer runs: the monitor alone is measured. Prints the load average: this
machine is shared, so rates vary between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from ledger.config import Settings  # noqa: E402
from ledger.datadir import DataDir  # noqa: E402
from ledger.kafka.broker import EmbeddedBroker  # noqa: E402
from ledger.kafka.topics import Topics, ensure_topics  # noqa: E402
from ledger.keyfiles import load_signer  # noqa: E402
from ledger.server.children import settings_env  # noqa: E402
from tests.factories import ALICE  # noqa: E402
from tests.monitor_scenarios import Scenario  # noqa: E402
from tests.service_support import RUNNER, make_data_dir  # noqa: E402


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(flows: int, root: Path) -> dict[str, Any]:
    make_data_dir(root)
    settings = Settings(data_dir=root, kafka_session_timeout_ms=6_000)
    s = Scenario(load_signer(DataDir(root).authority_key), "govledger:authority", ALICE, RUNNER)
    for _ in range(flows):
        s.honest()
    events = list(s.published)
    async with EmbeddedBroker() as broker:
        topics = Topics(settings.topic_prefix)
        await ensure_topics(broker.bootstrap, topics.all(), settings.partitions, 1)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ready = root / ".bench-ready"
        env = {**os.environ, **settings_env(settings), "GOVLEDGER_KAFKA_BOOTSTRAP":
               broker.bootstrap, "GOVLEDGER_MONITOR_METRICS_PORT": str(port)}
        proc = subprocess.Popen([sys.executable, "-m", "processors.monitor", "--ready-file",
                                 str(ready)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            started = time.monotonic()
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() - started > 120:
                    raise RuntimeError("monitor not ready")
                await asyncio.sleep(0.1)
            ready_s = time.monotonic() - started
            cpu0, idle0 = cpu_s(proc.pid), time.monotonic()
            await asyncio.sleep(5)
            idle_cores = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - idle0)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5,
                                        max_batch_size=512 * 1024)
            await producer.start()
            cpu0, t0 = cpu_s(proc.pid), time.monotonic()
            for stream, envelope, event_id, event in events:
                key = (event.lineage_root() or event_id).encode()
                await producer.send(topics.name(stream), envelope, key=key)
            await producer.flush()
            produced_s = time.monotonic() - t0
            await producer.stop()
            max_lag = 0.0
            while (seen := metric(port, "govledger_monitor_events_total")) < len(events):
                max_lag = max(max_lag, metric(port, "govledger_monitor_lag"))
                if time.monotonic() - t0 > 600:
                    raise RuntimeError(f"monitor folded {seen} of {len(events)}")
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - t0
            used = cpu_s(proc.pid) - cpu0
            alerts = metric(port, "govledger_monitor_alerts_total")
        finally:
            proc.terminate()
            proc.wait(30)
    return {"events": len(events), "ready_s": ready_s, "produce_s": produced_s,
            "events_per_s": len(events) / elapsed, "monitor_cpu_us_per_event":
            used / len(events) * 1e6, "monitor_cores_while_busy": used / elapsed,
            "monitor_idle_cores": idle_cores, "max_lag_sampled": max_lag,
            "alerts": alerts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=4000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="govledger-bench-monitor-") as tmp:
        result = asyncio.run(run(args.flows, Path(tmp) / "data"))
    result.update(nproc=os.cpu_count(), loadavg_before=before, loadavg_after=os.getloadavg())
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"nproc {result['nproc']}, load average before {before[0]:.2f}, after "
          f"{result['loadavg_after'][0]:.2f} (shared machine)")
    print(f"monitor ready in {result['ready_s']:.1f} s; idle: {result['monitor_idle_cores']:.3f}"
          " cores")
    print(f"{result['events']} events ({args.flows} honest executions) produced in "
          f"{result['produce_s']:.2f} s: {result['events_per_s']:,.0f} events/s folded, "
          f"{result['monitor_cpu_us_per_event']:.0f} us monitor CPU per event "
          f"({result['monitor_cores_while_busy']:.2f} cores), max lag sampled "
          f"{result['max_lag_sampled']:.0f}, alerts {result['alerts']:.0f}")


if __name__ == "__main__":
    main()
