"""Governance over the whole service (issue 13): ``govledger up`` as a subprocess, the SDK
``Client`` on its embedded broker (not a pytest file, not a timed test).

    .venv/bin/python tests/benchmarks/bench_governance.py [--artifacts 10000]
        [--requests 20000] [--floor-requests N] [--window 400] [--only suspension|policy]

Each measurement gets a ``govledger up`` of its own (fresh data directory: the test agents,
the example policies, the rate limit raised since every request comes from one agent).

(1) **Suspension to refusal.** ``--artifacts`` grants are obtained (AuthorizationRequested
    signed by agent:alice; half of them children of one root grant). Then:
    *floor*: an ExecutionRequested (signed by runner:1) for every artifact, timed from the
    first produce until every ExecutionAllowed arrived; then a TenantSuspended signed by the
    operator (``keys/operator.key``, govledger:operator) is produced, and timed:
    (a) until its GovernanceApplied arrives at the client ("in force");
    (b) until an ExecutionRefused TENANT_SUSPENDED arrived for every artifact (the
        executions are produced once (a) arrived: what an operator waiting for "in force"
        then sees). Every refusal must name a position >= the suspension's, every floor
        verdict one below it.
(2) **Decisions/s while a policy is published.** ``--requests`` requests (every one a
    resource of its own; even ones ``db/orders/...``, which the example policy permits, odd
    ones ``reports/...``, which it denies) with at most ``--window`` undecided at a time.
    When half are produced, a PolicyPublished of the examples plus one rule permitting
    ``reports/*`` reads. Decisions/s before, during (from 0.5 s before the publish to 0.5 s
    after its GovernanceApplied arrived) and after; then every request must have exactly one
    decision, and each decision named position P-1 or less must be the old policy's outcome
    (and digest), each naming P or more the new one's (P: the publish's position).
    *floor*: the same stream (``--floor-requests``, default ``--requests``) with no publish.

Printed with each: CPU per decision of every process (from /proc: ``up`` itself, with the API
and the sequencer; the embedded broker; the processor child; the monitor child; this process,
the load generator) and the load average. Exits 1 on a lost, duplicated or misdecided
decision. The machine may be shared: compare with the floor of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.core.envelope import event_id, parse_envelope, sign_event_with_id  # noqa: E402
from ledger.core.events import (  # noqa: E402
    AuthorizationDenied,
    AuthorizationGranted,
    ExecutionRequested,
)
from ledger.core.governance_events import GovernanceApplied  # noqa: E402
from ledger.datadir import DataDir  # noqa: E402
from ledger.errors import Unavailable  # noqa: E402
from ledger.keyfiles import load_keyring, load_signer  # noqa: E402
from ledger.sdk.client import Client, Decision  # noqa: E402
from ledger.sdk.governance import Admin  # noqa: E402
from ledger.server.governance_tools import policy_payload  # noqa: E402
from tests.benchmarks.bench_service import (  # noqa: E402
    LedgerWatcher,
    ServiceUnderTest,
    cpu_per,
    sdk_settings,
)
from tests.factories import ALICE, ENV, request  # noqa: E402
from tests.service_support import RUNNER  # noqa: E402

EXTRA_RULE = """// bench_governance.py: reads under reports/ become permitted.
@id("bench-reports-read")
permit (
  principal,
  action == Action::"read",
  resource in Resource::"reports/*"
)
when { principal.roles.contains("reader") };
"""


class Service(ServiceUnderTest):
    """``govledger up``; its processes by role, the monitor child named apart (the parent's
    ``roles`` counts any child that is not the processor as the broker)."""

    def roles(self) -> dict[str, int]:
        out = {"up (api, sequencer)": self.proc.pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != self.proc.pid:
                    continue
                argv = stat.parent.joinpath("cmdline").read_bytes().split(b"\0")
                role = ("processor" if b"processors" in argv else
                        "monitor" if b"processors.monitor" in argv else "broker")
                out[role] = int(stat.parent.name)
        return out


def now() -> datetime:
    return datetime.now(UTC)


def envelope_id(envelope: bytes) -> str:
    return event_id(parse_envelope(envelope).payload)


def cpu_text(cpu: dict[str, float]) -> str:
    parts = [f"{role} {us:.0f}" for role, us in cpu.items()]
    service = sum(us for role, us in cpu.items() if role != "load generator")
    return (f"    CPU per decision (us): {', '.join(parts)}; service total {service:.0f}, "
            f"all {sum(cpu.values()):.0f}")


class Stamps:
    """Arrival time and decision ids of every decision the client receives, by subject."""

    def __init__(self, client: Client) -> None:
        self.at: dict[str, float] = {}
        self.first: dict[str, Decision] = {}
        self.ids: dict[str, set[str]] = {}
        self.deliveries = 0
        client.on_decision.append(self._seen)

    def _seen(self, decision: Decision) -> None:
        self.at.setdefault(decision.subject_id, time.perf_counter())
        self.first.setdefault(decision.subject_id, decision)
        self.ids.setdefault(decision.subject_id, set()).add(decision.verified.event_id)
        self.deliveries += 1


async def send_all(client: Client, stream: str, items: Sequence[tuple[str, bytes, str]],
                   chunk: int = 500) -> None:
    """Produce (id, envelope, key) items, ``chunk`` sends in flight at a time."""
    for i in range(0, len(items), chunk):
        await asyncio.gather(*(client.send_raw(stream, env, key)
                               for _, env, key in items[i:i + chunk]))


async def decided(client: Client, ids: Sequence[str], timeout: float) -> list[Decision]:
    return list(await asyncio.gather(*(client.decision(i, timeout) for i in ids)))


# -- (1) suspension to refusal --------------------------------------------------------------
async def grant(client: Client, count: int) -> list[tuple[str, str]]:
    """(artifact id, lineage root) of ``count`` grants: a root, then half children of it."""
    base = now()  # one window for all: a child's may not outlast its parent's
    first = await client.request(request(nonce="gov-root-0000000001", issued_at=base), ALICE,
                                 30)
    assert first.allow and first.artifact_id is not None, first.reasons
    root_id = first.artifact_id
    root = first.event.lineage_root() or ""
    items: list[tuple[str, bytes, str]] = []
    for n in range(1, count):
        child = n % 2 == 0
        envelope, rid = sign_event_with_id(request(
            nonce=f"gov-grant-{n:09d}", issued_at=base, resource="db/orders/1",
            root=root if child else None, parent=root_id if child else None), ALICE)
        items.append((rid, envelope, root if child else rid))
    await send_all(client, "requests", items)
    out = [(root_id, root)]
    for d in await decided(client, [rid for rid, _, _ in items], 120):
        assert d.allow and d.artifact_id is not None, d.reasons
        out.append((d.artifact_id, d.event.lineage_root() or ""))
    return out


def executions(artifacts: Sequence[tuple[str, str]], tag: str) -> list[tuple[str, bytes, str]]:
    out = []
    for n, (artifact_id, root) in enumerate(artifacts):
        envelope, eid = sign_event_with_id(ExecutionRequested(
            signer="runner:1", tenant="acme", nonce=f"{tag}-{n:010d}", issued_at=now(),
            artifact_id=artifact_id, root=root, action="read", resource="db/orders/1",
            environment=ENV), RUNNER)
        out.append((eid, envelope, root))
    return out


async def verdict_round(client: Client, items: Sequence[tuple[str, bytes, str]],
                        ) -> list[Decision]:
    await send_all(client, "executions", items)
    return await decided(client, [eid for eid, _, _ in items], 180)


async def settled(service: Service, leaf_ids: Sequence[str]) -> float:
    """Seconds until a signed checkpoint covers every one of ``leaf_ids`` (polled)."""
    watcher = LedgerWatcher(service.data / "ledger.db")
    t0, left = time.perf_counter(), list(leaf_ids)
    try:
        while left:
            left = sorted(set(left) - set(await asyncio.to_thread(watcher.covered, left)))
            await asyncio.sleep(0.02 if left else 0)
    finally:
        watcher.close()
    return time.perf_counter() - t0


async def in_ledger(service: Service, leaf_id: str, t0: float) -> tuple[float, float]:
    """Seconds from ``t0`` until ``leaf_id`` is a leaf of ledger.db, and until a signed
    checkpoint covers it (polled read-only every 5 ms, as the verdict round runs)."""
    watcher = LedgerWatcher(service.data / "ledger.db")
    appended = 0.0
    try:
        while not await asyncio.to_thread(watcher.covered, [leaf_id]):
            if not appended and leaf_id in watcher.index:
                appended = time.perf_counter() - t0
            await asyncio.sleep(0.005)
    finally:
        watcher.close()
    covered = time.perf_counter() - t0
    return appended or covered, covered


def positions(verdicts: Sequence[Decision]) -> tuple[int, int]:
    seen = [v.event.governance for v in verdicts]  # type: ignore[attr-defined]
    if None in seen:
        return -1, -1
    return min(seen), max(seen)


async def suspension(service: Service, count: int) -> tuple[list[str], bool]:
    data = DataDir(service.data)
    operator = Admin("govledger:operator", "*", load_signer(data.operator_key))
    lines: list[str] = []
    async with Client(sdk_settings(service), service.kafka, load_keyring(data.keyring)) as c:
        stamps = Stamps(c)
        t0 = time.perf_counter()
        artifacts = await grant(c, count)
        lines.append(f"(1) {len(artifacts)} artifacts granted in "
                     f"{time.perf_counter() - t0:.1f} s (half children of one root)")
        floor_items, items = executions(artifacts, "floor"), executions(artifacts, "after")
        cpu0 = service.cpu_by_role()
        t0 = time.perf_counter()
        floor = await verdict_round(c, floor_items)
        floor_s = max(stamps.at[v.subject_id] for v in floor) - t0
        cpu1 = service.cpu_by_role()
        allowed = sum(v.allow for v in floor)
        lines.append(f"  floor, no suspension: {allowed}/{len(floor)} ExecutionAllowed in "
                     f"{floor_s:.2f} s ({len(floor) / floor_s:,.0f} verdicts/s), positions "
                     f"{positions(floor)}")
        lines.append(cpu_text(cpu_per(cpu0, cpu1, len(floor))))
        settle_s = await settled(service, [v.verified.event_id for v in floor])
        lines.append(f"  the ledger held every floor verdict under a signed checkpoint "
                     f"{settle_s:.2f} s after the last arrived (the sequencer's backlog; the "
                     f"suspension is produced after that)")
        envelope = operator.suspend_tenant("acme", reason="bench_governance")
        suspend_id = envelope_id(envelope)
        t0 = time.perf_counter()
        await c.send_raw("governance", envelope, suspend_id)
        ack = await c.decision(suspend_id, 60)
        in_force_s = stamps.at[suspend_id] - t0
        assert isinstance(ack.event, GovernanceApplied), ack.reasons
        logged = asyncio.create_task(in_ledger(service, ack.verified.event_id, t0))
        refused = await verdict_round(c, items)
        last_s = max(stamps.at[v.subject_id] for v in refused) - t0
        cpu2 = service.cpu_by_role()
        appended_s, covered_s = await logged
    n_refused = sum(not v.allow and v.reasons == ("TENANT_SUSPENDED",) for v in refused)
    low, high = positions(refused)
    floor_high = positions(floor)[1]
    ok = (allowed == len(floor) and n_refused == len(refused) and low >= ack.event.position
          and 0 <= floor_high < ack.event.position)
    lines += [f"  (a) TenantSuspended produced -> GovernanceApplied (position "
              f"{ack.event.position}) at the client: {in_force_s * 1e3:.0f} ms; that "
              f"acknowledgement a leaf of the ledger at {appended_s * 1e3:.0f} ms, under a "
              f"signed checkpoint at {covered_s * 1e3:.0f} ms (polled every 5 ms)",
              f"  (b) -> every outstanding artifact refused: {n_refused}/{len(refused)} "
              f"ExecutionRefused TENANT_SUSPENDED, last at {last_s:.2f} s (the verdict round "
              f"alone {last_s - in_force_s:.2f} s, {len(refused) / (last_s - in_force_s):,.0f}"
              f" verdicts/s), positions ({low}, {high})",
              cpu_text(cpu_per(cpu1, cpu2, len(refused))),
              f"  check: {'ok' if ok else 'FAILED'} (floor all allowed below the suspension's "
              f"position, every later verdict refused at or above it)"]
    return lines, ok


# -- (2) decisions/s while a policy is published --------------------------------------------
def stream_requests(count: int, tag: str) -> list[tuple[str, bytes, str]]:
    out = []
    for i in range(count):
        resource = f"db/orders/{tag}-{i}" if i % 2 == 0 else f"reports/{tag}-{i}"
        envelope, rid = sign_event_with_id(request(
            nonce=f"gov-{tag}-{i:010d}", issued_at=now(), resource=resource), ALICE)
        out.append((rid, envelope, rid))
    return out


async def stream(client: Client, items: Sequence[tuple[str, bytes, str]], window: int,
                 at_half: Callable[[], None] | None = None) -> list[str]:
    """Produce ``items`` with at most ``window`` undecided; call ``at_half`` once half are
    produced. Returns the ids with no decision (lost)."""
    work = iter(enumerate(items))
    lost: list[str] = []

    async def one() -> None:
        for i, (rid, envelope, key) in work:
            await client.send_raw("requests", envelope, key)
            if i == len(items) // 2 and at_half is not None:
                at_half()
            try:
                await client.decision(rid, 120)
            except Unavailable:
                lost.append(rid)
    await asyncio.gather(*(one() for _ in range(window)))
    return lost


def new_policy(old: Path, into: Path) -> tuple[dict[str, str], str]:
    shutil.copytree(old, into)
    (into / "bench.cedar").write_text(EXTRA_RULE)
    return policy_payload(into)


def rate(stamps: Stamps, ids: Sequence[str], start: float, end: float) -> str:
    n = sum(start <= stamps.at[i] < end for i in ids if i in stamps.at)
    return f"{n / max(end - start, 1e-9):,.0f}/s ({n} in {end - start:.2f} s)"


def check(stamps: Stamps, items: Sequence[tuple[str, bytes, str]], position: int,
          digests: tuple[str, str]) -> tuple[dict[str, int], list[str]]:
    """Count decisions by policy and outcome; list every one that is not as expected."""
    decisions = stamps.first
    counts = {"old allow": 0, "old deny": 0, "new allow": 0, "new deny": 0}
    bad: list[str] = []
    for i, (rid, _, _) in enumerate(items):
        if len(stamps.ids.get(rid, ())) != 1:
            bad.append(f"{rid[:16]}: {len(stamps.ids.get(rid, ()))} distinct decisions")
            continue
        event = decisions[rid].event
        at = getattr(event, "governance", None)
        if at is None:
            bad.append(f"{rid[:16]}: no governance position")
            continue
        new = at >= position
        expected = i % 2 == 0 or new
        digest = (event.artifact.policy_digest if isinstance(event, AuthorizationGranted)
                  else event.policy_digest if isinstance(event, AuthorizationDenied) else None)
        counts[f"{'new' if new else 'old'} {'allow' if decisions[rid].allow else 'deny'}"] += 1
        if decisions[rid].allow != expected or digest != digests[new]:
            bad.append(f"{rid[:16]}: request {i} at position {at} allow={decisions[rid].allow}"
                       f" digest {str(digest)[:12]} {decisions[rid].reasons}")
    return counts, bad


async def floor_stream(service: Service, client: Client, items: Sequence[tuple[str, bytes, str]],
                       window: int, label: str) -> tuple[list[str], list[str]]:
    """A stream with no publish: its rate and CPU lines, and the ids it lost."""
    cpu0 = service.cpu_by_role()
    t0 = time.perf_counter()
    lost = await stream(client, items, window)
    took = time.perf_counter() - t0
    return [f"  floor, {label}: {len(items)} requests, {len(items) / took:,.0f} decisions/s, "
            f"lost {len(lost)}", cpu_text(cpu_per(cpu0, service.cpu_by_role(), len(items)))
            ], lost


async def policy_run(service: Service, count: int, floor_count: int, window: int,
                     ) -> tuple[list[str], bool]:
    data = DataDir(service.data)
    operator = Admin("govledger:operator", "*", load_signer(data.operator_key))
    old_digest = policy_payload(data.policies)[1]
    files, new_digest = new_policy(data.policies, service.root / "policies-new")
    envelope = operator.publish_policy(files, new_digest, "bench-1", reason="bench_governance")
    publish_id = envelope_id(envelope)
    runs = {"old": stream_requests(floor_count, "old"), "run": stream_requests(count, "run"),
            "new": stream_requests(floor_count, "new")}
    marks: dict[str, float] = {}
    async with Client(sdk_settings(service), service.kafka, load_keyring(data.keyring)) as c:
        stamps = Stamps(c)
        lines, lost = await floor_stream(service, c, runs["old"], window,
                                         "the old policy, no publish")
        sent: list[asyncio.Future[None]] = []

        def publish() -> None:
            marks["publish"] = time.perf_counter()
            sent.append(asyncio.ensure_future(c.send_raw("governance", envelope, publish_id)))
        cpu0 = service.cpu_by_role()
        marks["start"] = time.perf_counter()
        lost += await stream(c, runs["run"], window, publish)
        marks["end"] = time.perf_counter()
        cpu = cpu_per(cpu0, service.cpu_by_role(), count)
        await asyncio.gather(*sent)
        ack = await c.decision(publish_id, 60)
        more, lost_new = await floor_stream(service, c, runs["new"], window,
                                            "the new policy, after the publish")
    assert isinstance(ack.event, GovernanceApplied), ack.reasons
    bad: list[str] = []
    counts: dict[str, int] = {}
    for items in runs.values():
        found, wrong = check(stamps, items, ack.event.position, (old_digest, new_digest))
        bad += wrong
        counts = {k: counts.get(k, 0) + v for k, v in found.items()}
    ok = not bad and not lost and not lost_new
    ids = [rid for rid, _, _ in runs["run"]]
    lines = [f"(2) {count} requests, a PolicyPublished when half were produced:",
             *publish_lines(stamps, ids, marks, ack, cpu), *lines, *more,
             f"  decisions: {len(stamps.first) - 1} for {count + 2 * floor_count} requests "
             f"(three runs), lost {len(lost) + len(lost_new)}, deliveries {stamps.deliveries};"
             f" by policy (position < {ack.event.position} or not) and outcome: " +
             ", ".join(f"{k} {v}" for k, v in counts.items()),
             f"  check: {'ok' if ok else 'FAILED'} ({len(bad)} not as expected: every "
             f"decision once, its outcome and policy digest those of its position)",
             *(f"    {b}" for b in bad[:20])]
    return lines, ok


def publish_lines(stamps: Stamps, ids: Sequence[str], marks: dict[str, float],
                  ack: Decision, cpu: dict[str, float]) -> list[str]:
    t0, end, t_pub = marks["start"], marks["end"], marks["publish"]
    t_ack = stamps.at[ack.subject_id]
    position = ack.event.position  # type: ignore[attr-defined]
    return [f"  {len(ids)} requests in {end - t0:.2f} s, {len(ids) / (end - t0):,.0f} "
            f"decisions/s overall",
            f"  PolicyPublished produced at {t_pub - t0:.2f} s, its GovernanceApplied "
            f"(position {position}) arrived {(t_ack - t_pub) * 1e3:.0f} ms later",
            f"  before {rate(stamps, ids, t0, t_pub - 0.5)}; during "
            f"{rate(stamps, ids, t_pub - 0.5, t_ack + 0.5)}; after "
            f"{rate(stamps, ids, t_ack + 0.5, end + 1e-3)}",
            "  per second around it: " + ", ".join(
                rate(stamps, ids, s, s + 1.0).split(" ")[0]
                for s in [t_pub - 3 + k for k in range(int(t_ack - t_pub) + 7)]
                if s >= t0 and s + 1 <= end),
            cpu_text(cpu)]


# -- driver ---------------------------------------------------------------------------------
def measure(name: str, run: Callable[[Service], object]) -> tuple[list[str], bool]:
    root = Path(tempfile.mkdtemp(prefix=f"govledger-gov-bench-{name}-"))
    service: Service | None = None
    load = os.getloadavg()
    try:
        service = Service(root, None)
        roles = service.roles()
        lines, ok = asyncio.run(run(service))  # type: ignore[arg-type]
    except BaseException:
        if service is not None:
            print(service.log_tail(), file=sys.stderr)
        raise
    finally:
        code = service.stop() if service is not None else None
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
    after = os.getloadavg()
    return ([f"== {name}: govledger up {', '.join(f'{r} {p}' for r, p in roles.items())}; "
             f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
             f"{after[0]:.2f} {after[1]:.2f} {after[2]:.2f}; exit code {code}", *lines], ok)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=int, default=10_000,
                        help="outstanding artifacts in (1)")
    parser.add_argument("--requests", type=int, default=20_000,
                        help="requests in (2), the publish in the middle")
    parser.add_argument("--floor-requests", type=int, default=None,
                        help="requests of (2)'s floor (default: --requests)")
    parser.add_argument("--window", type=int, default=400,
                        help="requests undecided at a time in (2)")
    parser.add_argument("--only", choices=("suspension", "policy"), default=None)
    args = parser.parse_args(argv)
    print(f"nproc {os.cpu_count()}, python {sys.version.split()[0]}; the machine may be "
          f"shared with other sessions (compare with the floors)")
    ok = True
    if args.only in (None, "suspension"):
        lines, good = measure("suspension", lambda s: suspension(s, args.artifacts))
        print("\n".join(lines), flush=True)
        ok &= good
    if args.only in (None, "policy"):
        floor = args.requests if args.floor_requests is None else args.floor_requests
        lines, good = measure("policy", lambda s: policy_run(s, args.requests, floor,
                                                             args.window))
        print("\n".join(lines), flush=True)
        ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
