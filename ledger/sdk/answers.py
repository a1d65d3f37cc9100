"""What a Kafka client has heard from the authority, verified before it is kept: decisions
and verdicts by subject, requests waiting for approvers, and who waits for either
(:class:`~ledger.sdk.client.Client` feeds it every record of the decision topics).

A record that does not verify against the authority keyring is dropped and logged, never
kept or handed out. Both memories are bounded: past 100,000 entries the oldest half is
forgotten (what was forgotten is asked again, or read from the ledger).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Any, TypeVar

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import VerifiedEvent, parse_envelope, payload_type, verify_envelope
from ledger.core.keys import KeyRing
from ledger.errors import Rejected, Unavailable
from ledger.sdk.decisions import Decision, verify_decision

_F = TypeVar("_F", bound=asyncio.Future[Any])
_V = TypeVar("_V")
log = logging.getLogger("govledger.client")


class Answers:
    """The verified answers a client has read, and the waiters for them."""

    def __init__(self, authority: KeyRing, clock: Callable[[], datetime]) -> None:
        self.authority, self.clock = authority, clock
        self.seen: dict[str, Decision] = {}
        self.pending: dict[str, ApprovalRequired] = {}  # request id -> waiting for people
        self._waiters: dict[str, list[asyncio.Future[Decision]]] = {}
        self._askers: dict[str, list[asyncio.Future[Decision | ApprovalRequired]]] = {}
        self._subscribers: list[asyncio.Queue[Decision]] = []
        self.on_decision: list[Callable[[Decision], None]] = []
        # Called with each verified ApprovalRequired (a request waiting for approvers).
        self.on_pending: list[Callable[[VerifiedEvent], None]] = []

    def waiting(self, request_id: str) -> ApprovalRequired | None:
        """The ApprovalRequired of a request still waiting for people (no decision seen)."""
        return None if request_id in self.seen else self.pending.get(request_id)

    def keep(self, decision: Decision) -> None:
        """Remember a decision verified elsewhere (the HTTP API's answer)."""
        _keep(self.seen, decision.subject_id, decision)

    async def decision(self, subject_id: str, timeout: float) -> Decision:
        """The decision about ``subject_id`` once read. Raises Unavailable after
        ``timeout`` seconds (saying so when the request waits for approvers)."""
        if (found := self.seen.get(subject_id)) is not None:
            return found
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(subject_id, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            asked = self.waiting(subject_id)
            why = ("" if asked is None else f": waiting for {asked.k} approvals by "
                   f"{asked.role} until {asked.deadline.isoformat()}")
            raise Unavailable(f"no decision for {subject_id[:16]} within {timeout}s{why}") \
                from exc
        finally:
            _forget(self._waiters, subject_id, future)

    async def answer(self, request_id: str, timeout: float) -> Decision | ApprovalRequired:
        """The decision, or the ApprovalRequired, whichever is read first. Raises
        Unavailable after ``timeout`` seconds."""
        if (found := self.seen.get(request_id)) is not None:
            return found
        if (asked := self.waiting(request_id)) is not None:
            return asked
        future: asyncio.Future[Decision | ApprovalRequired] = \
            asyncio.get_running_loop().create_future()
        self._askers.setdefault(request_id, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise Unavailable(f"no answer to {request_id[:16]} within {timeout}s") from exc
        finally:
            _forget(self._askers, request_id, future)

    async def stream(self, allow: bool | None, tenant: str | None
                     ) -> AsyncGenerator[Decision, None]:
        """Every decision read from now on, filtered by outcome and tenant when given."""
        queue: asyncio.Queue[Decision] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                item = await queue.get()
                if allow is not None and item.allow != allow:
                    continue
                if tenant is not None and item.event.tenant != tenant:
                    continue
                yield item
        finally:
            self._subscribers.remove(queue)

    def accept(self, raw: bytes) -> None:
        """One record of the decision topics: kept and handed to its waiters if it verifies
        as a decision or an ApprovalRequired; dropped and logged if it does not verify."""
        try:
            decision = verify_decision(raw, self.authority, self.clock())
        except Rejected as exc:
            log.warning("dropped a decision that does not verify: %s", exc)
            return
        if decision is None:
            self._accept_pending(raw)  # e.g. an ApprovalRequired, or PolicyPublished
            return
        subject = decision.subject_id
        _keep(self.seen, subject, decision)
        for future in self._waiters.pop(subject, []):
            if not future.done():
                future.set_result(decision)
        self._answered(subject, decision)
        for queue in self._subscribers:
            queue.put_nowait(decision)
        for observe in self.on_decision:
            observe(decision)

    def _accept_pending(self, raw: bytes) -> None:
        """An authority event that answers no subject: kept if it is an ApprovalRequired
        (a request waiting for approvers), verified again, as :meth:`waiting` returns it."""
        try:
            if parse_envelope(raw).payload_type != payload_type(ApprovalRequired.KIND):
                return
            verified = verify_envelope(raw, self.authority, self.clock())
        except Rejected as exc:
            log.warning("dropped a pending answer that does not verify: %s", exc)
            return
        event = verified.event
        if "authority" not in verified.principal.roles or not isinstance(event,
                                                                         ApprovalRequired):
            return
        _keep(self.pending, event.request_id, event)
        self._answered(event.request_id, event)
        for observe_pending in self.on_pending:
            observe_pending(verified)

    def _answered(self, request_id: str, answer: Decision | ApprovalRequired) -> None:
        for asker in self._askers.pop(request_id, []):
            if not asker.done():
                asker.set_result(answer)


def _forget(waiting: dict[str, list[_F]], subject: str, future: _F) -> None:
    """Drop one waiter of ``subject`` (answered, timed out or cancelled)."""
    futures = waiting.get(subject, [])
    if future in futures:
        futures.remove(future)
    if not futures:
        waiting.pop(subject, None)


def _keep(cache: dict[str, _V], key: str, value: _V) -> None:
    """Remember ``value``; past 100,000 entries the oldest half is forgotten."""
    cache[key] = value
    if len(cache) > 100_000:
        for old in list(cache)[:50_000]:
            del cache[old]
