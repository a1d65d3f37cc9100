"""Where a call's artifact comes from, for the agent's identity. Three ways, first match:

1. the agent's own artifact in the call's ``_meta`` (``govledger/artifact``: the grant
   envelope's exact text): used as it is; the gate checks it like any other;
2. a parent artifact (``govledger/parent`` in ``_meta``, or ``parent_artifact`` in the
   config): the gateway requests a *delegated* child artifact under it, signed with the
   agent's key, for exactly this action and resource; the ledger then links parent ->
   child -> execution (lineage);
3. otherwise a signed AuthorizationRequested with the agent's key for exactly this action
   and resource.

A granted artifact (2, 3) is reused for the same action, resource and parent until its
window ends; a refusal that says it is spent (revoked, expired, consumed) forgets it, so
the call after is decided afresh. A denial raises :class:`~ledger.errors.Rejected` with the
processor's reason; no answer in time raises :class:`~ledger.errors.Unavailable`.

A request the policy sends to people (the processor answers ``ApprovalRequired``,
docs/approvals.md) is waited for up to ``approval_wait_s``; still undecided then, the call
raises :class:`ApprovalPending`, and the gateway remembers the request: a retry of the same
action on the same resource (and parent) waits for *that* request again instead of asking
anew, until it is granted, denied (APPROVAL_REFUSED, APPROVAL_EXPIRED, ...) or its deadline
passes. The memory is the gateway process's: after a restart a retry asks again.
"""

from __future__ import annotations

import base64
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import verify_envelope
from ledger.core.events import (
    AuthorizationGranted,
    AuthorizationRequested,
    LineageRef,
    Scope,
    Window,
)
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.errors import Reason, Rejected, Unavailable
from ledger.sdk.client import Client
from ledger.sdk.decisions import Decision

META_ARTIFACT = "govledger/artifact"
META_PARENT = "govledger/parent"
MAX_ENVELOPE_BYTES = 64 * 1024
MAX_CACHED = 4096
#: Reasons that mean the artifact itself can no longer be used.
SPENT = frozenset({Reason.ARTIFACT_REVOKED, Reason.EXPIRED, Reason.ARTIFACT_CONSUMED,
                   Reason.ARTIFACT_INVALID})


class ApprovalPending(Exception):
    """The request waits for human approval past the gateway's wait: retry the call later
    (the same request is waited for again). ``asked``: the authority's signed answer."""

    def __init__(self, request_id: str, asked: ApprovalRequired) -> None:
        self.request_id = request_id
        self.asked = asked
        self.root = asked.artifact.lineage.root or request_id
        many = "approval" if asked.k == 1 else "approvals"
        self.detail = (f"request {request_id} waits for {asked.k} {many} by role "
                       f"{asked.role} until {asked.deadline.isoformat()}; retry the call")
        super().__init__(f"APPROVAL_PENDING: {self.detail}")


@dataclass(frozen=True, slots=True)
class Agent:
    """Who the gateway asks for: the agent's key and its keyring entry."""

    signer: Signer
    principal: Principal


def envelope_from_meta(meta: Mapping[str, object] | None, key: str) -> bytes | None:
    """The envelope text under ``key`` in ``_meta``, as bytes. Raises Rejected (MALFORMED)
    for anything but a string of at most 64 KiB: an envelope's exact bytes are what the
    ledger logged, and a re-serialized object would not be them."""
    if meta is None or key not in meta:
        return None
    value = meta[key]
    if not isinstance(value, str):
        raise Rejected(Reason.MALFORMED, f"_meta {key} must be the envelope's JSON text")
    data = value.encode("utf-8")
    if len(data) > MAX_ENVELOPE_BYTES:
        raise Rejected(Reason.OVERSIZED, f"_meta {key} is over {MAX_ENVELOPE_BYTES} bytes")
    return data


