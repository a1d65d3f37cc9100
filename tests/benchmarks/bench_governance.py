"""Governance over the whole service (issue 13): ``govledger up`` as a subprocess (fresh
data directory each: the test agents, the example policies, the rate limit raised since every
request comes from one agent), the SDK ``Client`` on its embedded broker. Not a timed test.

    .venv/bin/python tests/benchmarks/bench_governance.py [--artifacts 10000]
        [--requests 20000] [--floor-requests N] [--window 400] [--only suspension|policy]

(1) **Suspension to refusal.** ``--artifacts`` grants (agent:alice; half are children of
    one root grant). *Floor*: an ExecutionRequested (runner:1) per artifact, timed until
    every ExecutionAllowed arrived; then, once the ledger holds them, a TenantSuspended signed
    with ``keys/operator.key`` (govledger:operator) is produced and timed (a) until its
    GovernanceApplied arrives (and is a leaf, and under a checkpoint), (b) until an
    ExecutionRefused TENANT_SUSPENDED arrived for every artifact (the executions produced
    once (a) arrived). Floor verdicts must name a position below the suspension's, refusals
    one at or above it.
(2) **Decisions/s while a policy is published.** ``--requests`` requests, a resource each
    (even: ``db/orders/..``, permitted by the examples; odd: ``reports/..``, denied), at most
    ``--window`` undecided. When half are produced, a PolicyPublished of the examples plus a
    rule permitting ``reports/*`` reads. Decisions/s before, during (0.5 s before the publish
    to 0.5 s after its GovernanceApplied) and after. *Floors*: the same stream
    (``--floor-requests``) under the old policy before it, under the new one after it. Every
    request must have one decision; one naming a position below the publish's (P) must have
    the old policy's outcome and digest, one at P or above the new one's.

Printed: CPU per decision of every process (/proc: ``api`` is ``up`` itself, with the
sequencer; the broker, processor and monitor children; the load generator, this process),
the load average. Exit 1 on a lost, duplicated or misdecided decision. The machine may be
shared: compare with the floors of the same run.
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
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.core.envelope import sign_event_with_id  # noqa: E402
from ledger.core.events import AuthorizationDenied, AuthorizationGranted  # noqa: E402
from ledger.core.execution_events import ExecutionRequested  # noqa: E402
from ledger.core.governance_events import GovernanceApplied  # noqa: E402
from ledger.datadir import DataDir  # noqa: E402
from ledger.keyfiles import load_keyring, load_signer  # noqa: E402
from ledger.sdk.client import Client, Decision  # noqa: E402
from ledger.sdk.governance import Admin  # noqa: E402
from ledger.server.governance_tools import policy_payload  # noqa: E402
from processors.policy import PolicyBundle  # noqa: E402
from tests.benchmarks.bench_service import ServiceUnderTest, cpu_per, sdk_settings  # noqa: E402
from tests.benchmarks.service_watch import (  # noqa: E402
    Item,
    Stamps,
    cpu_text,
    decided,
    envelope_id,
    in_ledger,
    now,
    positions,
    rate,
    send_all,
    settled,
    stream,
)
from tests.factories import ALICE, ENV, request  # noqa: E402
from tests.service_support import RUNNER  # noqa: E402

Outcome = tuple[list[str], bool]  # the lines to print, and whether every check passed

EXTRA_RULE = """// bench_governance.py: reads under reports/ become permitted.
@id("bench-reports-read")
permit (
  principal,
  action == Action::"read",
  resource in Resource::"reports/*"
)
when { principal.roles.contains("reader") };
"""


# -- (1) suspension to refusal --------------------------------------------------------------
async def grant(client: Client, count: int) -> list[tuple[str, str]]:
    """(artifact id, lineage root) of ``count`` grants: a root, then half children of it."""
    base = now()  # one window for all: a child's may not outlast its parent's
    first = await client.request(request(nonce="gov-root-0000000001", issued_at=base), ALICE,
                                 30)
    assert first.allow and first.artifact_id is not None, first.reasons
    root_id = first.artifact_id
    root = first.event.lineage_root() or ""
    items: list[Item] = []
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


def executions(artifacts: Sequence[tuple[str, str]], tag: str) -> list[Item]:
    out = []
    for n, (artifact_id, root) in enumerate(artifacts):
        envelope, eid = sign_event_with_id(ExecutionRequested(
            signer="runner:1", tenant="acme", nonce=f"exec-{tag}-{n:010d}", issued_at=now(),
            artifact_id=artifact_id, root=root, action="read", resource="db/orders/1",
            environment=ENV), RUNNER)
        out.append((eid, envelope, root))
    return out


async def verdict_round(client: Client, items: Sequence[Item],
                        ) -> list[Decision]:
    await send_all(client, "executions", items)
    return await decided(client, [eid for eid, _, _ in items], 180)


async def floor_round(service: ServiceUnderTest, client: Client, stamps: Stamps,
                      items: Sequence[Item]) -> tuple[list[str], list[Decision]]:
    """Every artifact's verdict with no suspension, then wait until the ledger holds them."""
    cpu0 = service.cpu_by_role()
    t0 = time.perf_counter()
    floor = await verdict_round(client, items)
    took = max(stamps.at[v.subject_id] for v in floor) - t0
    cpu = cpu_per(cpu0, service.cpu_by_role(), len(floor))
    settle_s = await settled(service, [v.verified.event_id for v in floor])
    return [f"  floor, no suspension: {sum(v.allow for v in floor)}/{len(floor)} "
            f"ExecutionAllowed in {took:.2f} s ({len(floor) / took:,.0f} verdicts/s), "
            f"positions {positions(floor)}", cpu_text(cpu),
            f"  the ledger held every floor verdict under a signed checkpoint {settle_s:.2f} s "
            f"after the last arrived (the sequencer's backlog; the suspension comes after)"
            ], floor


