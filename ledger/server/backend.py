"""The API backend: what ``ledger.server.api`` asks of the running service.

:class:`ServiceBackend` implements :class:`ledger.server.api.ApiBackend` over the parts the
composition root (``ledger.server.service``) built: it verifies a submitted envelope and
produces it to its topic, finds decisions through the service's Kafka client, says where the
ledger is and what its vkey is, reports readiness, and times each request from its submission
to its decision (the decision-latency metric).

Fail closed: while the service is stopping, or while the broker or the decision consumer is
down, every call raises Unavailable (503) at once; a decision lookup never answers "pending"
during an outage, also when the outage starts in the middle of its wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from ledger.config import Settings
from ledger.core.governance_events import GovernanceApplied
from ledger.core.keys import KeyRing
from ledger.core.shadow import agreement
from ledger.core.signers import verify_loggable
from ledger.core.streams import INPUT_STREAM_OF
from ledger.errors import Reason, Rejected, Unavailable
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.log.ledger_dir import DB_NAME, read_vkey
from ledger.sdk.client import Client, Decision
from ledger.server.api import Submitted
from ledger.server.metrics import Metrics
from ledger.server.watch import Stopping, unless_set

T = TypeVar("T")

MAX_PENDING_TIMES = 100_000   # submissions timed at once; the oldest half is dropped past it


class Lifecycle(Protocol):
    """What the backend reads of the service that runs it (``ledger.server.service``)."""

    stop_event: asyncio.Event
    failure: str | None
    broker: EmbeddedBroker | None
    components: tuple[str, ...]

    def running(self, component: str) -> bool:
        """False once the named component's task has ended."""


async def unless_stopping(life: Lifecycle, work: Awaitable[T]) -> T:
    """``work``'s result, or Unavailable as soon as the service starts stopping (a dead
    broker makes a produce block for ``kafka_request_timeout_ms``)."""
    try:
        return await unless_set(life.stop_event, work)
    except Stopping as exc:
        raise _stopping(life) from exc


def _stopping(life: Lifecycle) -> Unavailable:
    return Unavailable(f"the service is stopping ({life.failure or 'asked to stop'})")


class ServiceBackend:
    """:class:`ledger.server.api.ApiBackend` over the service's Kafka client and keyring."""

    def __init__(self, settings: Settings, keyring: KeyRing, client: Client, life: Lifecycle,
                 metrics: Metrics, clock: Callable[[], datetime],
                 governance_position: Callable[[], int] | None = None) -> None:
        """``keyring`` is live (the sequencer's governance follower feeds it);
        ``governance_position`` is how far the ledger has applied governance events."""
        self.settings, self.keyring, self.client, self.life = settings, keyring, client, life
        self.metrics, self.clock = metrics, clock
        self.governance_position = governance_position
        self.topics = Topics(settings.topic_prefix)
        self._submitted_at: dict[str, float] = {}
        client.on_decision.append(self._observe_decision)

    async def submit(self, envelope: bytes) -> Submitted:
        """Verify and produce. One trailing newline (files and shells add one) is not part
        of the envelope; anything else must be the exact canonical bytes."""
        if envelope.endswith(b"\n"):
            envelope = envelope[:-1]
        client = self._client_up()
        verified = verify_loggable(envelope, self.keyring, self.clock())  # the ledger's rule
        stream = INPUT_STREAM_OF.get(type(verified.event))
        if stream is None:
            raise Rejected(Reason.UNSUPPORTED_VERSION, f"{verified.kind} is not accepted here")
        key = verified.event.lineage_root() or verified.event_id
        await unless_stopping(self.life, client.send_raw(stream, envelope, key))
        self._submitted_at[verified.event_id] = time.monotonic()
        if len(self._submitted_at) > MAX_PENDING_TIMES:
            for old in list(self._submitted_at)[:MAX_PENDING_TIMES // 2]:
                del self._submitted_at[old]
        return Submitted(verified.event_id, verified.kind, self.topics.name(stream))

    def _observe_decision(self, decision: Decision) -> None:
        submitted = self._submitted_at.pop(decision.subject_id, None)
        self.metrics.observe_decision(
            "allow" if decision.allow else "deny", decision.reasons,
            None if submitted is None else time.monotonic() - submitted)
        if (found := agreement(decision.event)) is not None:
            self.metrics.observe_shadow(found)

    async def decision(self, subject_id: str, wait_s: float) -> bytes | None:
        """The decision, None if none within ``wait_s``. Raises Unavailable when the broker
        or the decision consumer is down, or the service is starting or stopping, also in
        the middle of the wait (an outage must not look like "pending")."""
        client = self._client_up()
        deadline = time.monotonic() + wait_s
        try:
            found = await unless_stopping(self.life,
                                          client.decision(subject_id, max(wait_s, 0.001)))
        except Unavailable:
            self._client_up()  # the consumer or broker died during the wait: say so
            return None
        if isinstance(found.event, GovernanceApplied) and self.governance_position is not None:
            # In force everywhere once it is a leaf: the sequencer (and so this API) checks
            # the next events under it. Until then it is pending for the operator too.
            while self.governance_position() < found.event.position:
                if time.monotonic() >= deadline:
                    return None
                await unless_stopping(self.life, asyncio.sleep(0.02))
        return found.envelope

    def _client_up(self) -> Client:
        """The API's Kafka client when everything it depends on runs. Raises Unavailable."""
        if self.life.stop_event.is_set():
            raise _stopping(self.life)
        if self.life.broker is not None and not self.life.broker.running:
            raise Unavailable("the embedded broker is down")
        if not self.client.reading:
            raise Unavailable("the decision consumer is not running")
        return self.client

    def ledger_dir(self) -> Path:
        return self.settings.data_dir

    def vkey(self) -> str:
        return read_vkey(self.settings.data_dir)

    async def ready(self) -> dict[str, bool]:
        broker = self.life.broker
        state = {"broker": broker.running if broker is not None else True,
                 "ledger": (self.settings.data_dir / DB_NAME).exists()}
        for name in ("processor", "sequencer"):
            if name in self.life.components:
                state[name] = self.life.running(name)
        state["decisions"] = self.client.reading
        if self.life.stop_event.is_set():  # stopping: nothing is ready any more
            state = dict.fromkeys(state, False)
        return state
