"""Fault injection: SIGKILL / SIGSTOP each process of ``govledger up`` at random moments under
load, restart on the same data directory, then check the ledger and the journal.

    .venv/bin/python -m tests.faults.inject --trials 20 --seed 1 [--keep]

Each trial: drive load (tests/faults/load.py); at a random moment (or right after a burst's
last decision) signal one process of the tree (``up``'s process group, the processor child,
the embedded broker): SIGKILL, SIGSTOP then SIGCONT, or SIGSTOP then SIGKILL; wait for the
service to exit (a dead component must stop ``up``) or to be ready again; restart it if it
exited; resend what was accepted and not decided. After the last trial: let the sequencer
catch up, stop ``up`` cleanly, run the checker (tests/faults/check.py) and
``govledger ledger audit``. Exit status 0 only when nothing was violated, every restart
became ready and the audit passed. docs/faults.md has the figures of a long run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from ledger.log.store import LedgerStore
from tests.faults.check import check, journal_ids, journaled, missing_from_ledger
from tests.faults.load import Load, ServiceDown, wait_until
from tests.faults.report import Report, Trial, progress_line, summary
from tests.faults.service import TARGETS, Up
from tests.service_support import make_data_dir, produce

READY_BOUND_S = 90.0  # a (re)start slower than this counts as a failed restart
EXIT_BOUND_S = 20.0  # a dead component must stop ``up`` within this
SETTLE_BOUND_S = 60.0


@dataclass(frozen=True, slots=True)
class Fault:
    target: str  # "up" (its process group), "processor", "broker"
    how: str  # "kill", "stop-cont", "stop-kill"
    # "timed": delay_s into the load; "after-decisions": right after the client read every
    # decision of `bursts` bursts; "after-posts": right after 60 requests were posted and
    # the last one's decision read (the others decided or not, maybe not logged yet);
    # "ledger-stopped": see Campaign._ledger_stopped (target up, stop-kill, always).
    moment: str
    delay_s: float = 0.0
    pause_s: float = 0.0
    bursts: int = 1

    def describe(self) -> str:
        when = {"timed": f"at {self.delay_s:.1f}s",
                "after-decisions": f"right after burst {self.bursts}'s decisions",
                "after-posts": "right after the last of 60 requests was decided",
                "ledger-stopped": "after the processor journaled 20 requests the stopped "
                                  "sequencer never saw"}[self.moment]
        timed_pause = self.how != "kill" and self.moment != "ledger-stopped"
        pause = f" (stopped {self.pause_s:.1f}s)" if timed_pause else ""
        return f"{self.how} {self.target}{pause} {when}"


def random_fault(rng: random.Random, max_delay_s: float) -> Fault:
    fault = Fault(rng.choice(TARGETS), rng.choice(("kill", "kill", "stop-cont", "stop-kill")),
                  rng.choice(("timed", "timed", "timed", "after-decisions", "after-posts",
                              "ledger-stopped")),
                  round(rng.uniform(0.2, max_delay_s), 2), round(rng.uniform(0.1, 4.0), 2),
                  rng.randint(1, 3))
    if fault.moment == "ledger-stopped":
        return Fault("up", "stop-kill", fault.moment)
    return fault


class Campaign:
    def __init__(self, workdir: Path, seed: int, say: Callable[[str], None]) -> None:
        self.data = workdir / "data"
        make_data_dir(self.data)
        # The fault plan has a generator of its own: a seed gives the same faults in the
        # same order whatever the timing did to the load's choices.
        self.faults = random.Random(seed)
        self.rng = random.Random(seed + 2)
        self.load = Load(random.Random(seed + 1))
        self.report = Report(seed)
        self.say = say
        self.starts = 0
        self.up = self.start()

    def start(self) -> Up:
        """Start ``up``; one retry. Raises RuntimeError when both fail (the data directory
        is broken: nothing more to learn from trials)."""
        for _ in range(2):
            self.starts += 1
            up = Up(self.data, f"{self.starts:03d}", READY_BOUND_S)
            if up.ready_s is not None:
                return up
            self.report.restart_failures.append(
                f"start {self.starts}: not ready in {READY_BOUND_S:.0f}s, exit "
                f"{up.proc.poll()}; log tail:\n{up.log_tail()}")
            up.kill_all()
        raise RuntimeError("govledger up does not start on this data directory:\n"
                           + self.report.restart_failures[-1])

    def trial(self, n: int, fault: Fault) -> Trial:
        result = Trial(n, fault.describe(), fault.target, fault.how)
        self.load.trial = n
        self.load.connect(self.up.api)
        before = len(self.load.sent)
        fired_at = self._drive(fault, result)
        result.sent = len(self.load.sent) - before
        result.decided = sum(1 for s in self.load.sent[before:] if s.decisions)
        result.refused = sum(1 for s in self.load.sent[before:] if s.refused)
        self._recover(fault, result, fired_at)
        return result

    def _drive(self, fault: Fault, result: Trial) -> list[float]:
        """Load until the fault was delivered (and one burst after it). Returns [the time the
        decisive signal was sent] (empty if the target was gone)."""
        fired_at: list[float] = []
        done = threading.Event()

        def fire() -> None:
            try:
                result.delivered = self._deliver(fault, fired_at)
            finally:
                done.set()
        try:
            if fault.moment == "ledger-stopped":
                self.load.burst(10)
                fired_at.append(self._ledger_stopped(result))
                result.delivered = True
                done.set()
            elif fault.moment == "after-posts":
                self.load.burst(60, only_requests=True, last_only=True)
                fire()
            elif fault.moment == "after-decisions":
                # The case of issue 11 item 1: every decision seen, the sequencer maybe not
                # caught up yet; kill at once.
                for b in range(fault.bursts):
                    self.load.burst(40 if b == fault.bursts - 1 else 10,
                                    only_requests=b == fault.bursts - 1)
                fire()
            else:
                timer = threading.Timer(fault.delay_s, fire)
                timer.start()
                while not done.is_set():
                    self.load.burst(self.rng.randint(5, 20))
            self.load.burst(5)
        except ServiceDown as exc:
            if not done.is_set():  # down before the fault: a finding of its own
                result.findings.append(f"load stopped before the fault: {exc}")
                if fault.moment != "timed":
                    fire()
        done.wait()
        return fired_at

    def _ledger_stopped(self, result: Trial) -> float:
        """Issue 11 item 1, made deterministic. SIGSTOP ``up`` alone (API and sequencer: the
        processor child and the broker run on), produce 20 requests straight to the broker
        as the SDK does, wait until the processor journaled every one, then SIGKILL the
        group: the journal holds decisions about requests the ledger never saw, and the
        memory-only broker that had them dies too. Returns the time of the SIGKILL."""
        items = self.load.unsent_requests(20)
        ids = [s.event_id for s in items]
        self.up.send("up", signal.SIGSTOP, group=False)
        asyncio.run(produce(self.up.kafka, "gov.requests",
                            [(s.event_id.encode(), s.envelope) for s in items]))
        if not wait_until(lambda: journaled(self.data / "processor.db", ids) == len(ids), 30):
            result.findings.append("the processor did not journal the 20 requests in 30 s")
        self.up.send("up", signal.SIGKILL)
        return time.monotonic()

    def _deliver(self, fault: Fault, fired_at: list[float]) -> bool:
        first = signal.SIGKILL if fault.how == "kill" else signal.SIGSTOP
        if not self.up.send(fault.target, first):
            return False
        if fault.how != "kill":
            time.sleep(fault.pause_s)  # the injected pause itself, not a wait for a result
            self.up.send(fault.target, signal.SIGCONT if fault.how == "stop-cont"
                         else signal.SIGKILL)
        fired_at.append(time.monotonic())
        return True

    def _recover(self, fault: Fault, result: Trial, fired_at: list[float]) -> None:
        at = fired_at[0] if fired_at else time.monotonic()
        if fault.how == "stop-cont" and wait_until(
                lambda: self.up.proc.poll() is not None or _ready(self.up.api), EXIT_BOUND_S
        ) and self.up.proc.poll() is None:  # carried on after SIGCONT: no restart
            result.recover_s = round(time.monotonic() - at, 2)
            self._resend(result)
            return
        status = self.up.exited(0 if fault.how == "stop-cont" else EXIT_BOUND_S)
        result.exit_status = status
        if status is None:
            ready = _ready(self.up.api)
            result.findings.append(
                f"up still running {EXIT_BOUND_S:.0f}s after the {fault.how} of "
                f"{fault.target} (readyz {'200' if ready else 'not 200'})")
        else:
            result.exit_after_s = round(time.monotonic() - at, 2)
        leftovers = self.up.kill_all()
        result.findings += [f"{what} outlived up; killed by hand" for what in leftovers]
        result.restarted = True
        self.up = self.start()
        result.restart_ready_s = round(self.up.ready_s or 0.0, 2)
        result.recover_s = round(time.monotonic() - at, 2)
        self._resend(result)

    def _resend(self, result: Trial) -> None:
        self.load.connect(self.up.api)
        try:
            self.load.resubmit_pending()
        except ServiceDown as exc:
            result.findings.append(f"resending after recovery failed: {exc}")

    def settle(self) -> str:
        """Wait until every journaled input and output is a leaf under a checkpoint, or the
        ledger stopped growing (size unchanged for 3 s, checkpoint covering it)."""
        journal, ledger = self.data / "processor.db", self.data / "ledger.db"
        last: list[tuple[int, float]] = []

        def settled() -> bool:
            with LedgerStore(ledger) as store:
                size, cp = store.tree_size(), store.latest_checkpoint()
                covered = cp is not None and cp[0] == size
                if covered and not missing_from_ledger(store, journal_ids(journal)):
                    return True
            if not last or last[0][0] != size:
                last[:] = [(size, time.monotonic())]
            return covered and time.monotonic() - last[0][1] >= 3.0
        started = time.monotonic()
        if not wait_until(settled, SETTLE_BOUND_S, 0.25):
            return f"ledger still growing after {SETTLE_BOUND_S:.0f}s"
        return f"settled in {time.monotonic() - started:.1f}s"

    def finish(self) -> None:
        self.load.close()
        self.report.settle = self.settle()
        self.report.stop_status = self.up.terminate()
        if self.report.stop_status is None:
            self.up.kill_all()
        self.report.violations = check(self.data, self.load.sent)
        audit = subprocess.run([str(Path(sys.executable).parent / "govledger"), "ledger",
                                "audit", "--data", str(self.data), "--json"],
                               capture_output=True, text=True, timeout=300, check=False)
        self.report.audit = (audit.stdout + audit.stderr)[-2000:]
        try:
            self.report.audit_ok = audit.returncode == 0 and json.loads(audit.stdout)["ok"]
        except (ValueError, KeyError):
            self.report.audit_ok = False


def _ready(api: str) -> bool:
    try:
        return httpx.get(f"{api}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_campaign(workdir: Path, trials: int, seed: int, max_delay_s: float = 6.0,
                 plan: list[Fault] | None = None,
                 say: Callable[[str], None] | None = None) -> Report:
    """Run ``trials`` trials (``plan``'s faults, else random ones from ``seed``), then check.
    Raises RuntimeError if ``up`` cannot be started at all."""
    campaign = Campaign(workdir, seed, say or (lambda line: print(line, flush=True)))
    try:
        for n in range(1, trials + 1):
            fault = plan[n - 1] if plan else random_fault(campaign.faults, max_delay_s)
            result = campaign.trial(n, fault)
            campaign.report.trials.append(result)
            campaign.say(progress_line(result, trials))
    finally:
        campaign.finish()
    return campaign.report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.inject",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=6.0,
                        help="latest moment of a timed fault, seconds into the trial's load")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the data directory and logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (it is always kept on a failure)")
    parser.add_argument("--report", type=Path, default=None, help="write the report as JSON")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="govledger-faults-"))
    report = run_campaign(workdir, args.trials, args.seed, args.max_delay)
    print(summary(report))
    if args.report is not None:
        args.report.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    if report.ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work directory kept: {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