async def suspension(service: ServiceUnderTest, count: int) -> tuple[list[str], bool]:
    data = DataDir(service.data)
    operator = Admin("govledger:operator", "*", load_signer(data.operator_key))
    async with Client(sdk_settings(service), service.kafka, load_keyring(data.keyring)) as c:
        stamps = Stamps(c)
        t0 = time.perf_counter()
        artifacts = await grant(c, count)
        lines = [f"(1) {len(artifacts)} artifacts granted in {time.perf_counter() - t0:.1f} s"
                 f" (half children of one root)"]
        floor_items, items = executions(artifacts, "floor"), executions(artifacts, "after")
        more, floor = await floor_round(service, c, stamps, floor_items)
        envelope = operator.suspend_tenant("acme", reason="bench_governance")
        suspend_id = envelope_id(envelope)
        cpu0 = service.cpu_by_role()
        t0 = time.perf_counter()
        await c.send_raw("governance", envelope, suspend_id)
        ack = await c.decision(suspend_id, 60)
        in_force_s = stamps.at[suspend_id] - t0
        assert isinstance(ack.event, GovernanceApplied), ack.reasons
        logged = asyncio.create_task(in_ledger(service, ack.verified.event_id, t0))
        refused = await verdict_round(c, items)
        last_s = max(stamps.at[v.subject_id] for v in refused) - t0
        cpu = cpu_per(cpu0, service.cpu_by_role(), len(refused))
        appended_s, covered_s = await logged
        race_lines, race_ok = await race(c, stamps, operator, artifacts)
    n_refused = sum(not v.allow and v.reasons == ("TENANT_SUSPENDED",) for v in refused)
    (low, high), position = positions(refused), ack.event.position
    ok = (all(v.allow for v in floor) and n_refused == len(refused) and low >= position
          and 0 <= positions(floor)[1] < position)
    round_s = last_s - in_force_s
    return [*lines, *more,
            f"  (a) TenantSuspended produced -> GovernanceApplied (position {position}) at the"
            f" client: {in_force_s * 1e3:.0f} ms; that acknowledgement a leaf of the ledger at "
            f"{appended_s * 1e3:.0f} ms, under a signed checkpoint at {covered_s * 1e3:.0f} ms"
            f" (polled every 5 ms)",
            f"  (b) -> every outstanding artifact refused: {n_refused}/{len(refused)} "
            f"ExecutionRefused TENANT_SUSPENDED, the last at {last_s:.2f} s (the verdict round "
            f"alone {round_s:.2f} s, {len(refused) / round_s:,.0f} verdicts/s), positions "
            f"({low}, {high})", cpu_text(cpu),
            f"  check: {'ok' if ok else 'FAILED'} (floor all allowed below the suspension's "
            f"position, every later verdict refused at or above it)", *race_lines
            ], ok and race_ok