class Grants:
    """Obtains grant envelopes for one agent. ``parent``: a default parent artifact."""

    def __init__(self, client: Client, agent: Agent, keyring: KeyRing, *, environment: str,
                 ttl_s: float, timeout_s: float, parent: bytes | None = None,
                 approval_wait_s: float = 0.0) -> None:
        self.client = client
        self.agent = agent
        self.keyring = keyring
        self.environment = environment
        self.ttl = timedelta(seconds=ttl_s)
        self.timeout_s = timeout_s
        self.approval_wait_s = approval_wait_s
        self.parent = parent
        self._cache: OrderedDict[tuple[str, str, str], tuple[bytes, datetime]] = OrderedDict()
        # (action, resource, parent) -> the request waiting for approvers
        self._waiting: OrderedDict[tuple[str, str, str], tuple[str, ApprovalRequired]] = \
            OrderedDict()

    async def obtain(self, action: str, resource: str,
                     meta: Mapping[str, object] | None) -> bytes:
        """The grant envelope to run ``action`` on ``resource`` under. Raises Rejected (a
        denial: the processor's first reason), Unavailable (no answer in time),
        ApprovalPending (people have not decided within ``approval_wait_s``)."""
        own = envelope_from_meta(meta, META_ARTIFACT)
        if own is not None:
            return own
        parent = envelope_from_meta(meta, META_PARENT) or self.parent
        now = self.client.clock()
        key = (action, resource, "" if parent is None else parent.decode())
        cached = self._cache.get(key)
        if cached is not None and now < cached[1] - min(self.ttl / 10, timedelta(seconds=5)):
            return cached[0]  # with a margin: not one about to expire on its way to the gate
        waiting = self._waiting.get(key)
        if waiting is not None and now <= waiting[1].deadline:
            envelope, not_after = await self._approved(key, *waiting)
        else:
            self._waiting.pop(key, None)
            envelope, not_after = await self._request(key, parent, now)
        self._cache[key] = (envelope, not_after)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return envelope

    def forget(self, envelope: bytes) -> None:
        """Drop a cached artifact the gate was refused for (revoked, expired, consumed)."""
        for key in [k for k, (env, _) in self._cache.items() if env == envelope]:
            del self._cache[key]

    async def _request(self, key: tuple[str, str, str], parent: bytes | None,
                       now: datetime) -> tuple[bytes, datetime]:
        action, resource, _ = key
        not_after = now + self.ttl
        lineage = LineageRef()
        if parent is not None:
            granted = verify_envelope(parent, self.keyring, now)  # Rejected if it does not
            if not isinstance(granted.event, AuthorizationGranted):
                raise Rejected(Reason.PARENT_UNKNOWN, "the parent is not a grant envelope")
            art = granted.event.artifact
            not_after = min(not_after, art.window.not_after)
            lineage = LineageRef(root=art.lineage.root, parent=granted.event_id)
        who = self.agent.principal
        request = AuthorizationRequested(
            signer=who.identity, tenant=who.tenant, nonce=_nonce(), issued_at=now,
            scope=Scope(actions=(action,), resource=resource),
            environments=(self.environment,),
            window=Window(not_before=now, not_after=not_after), lineage=lineage)
        request_id = await self.client.submit(request, self.agent.signer)
        answer = await self.client.answer(request_id, self.timeout_s)
        if isinstance(answer, ApprovalRequired):
            self._waiting[key] = (request_id, answer)
            while len(self._waiting) > MAX_CACHED:
                self._waiting.popitem(last=False)
            return await self._approved(key, request_id, answer)
        return _granted(answer), not_after

    async def _approved(self, key: tuple[str, str, str], request_id: str,
                        asked: ApprovalRequired) -> tuple[bytes, datetime]:
        """Wait up to ``approval_wait_s`` for people to decide ``request_id``."""
        try:
            decision = await self.client.decision(request_id, self.approval_wait_s)
        except Unavailable as exc:
            raise ApprovalPending(request_id, asked) from exc
        self._waiting.pop(key, None)
        return _granted(decision), asked.artifact.window.not_after


def _granted(decision: Decision) -> bytes:
    """The grant envelope of ``decision``. Raises Rejected with its first reason."""
    if not decision.allow:
        reason = Reason(decision.reasons[0]) if decision.reasons else Reason.UNAVAILABLE
        detail = getattr(decision.event, "detail", "") or "denied by the processor"
        raise Rejected(reason, str(detail))
    return decision.envelope


def _nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode().rstrip("=")
