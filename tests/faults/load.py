"""The load of a fault-injection run: signed events over the HTTP API, and what the client saw.

One HTTP connection (httpx), bursts of events: each burst POSTs a few events, then reads
their decisions. The mix: root grants, denials by policy (``prod/secrets/*``), delegations
under granted artifacts, revocations, executions (the gate's ``ExecutionRequested``),
replays of the same bytes, and a used nonce with a new body. Every event is kept in a
:class:`Sent` with the decision bytes the client saw and, where a grant (or an allowed
execution) would be wrongful, why: the checker holds the ledger and the journal to that.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from ledger.core.envelope import sign_event_with_id
from ledger.core.events import (
    AuthorizationRequested,
    AuthorizationRevoked,
    Event,
    LineageRef,
    Scope,
    Window,
)
from ledger.core.execution_events import ExecutionRequested
from ledger.sdk.httpsig import SignedRequests
from tests.factories import ALICE, ENV
from tests.service_support import BOB, RUNNER

SIGNERS = {"agent:alice": ALICE, "agent:bob": BOB, "runner:1": RUNNER}
ALLOWING = frozenset({"AuthorizationGranted", "ExecutionAllowed", "RevocationApplied"})
# Wrongful-grant classes: a grant (or an allowed execution) of one of these is a violation.
POLICY, NONCE_REUSE, REVOKED_PARENT, REVOKED_ARTIFACT = (
    "policy", "nonce-reuse", "revoked-parent", "revoked-artifact")


def payload_of(envelope: bytes) -> dict[str, object]:
    """The decoded payload of envelope bytes (the checker's and the client's view)."""
    doc = json.loads(envelope)
    payload: dict[str, object] = json.loads(base64.b64decode(doc["payload"]))
    return payload


@dataclass(slots=True)
class Sent:
    """One event the load sent, and every decision envelope the client read for it."""

    event_id: str
    envelope: bytes
    op: str
    trial: int
    forbidden: str = ""
    accepted: bool = False
    refused: str = ""  # the API's 4xx answer: none is expected, every event is valid
    decisions: list[bytes] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return any(str(payload_of(d)["kind"]) in ALLOWING for d in self.decisions)


@dataclass(slots=True)
class Artifact:
    """A grant the client saw: what a delegation, an execution or a revocation needs."""

    artifact_id: str
    root: str
    resource: str
    holder: str
    not_after: datetime
    depth: int


class ServiceDown(Exception):
    """The API did not answer (refused, reset or timed out): the fault hit."""


@dataclass(slots=True)
class Load:
    """Drives bursts against one API address; keeps its record across restarts."""

    rng: random.Random
    sent: list[Sent] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    trial: int = 0
    _nonce: int = 0
    _http: httpx.Client | None = None

    def connect(self, api: str) -> None:
        self.close()
        self._http = httpx.Client(auth=SignedRequests(ALICE), base_url=api, timeout=12,
                                  limits=httpx.Limits(max_connections=1))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- one burst ---------------------------------------------------------------------------

    def burst(self, size: int, only_requests: bool = False, last_only: bool = False) -> int:
        """POST ``size`` events, then read their decisions (``last_only``: only the last
        one's, the rest stays pending). Returns how many were decided. Raises ServiceDown
        when the API stops answering."""
        batch = [self._request() if only_requests else self._pick()
                 for _ in range(size)]
        posted = [s for s in batch if s is not None and self._post(s)]
        decided = 0
        for item in posted[-1:] if last_only else posted:
            decision = self._decision(item.event_id)
            if decision is not None:
                item.decisions.append(decision)
                self._learn(item, decision)
                decided += 1
        return decided

    def resubmit_pending(self) -> None:
        """After a restart: send again what was accepted but never decided (same bytes), as
        a client that retries does. Raises ServiceDown."""
        for item in [s for s in self.sent if s.accepted and not s.decisions]:
            if self._post(item, record=False) and (d := self._decision(item.event_id)):
                item.decisions.append(d)
                self._learn(item, d)

    def unsent_requests(self, count: int) -> list[Sent]:
        """``count`` root requests, recorded as sent but not through the API (the caller
        produces them): never resent, as from a client that went away."""
        items = [self._request() for _ in range(count)]
        self.sent += items
        return items

    def _post(self, item: Sent, record: bool = True) -> bool:
        assert self._http is not None
        if record:
            self.sent.append(item)
        try:
            response = self._http.post("/v1/events", content=item.envelope,
                                       headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise ServiceDown(f"POST: {type(exc).__name__}") from exc
        if response.status_code == 202:
            item.accepted = True
            return True
        if response.status_code >= 500:
            raise ServiceDown(f"POST answered {response.status_code}")
        item.refused = f"{response.status_code} {response.text[:120]}"  # counted per trial
        return False

    def _decision(self, subject: str) -> bytes | None:
        assert self._http is not None
        try:
            response = self._http.get(f"/v1/decisions/{subject}", params={"wait": 8})
        except httpx.HTTPError as exc:
            raise ServiceDown(f"GET decision: {type(exc).__name__}") from exc
        if response.status_code == 200:
            return str(response.json()["envelope"]).encode()
        if response.status_code >= 500:
            raise ServiceDown(f"GET decision answered {response.status_code}")
        return None

    def _learn(self, item: Sent, decision: bytes) -> None:
        body = payload_of(decision)
        if body["kind"] == "RevocationApplied":
            revoked = body["revoked"]
            assert isinstance(revoked, list)
            self.revoked.update(str(x) for x in revoked)
        if body["kind"] != "AuthorizationGranted":
            return
        art = body["artifact"]
        assert isinstance(art, dict)
        self.artifacts.append(Artifact(
            _id_of(decision), str(art["lineage"]["root"]), str(art["scope"]["resource"]),
            str(art["holder"]), datetime.fromisoformat(str(art["window"]["not_after"])),
            int(art["lineage"]["depth"])))

    # -- the mix -----------------------------------------------------------------------------

    def _pick(self) -> Sent | None:
        roll = self.rng.random()
        live = [a for a in self.artifacts if a.artifact_id not in self.revoked]
        if roll < 0.30 or not self.artifacts:
            return self._request()
        if roll < 0.40:
            return self._request(forbidden=True)
        if roll < 0.55:
            return self._child(self.rng.choice(self.artifacts))
        if roll < 0.62 and live:
            return self._revoke(self.rng.choice(live))
        if roll < 0.80:
            return self._execute(self.rng.choice(self.artifacts))
        if roll < 0.90:
            return self._replay()
        return self._reuse_nonce()

    def _next_nonce(self) -> str:
        self._nonce += 1
        return f"fault-{self.trial:03d}-{self._nonce:07d}-{self.rng.getrandbits(32):08x}"

    def _sign(self, event: Event, signer: str, op: str, forbidden: str = "") -> Sent:
        envelope, event_id = sign_event_with_id(event, SIGNERS[signer])
        return Sent(event_id, envelope, op, self.trial, forbidden)

    def _request(self, forbidden: bool = False, nonce: str | None = None,
                 parent: Artifact | None = None) -> Sent:
        now = datetime.now(UTC).replace(microsecond=0)
        signer = parent.holder if parent is not None else "agent:alice"
        ttl = timedelta(minutes=50)
        resource = f"db/orders/t{self.trial}/{self.rng.randrange(10**6)}/*"
        if parent is not None:
            ttl = min(timedelta(minutes=20), parent.not_after - now - timedelta(seconds=30))
            resource = parent.resource[:-1] + f"{self.rng.randrange(1000)}/*"
        if forbidden:
            resource = "prod/secrets/*"
        event = AuthorizationRequested(
            signer=signer, tenant="acme", nonce=nonce or self._next_nonce(), issued_at=now,
            holder=self.rng.choice(("agent:alice", "agent:bob")) if parent else None,
            scope=Scope(actions=("read",), resource=resource), environments=(ENV,),
            window=Window(not_before=now, not_after=now + ttl),
            lineage=LineageRef(root=parent.root if parent else None,
                               parent=parent.artifact_id if parent else None))
        op = "child" if parent else ("forbidden" if forbidden else "request")
        why = POLICY if forbidden else ""
        if parent is not None and parent.artifact_id in self.revoked:
            why = REVOKED_PARENT
        return self._sign(event, signer, op, why)

    def _child(self, parent: Artifact) -> Sent | None:
        if parent.depth >= 2 or parent.not_after - datetime.now(UTC) < timedelta(minutes=2):
            return self._request()
        return self._request(parent=parent)

    def _revoke(self, art: Artifact) -> Sent:
        event = AuthorizationRevoked(
            signer="agent:alice", tenant="acme", nonce=self._next_nonce(),
            issued_at=datetime.now(UTC).replace(microsecond=0), artifact_id=art.artifact_id,
            root=art.root, reason="fault-injection revocation")
        return self._sign(event, "agent:alice", "revoke")

    def _execute(self, art: Artifact) -> Sent:
        event = ExecutionRequested(
            signer="runner:1", tenant="acme", nonce=self._next_nonce(),
            issued_at=datetime.now(UTC).replace(microsecond=0), artifact_id=art.artifact_id,
            root=art.root, action="read", resource=art.resource[:-1] + "item",
            environment=ENV)
        return self._sign(event, "runner:1", "execute",
                          REVOKED_ARTIFACT if art.artifact_id in self.revoked else "")

    def _replay(self) -> Sent | None:
        """The same bytes again: must get the same decision bytes back (same event id)."""
        done = [s for s in self.sent if s.decisions]
        if not done:
            return None
        original = self.rng.choice(done)
        return Sent(original.event_id, original.envelope, "replay", self.trial,
                    original.forbidden)

    def _reuse_nonce(self) -> Sent | None:
        """A decided request's nonce with a new body: REPLAY, never a grant. Only recent
        originals: a nonce is remembered ~6 minutes, after which taking it afresh is right."""
        cutoff = datetime.now(UTC) - timedelta(minutes=3)
        done = [s for s in self.sent if s.decisions and s.op == "request"
                and datetime.fromisoformat(str(payload_of(s.envelope)["issued_at"])) > cutoff]
        if not done:
            return None
        nonce = str(payload_of(self.rng.choice(done).envelope)["nonce"])
        reused = self._request(nonce=nonce)
        reused.op, reused.forbidden = "nonce-reuse", NONCE_REUSE
        return reused


def _id_of(envelope: bytes) -> str:
    return hashlib.sha256(base64.b64decode(json.loads(envelope)["payload"])).hexdigest()


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    """Poll ``condition()`` until true or ``timeout_s`` passes. Returns the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


__all__ = ["Load", "Sent", "ServiceDown", "payload_of", "wait_until"]