async def race(client: Client, stamps: Stamps, operator: Admin,
               artifacts: Sequence[tuple[str, str]]) -> tuple[list[str], bool]:
    """(c) TenantResumed, then a verdict round with a TenantSuspended produced when half of
    it is: its acknowledgement under that backlog, and the cut-over by position."""
    items = executions(artifacts, "race")  # signed first: the processor is not left idle
    resume = operator.resume_tenant("acme", reason="bench_governance")
    await client.send_raw("governance", resume, envelope_id(resume))
    resumed = await client.decision(envelope_id(resume), 60)
    assert isinstance(resumed.event, GovernanceApplied), resumed.reasons
    half = len(items) // 2
    again = operator.suspend_tenant("acme", reason="bench_governance again")
    again_id = envelope_id(again)
    await send_all(client, "executions", items[:half])
    t0 = time.perf_counter()
    await client.send_raw("governance", again, again_id)
    acked_s = time.perf_counter() - t0
    await send_all(client, "executions", items[half:])  # produced after the broker's ack
    ack = await client.decision(again_id, 60)
    verdicts = await decided(client, [eid for eid, _, _ in items], 180)
    p_resume = resumed.event.position
    p_again = ack.event.position  # type: ignore[attr-defined]
    wrong = [v for v in verdicts if v.event.governance is None  # type: ignore[attr-defined]
             or v.event.governance < p_resume  # type: ignore[attr-defined]
             or v.allow != (v.event.governance < p_again)]  # type: ignore[attr-defined]
    late = sum(v.allow for v in verdicts[half:])
    allowed = sum(v.allow for v in verdicts)
    return [f"  (c) resumed (position {p_resume}), then {len(items)} "
            f"executions, a TenantSuspended produced after {half} (broker ack "
            f"{acked_s * 1e3:.0f} ms): its "
            f"GovernanceApplied (position {p_again}) arrived "
            f"{(stamps.at[again_id] - t0) * 1e3:.0f} ms after it was produced; "
            f"{allowed} allowed, {len(items) - allowed} refused; produced after the "
            f"suspension's broker ack yet allowed: {late}",
            f"  check: {'ok' if not wrong else 'FAILED'} ({len(wrong)} verdicts whose outcome "
            f"is not that of their position)"], not wrong


# -- (2) decisions/s while a policy is published --------------------------------------------
def stream_requests(count: int, tag: str) -> list[Item]:
    out = []
    for i in range(count):
        resource = f"db/orders/{tag}-{i}" if i % 2 == 0 else f"reports/{tag}-{i}"
        envelope, rid = sign_event_with_id(request(
            nonce=f"gov-{tag}-{i:010d}", issued_at=now(), resource=resource), ALICE)
        out.append((rid, envelope, rid))
    return out


def new_policy(old: Path, into: Path) -> tuple[dict[str, str], str]:
    shutil.copytree(old, into)
    (into / "bench.cedar").write_text(EXTRA_RULE)
    return policy_payload(into)


def check(stamps: Stamps, items: Sequence[Item], position: int,
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


async def floor_stream(service: ServiceUnderTest, client: Client, items: Sequence[Item],
                       window: int, label: str) -> tuple[list[str], list[str]]:
    """A stream with no publish: its rate and CPU lines, and the ids it lost."""
    cpu0 = service.cpu_by_role()
    t0 = time.perf_counter()
    lost = await stream(client, items, window)
    took = time.perf_counter() - t0
    return [f"  floor, {label}: {len(items)} requests, {len(items) / took:,.0f} decisions/s, "
            f"lost {len(lost)}", cpu_text(cpu_per(cpu0, service.cpu_by_role(), len(items)))
            ], lost


async def policy_run(service: ServiceUnderTest, count: int, floor_count: int, window: int,
                     ) -> tuple[list[str], bool]:
    data = DataDir(service.data)
    operator = Admin("govledger:operator", "*", load_signer(data.operator_key))
    old_digest = policy_payload(data.policies)[1]
    files, new_digest = new_policy(data.policies, service.root / "policies-new")
    t0 = time.perf_counter()
    assert PolicyBundle.from_files(files).digest == new_digest
    compile_ms = (time.perf_counter() - t0) * 1e3
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
             *publish_lines(stamps, ids, marks, ack, cpu),
             f"  (the new policy set compiled and validated in this process: "
             f"{compile_ms:.0f} ms)", *lines, *more,
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
def measure(name: str, run: Callable[[ServiceUnderTest], Coroutine[Any, Any, Outcome]],
            ) -> Outcome:
    root = Path(tempfile.mkdtemp(prefix=f"govledger-gov-bench-{name}-"))
    service: ServiceUnderTest | None = None
    load = os.getloadavg()
    try:
        service = ServiceUnderTest(root, None)
        roles = service.roles()
        lines, ok = asyncio.run(run(service))
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
