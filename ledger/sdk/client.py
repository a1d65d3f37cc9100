"""The SDK: build and sign requests, submit them, await verified decisions, revoke, and gate
executions. Async first; ``ledger.sdk.sync_client.SyncClient`` wraps it for scripts.

Every decision the SDK returns has been verified against the authority key first (a forged
or corrupted decision is never handed to the caller: over Kafka it is dropped and logged,
over HTTP it raises). The same code runs against the embedded service and a Kafka cluster
(only the bootstrap and settings differ), or over the HTTP API (``Client(api=URL,
authority=keyring)``; ``request()`` submits and gets the decision in one round trip).
:class:`~ledger.sdk.sync_client.SyncClient` is a blocking facade for scripts;
:class:`~ledger.sdk.proof_client.ProofClient` fetches checkpoints
and proof/evidence bundles over HTTP and verifies them offline before returning them.

::

    async with Client(settings, bootstrap, authority_keyring) as client:
        request_id = await client.submit(request_event, signer)
        decision = await client.decision(request_id, timeout=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import TracebackType

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind

from ledger.clock import utc_now
from ledger.config import Settings
from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import (
    sign_event_with_id,
)
from ledger.core.events import AuthorizationRequested, AuthorizationRevoked, Event
from ledger.core.keys import KeyRing, Signer
from ledger.errors import ConfigError, Reason, Rejected, Unavailable
from ledger.kafka import tracecontext
from ledger.kafka.clients import make_consumer, make_producer, stop_quietly
from ledger.kafka.idle import PacedConsumer
from ledger.kafka.offsets import probe_highwaters, topic_partitions
from ledger.kafka.topics import Topics
from ledger.sdk.answers import Answers
from ledger.sdk.api_transport import MAX_WAIT_S, ApiTransport
from ledger.sdk.decisions import Decision, subject_of, verify_decision
from ledger.sdk.proof_client import ProofClient

__all__ = ["Client", "Decision", "ProofClient", "subject_of"]

log = logging.getLogger("govledger.client")


class Client:
    """Producer of signed events and verified consumer of decisions and verdicts.

    ``authority`` is a keyring holding the authority principal(s): decisions are verified
    against it and must be signed by a principal with the ``authority`` role. Transport:
    Kafka (``settings`` and ``bootstrap``), or the HTTP API (``api=URL``: submit, and the
    decision in the same round trip with :meth:`request`), with the same verification of
    every decision (``ledger.sdk.decisions.verify_decision``); ``api_auth`` signs the HTTP
    requests (``ledger.sdk.httpsig.SignedRequests(signer)``: reading a decision needs a
    reader of its tenant). Raises ConfigError if neither transport is given.
    """

    def __init__(self, settings: Settings | None = None, bootstrap: str = "",
                 authority: KeyRing | None = None, *, api: str | None = None,
                 clock: Callable[[], datetime] = utc_now, api_timeout: float = 10.0,
                 api_auth: httpx.Auth | None = None) -> None:
        if authority is None:
            raise ConfigError("Client needs the authority keyring to verify decisions")
        if api is None and (settings is None or not bootstrap):
            raise ConfigError("Client needs settings and a Kafka bootstrap, or api=URL")
        self.settings = settings if settings is not None else Settings()
        self.bootstrap = bootstrap
        self.topics = Topics(self.settings.topic_prefix)
        self.authority = authority
        self.clock = clock
        self._api = None if api is None else ApiTransport(api, api_timeout, api_auth)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._paced: PacedConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answers = Answers(authority, clock)  # what the reader heard, verified
        self.on_decision = self._answers.on_decision  # observers of each decision read
        # Called with each verified ApprovalRequired (a request waiting for approvers).
        self.on_pending = self._answers.on_pending

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self, *, from_beginning: bool = False) -> None:
        """Connect. Decisions published from now on are captured (``from_beginning`` replays
        the topics too). Raises Unavailable."""
        if self._api is not None:
            await self._api.start()
            return
        self._producer = make_producer(self.settings, self.bootstrap)
        self._consumer = make_consumer(self.settings, self.bootstrap, group_id=None)
        try:
            await self._producer.start()
            await self._consumer.start()
            # The broker's partitions, not settings.partitions: a client configured for
            # fewer than the topics have would miss the decisions on the others.
            parts = await topic_partitions(self.settings, self.bootstrap,
                                           [self.topics.decisions, self.topics.verdicts])
            self._consumer.assign(parts)
            if from_beginning:
                await self._consumer.seek_to_beginning(*parts)
            else:
                await self._seek_to_highwater(parts)
        except KafkaError as exc:
            await self.stop()
            raise Unavailable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        except Unavailable:
            await self.stop()
            raise
        self._paced = PacedConsumer(self._consumer, self.settings.fetch_max_wait_ms,
                                    self.settings.kafka_idle_fetch_max_wait_ms)
        self._reader = asyncio.create_task(self._read(), name="govledger-client-reader")

    async def _seek_to_highwater(self, parts: list[TopicPartition]) -> None:
        # ListOffsets is one short on the embedded broker: read the true high-water mark
        # with a probe consumer and start exactly there (DESIGN.md section 9).
        marks = await probe_highwaters(self.settings, self.bootstrap, parts)
        assert self._consumer is not None
        for tp in parts:
            self._consumer.seek(tp, marks[tp])

    async def stop(self) -> None:
        if self._api is not None:
            await self._api.stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Unavailable):
                await self._reader
            self._reader = None
        await stop_quietly(self._consumer, self._producer)
        self._consumer = self._producer = None
        self._paced = None

    # -- producing -------------------------------------------------------------------------

    async def send(self, stream: str, event: Event, signer: Signer, key: str | None = None
                   ) -> str:
        """Sign ``event`` and produce it to ``stream``; returns its event id."""
        envelope, event_id = sign_event_with_id(event, signer)
        await self.send_raw(stream, envelope, key or event.lineage_root() or event_id)
        return event_id

    async def send_raw(self, stream: str, envelope: bytes, key: str) -> None:
        """Produce envelope bytes as they are (already signed). Raises Unavailable, and
        over the HTTP API Rejected when the API refuses them."""
        if self._api is not None:
            await self._api.submit(envelope, 0)
            return
        if self._producer is None:
            raise Unavailable("client not started")
        if self._paced is not None:
            self._paced.wake()  # its answer comes soon: no idle fetch wait for it
        topic = self.topics.name(stream)
        if not tracecontext.active():  # no tracing: not a header, not a span
            await self._produce(stream, topic, envelope, key, None)
            return
        with tracecontext.TRACER.start_as_current_span(
                "govledger.submit", kind=SpanKind.PRODUCER,
                attributes={"messaging.destination.name": topic, "govledger.key": key}):
            await self._produce(stream, topic, envelope, key, tracecontext.inject_headers())

    async def _produce(self, stream: str, topic: str, envelope: bytes, key: str,
                       headers: tracecontext.Headers | None) -> None:
        assert self._producer is not None
        try:
            await self._producer.send_and_wait(topic, envelope, key=key.encode(),
                                               headers=headers)
        except KafkaError as exc:
            raise Unavailable(f"produce to {stream} failed: {exc}") from exc

    async def submit(self, request: AuthorizationRequested, signer: Signer) -> str:
        """Sign and submit a request; returns the request id (its event id)."""
        return await self.send("requests", request, signer)

    async def request(self, request: AuthorizationRequested, signer: Signer,
                      timeout: float = 10.0) -> Decision:
        """Sign, submit and wait for the verified decision (over the HTTP API in one round
        trip when it comes within the API's wait). Raises Unavailable if none comes within
        ``timeout`` (never a grant), Rejected if the API refuses the request or answers with
        a decision that does not verify or is about another request."""
        if self._api is None:
            return await self.decision(await self.submit(request, signer), timeout)
        envelope, event_id = sign_event_with_id(request, signer)
        deadline = asyncio.get_running_loop().time() + timeout
        accepted, raw = await self._api.submit(envelope, min(timeout, MAX_WAIT_S))
        if accepted != event_id:
            raise Rejected(Reason.IDENTITY_MISMATCH, "the API accepted another event id")
        if raw is None:
            return await self.decision(event_id, deadline - asyncio.get_running_loop().time())
        return self._verified(raw, event_id)

    def _verified(self, raw: bytes, subject_id: str) -> Decision:
        """A decision the HTTP API returned about ``subject_id``, verified. Raises Rejected."""
        decision = verify_decision(raw, self.authority, self.clock(), subject_id)
        assert decision is not None  # verify_decision checked it is about subject_id
        self._answers.keep(decision)
        return decision

    async def revoke(self, revocation: AuthorizationRevoked, signer: Signer) -> str:
        """Sign and submit a revocation; returns its event id. ``decision(id)`` then gives
        the authority's RevocationApplied (allow) or AuthorizationDenied."""
        return await self.send("revocations", revocation, signer)

    # -- consuming -------------------------------------------------------------------------

    @property
    def reading(self) -> bool:
        """True while the decision consumer runs (False after a broker failure)."""
        return self._reader is not None and not self._reader.done()

    async def reader_stopped(self) -> str:
        """Wait until the decision consumer stops and say why (a :meth:`stop` included).

        Raises what ended it when that was not Unavailable (a bug, not an outage).
        """
        reader = self._reader
        if reader is None:
            return "the decision consumer is not running"
        try:
            await asyncio.shield(reader)  # a cancelled waiter leaves the reader running
        except asyncio.CancelledError:
            if not reader.cancelled():
                raise
            return "the decision consumer was stopped"
        except Unavailable as exc:
            return str(exc)
        return "the decision consumer stopped"

    def pending(self, request_id: str) -> ApprovalRequired | None:
        """The authority's signed ApprovalRequired for ``request_id`` (verified) while the
        request waits for human approval and no decision was seen; None otherwise
        (docs/approvals.md). :meth:`decision` follows such a request to its end."""
        return self._answers.waiting(request_id)

    async def decision(self, subject_id: str, timeout: float = 10.0) -> Decision:
        """The verified decision or verdict for a request or execution id. A request that
        waits for human approval is followed to its grant or denial (:meth:`pending` says
        it waits meanwhile, over Kafka).

        Raises Unavailable if none arrives within ``timeout`` seconds (never a grant; the
        message says when the request is still waiting for approvers); over the HTTP API,
        Rejected if the decision it returns does not verify or is about another id.
        """
        if (found := self._answers.seen.get(subject_id)) is not None:
            return found
        if self._api is not None:
            return await self._api_decision(subject_id, timeout)
        return await self._answers.decision(subject_id, timeout)

    async def answer(self, request_id: str, timeout: float = 10.0
                     ) -> Decision | ApprovalRequired:
        """The first answer to a request: its verified decision, or the verified
        ApprovalRequired that says it waits for people (then :meth:`decision` follows it).
        Over the HTTP API, only the decision (the API holds a pending request's answer).

        Raises Unavailable if neither arrives within ``timeout`` seconds."""
        if (found := self._answers.seen.get(request_id)) is not None:
            return found
        if self._api is not None:
            return await self._api_decision(request_id, timeout)
        return await self._answers.answer(request_id, timeout)

    async def _api_decision(self, subject_id: str, timeout: float) -> Decision:
        assert self._api is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            raw = await self._api.decision(subject_id, min(left, MAX_WAIT_S))
            if raw is not None:
                return self._verified(raw, subject_id)
        raise Unavailable(f"no decision for {subject_id[:16]} within {timeout}s")

    async def decisions(self, *, allow: bool | None = None, tenant: str | None = None
                        ) -> AsyncIterator[Decision]:
        """Every verified decision and verdict from now on, optionally filtered (Kafka
        only: raises ConfigError over the HTTP API)."""
        if self._api is not None:
            raise ConfigError("decisions() reads Kafka; Client(api=...) cannot stream them")
        async with contextlib.aclosing(self._answers.stream(allow, tenant)) as stream:
            async for item in stream:  # closed with this one: the subscription ends at once
                yield item

    async def _read(self) -> None:
        assert self._paced is not None
        while True:
            try:
                batches = await self._paced.getmany(timeout_ms=500)
            except KafkaError as exc:
                raise Unavailable(f"decision consumer failed: {exc}") from exc
            for records in batches.values():
                for record in records:
                    self._answers.accept(record.value or b"")
