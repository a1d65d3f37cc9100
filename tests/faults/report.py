"""What a fault-injection run found: per trial, the summary, and the table in docs/faults.md."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from tests.faults.check import Violation


@dataclass(slots=True)
class Trial:
    n: int
    fault: str
    target: str
    how: str
    sent: int = 0
    decided: int = 0
    refused: int = 0
    delivered: bool = False
    exit_status: int | None = None
    exit_after_s: float | None = None
    restarted: bool = False
    restart_ready_s: float | None = None
    recover_s: float | None = None
    findings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    seed: int
    trials: list[Trial] = field(default_factory=list)
    restart_failures: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    settle: str = ""
    stop_status: int | None = None
    audit_ok: bool = False
    audit: str = ""

    @property
    def ok(self) -> bool:
        return (not self.violations and not self.restart_failures and self.audit_ok
                and self.stop_status == 0)


def progress_line(t: Trial, trials: int) -> str:
    parts = [f"trial {t.n}/{trials}: {t.fault}", f"sent {t.sent} decided {t.decided}"]
    if t.refused:
        parts.append(f"{t.refused} POSTs refused (4xx)")
    if not t.delivered:
        parts.append("target already gone")
    if t.restarted:
        exited = ("killed" if t.target == "up" and t.how != "stop-cont" else
                  f"up exit {t.exit_status} after {t.exit_after_s}s"
                  if t.exit_status is not None else "up did not exit: killed")
        parts.append(f"{exited}, restarted, ready in {t.restart_ready_s}s")
    parts.append(f"recovered in {t.recover_s}s")
    return " | ".join(parts + t.findings)


def summary(report: Report) -> str:
    recover = sorted(t.recover_s for t in report.trials if t.recover_s is not None)
    kinds = Counter(f"{t.how} {t.target}" for t in report.trials)
    by_invariant = Counter(v.invariant for v in report.violations)
    lines = [
        f"trials {len(report.trials)} (seed {report.seed}); faults: "
        + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())),
        f"restarts {sum(t.restarted for t in report.trials)}, failed starts "
        f"{len(report.restart_failures)}",
        f"time to recover p50 {f'{statistics.median(recover):.2f}' if recover else '-'}s, max "
        f"{recover[-1] if recover else '-'}s",
        f"findings: {sum(len(t.findings) for t in report.trials)}",
        f"settle: {report.settle}; clean stop exit {report.stop_status}; audit "
        f"{'ok' if report.audit_ok else 'FAILED'}",
        "violations: " + (", ".join(f"{k} {n}" for k, n in sorted(by_invariant.items()))
                          or "none"),
    ]
    lines += fault_table(report.trials)
    lines += [f"  {v.line()}" for v in report.violations[:40]]
    lines += [f"  restart failure: {f}" for f in report.restart_failures]
    return "\n".join(lines)


def fault_table(trials: list[Trial]) -> list[str]:
    """One row per kind of fault: how often, how ``up`` ended, how long recovery took."""
    rows = ["| fault | trials | up exited (status: n) | exit after p50 | did not exit | "
            "recover p50 / max |", "|---|---|---|---|---|---|"]
    kinds: dict[str, list[Trial]] = {}
    for t in trials:
        kinds.setdefault(f"{t.how} {t.target}", []).append(t)
    for kind, ts in sorted(kinds.items()):
        statuses = Counter(t.exit_status for t in ts if t.exit_status is not None)
        after = [t.exit_after_s for t in ts if t.exit_after_s is not None]
        rec = sorted(t.recover_s for t in ts if t.recover_s is not None)
        rows.append(
            f"| {kind} | {len(ts)} | "
            + (", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) or "-")
            + f" | {f'{statistics.median(after):.1f} s' if after else '-'} | "
            f"{sum(t.restarted and t.exit_status is None for t in ts)} | "
            + (f"{statistics.median(rec):.1f} / {rec[-1]:.1f} s |" if rec else "- |"))
    return rows
