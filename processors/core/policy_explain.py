"""Explain one request offline: the processor's verdict on it, the policies that decided it.

``govledger policy explain REQUEST`` takes one of three documents (JSON):

1. a signed ``AuthorizationRequested`` envelope (DSSE, as ``govledger events sign`` writes
   it). With a keyring, it is verified as the processor verifies its input
   (:func:`ledger.core.signers.verify_loggable`; key validity windows are not judged, they
   depend on the arrival time) and the roles are the key's; an envelope that does not verify
   is explained as the processor's denial for it (``SIGNATURE_INVALID``, ``KEY_UNKNOWN``
   ...). Without a keyring, the payload is read unverified and the roles must be given;
2. an unsigned ``AuthorizationRequested`` payload (the event's JSON, any formatting);
3. a request in the policy-cases form (``principal``, ``tenant``, ``roles``, ``actions``,
   ``resource``, ``context`` ..., :mod:`processors.core.policy_cases`).

Roles: ``roles`` given explicitly win; else the keyring's principal for the signer and tenant
(one set of roles, else ConfigError); else, for form 3, the document's own ``roles``.
Depth: a root request has depth 0; a child request's depth depends on its parent, which is
not offline, so it must be given. Then :func:`processors.core.checks.decide_by_policy`
decides, exactly as for ``policy test``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pydantic

from ledger.core.envelope import event_id, parse_envelope, parse_payload
from ledger.core.events import AuthorizationRequested
from ledger.core.keys import KeyRing
from ledger.core.signers import verify_loggable
from ledger.errors import ConfigError, Rejected
from processors.core.checks import PolicyEngine, Verdict, decide_by_policy
from processors.core.policy_cases import PolicyInput, build_input

EXPLAIN_NONCE = "policyexplain000"


@dataclass(frozen=True, slots=True)
class Explanation:
    """The verdict on one request. ``given`` is None when the envelope itself was refused
    (the verdict then carries the envelope's reason). ``signature`` is ``verified``,
    ``not checked`` (envelope read without a keyring), ``refused`` or ``unsigned``."""

    verdict: Verdict
    signature: str
    given: PolicyInput | None
    event_id: str | None = None


def _keyring_roles(keyring: KeyRing, identity: str, tenant: str) -> frozenset[str]:
    found = {p.roles for p in keyring.principals()
             if p.identity == identity and p.tenant in ("*", tenant)}
    if not found:
        raise ConfigError(f"no principal {identity!r} of tenant {tenant!r} in the keyring")
    if len(found) > 1:
        raise ConfigError(f"{identity!r} has keys with different roles: pass --roles")
    return next(iter(found))


def _input(request: AuthorizationRequested, roles: frozenset[str] | None,
           keyring: KeyRing | None, depth: int | None) -> PolicyInput:
    if roles is None:
        if keyring is None:
            raise ConfigError("the principal's roles are needed: pass --roles or --keyring")
        roles = _keyring_roles(keyring, request.signer, request.tenant)
    if depth is None:
        if request.lineage.parent is not None:
            raise ConfigError("a child request's depth comes from its parent: pass --depth")
        depth = 0
    return PolicyInput(request, roles, depth)


def _explain_envelope(policy: PolicyEngine, data: bytes, keyring: KeyRing | None,
                      roles: frozenset[str] | None, depth: int | None) -> Explanation:
    if keyring is not None and roles is not None:
        raise ConfigError("a signed request with --keyring takes its roles from the key: "
                          "drop --roles")
    if keyring is None:
        try:
            parsed = parse_envelope(data)
            event = parse_payload(parsed.payload_type, parsed.payload)
        except Rejected as exc:
            raise ConfigError(f"not a readable envelope: {exc}") from exc
        if not isinstance(event, AuthorizationRequested):
            raise ConfigError(f"explain takes an AuthorizationRequested, not {event.KIND}")
        given = _input(event, roles, None, depth)
        return Explanation(decide_by_policy(policy, event, given.roles, given.depth),
                           "not checked", given, event_id(parsed.payload))
    try:
        verified = verify_loggable(data, keyring)
    except Rejected as exc:  # the processor denies such input at the envelope
        return Explanation(Verdict.deny(exc.reason, exc.detail), "refused", None)
    if not isinstance(verified.event, AuthorizationRequested):
        raise ConfigError(f"explain takes an AuthorizationRequested, not {verified.kind}")
    given = _input(verified.event, verified.principal.roles, None, depth)
    return Explanation(decide_by_policy(policy, given.request, given.roles, given.depth),
                       "verified", given, verified.event_id)


def _explain_document(policy: PolicyEngine, doc: Mapping[str, object], data: bytes,
                      keyring: KeyRing | None, roles: frozenset[str] | None,
                      depth: int | None) -> Explanation:
    if "kind" in doc or "scope" in doc:
        try:
            request = AuthorizationRequested.model_validate_json(data)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "request"
            raise ConfigError(f"not an AuthorizationRequested: {where}: {first['msg']}"
                              ) from exc
        given = _input(request, roles, keyring, depth)
    else:
        fields = dict(doc)
        if depth is not None:
            fields["depth"] = depth
        if roles is not None or keyring is not None:
            fields.pop("roles", None)
        given = build_input(fields, EXPLAIN_NONCE)
        if roles is not None or keyring is not None:
            given = _input(given.request, roles, keyring, given.depth)
    return Explanation(decide_by_policy(policy, given.request, given.roles, given.depth),
                       "unsigned", given)


def explain(policy: PolicyEngine, data: bytes, *, keyring: KeyRing | None = None,
            roles: frozenset[str] | None = None, depth: int | None = None) -> Explanation:
    """The processor's verdict on the request document ``data`` (module docstring).

    Raises ConfigError for a document that is none of the three forms, or when the roles
    or the depth are missing or ambiguous. A refused envelope is a verdict, not an error.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"the request is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError("the request must be a JSON object")
    if "payloadType" in doc or "signatures" in doc:
        return _explain_envelope(policy, data, keyring, roles, depth)
    return _explain_document(policy, doc, data, keyring, roles, depth)
