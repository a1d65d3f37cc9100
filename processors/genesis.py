"""The governance genesis: the first governance events of a ledger, and the processor
journal's copy of them.

On the first start of a data directory (``govledger up``, or the processor's own start),
before any other leaf, :func:`ensure_genesis` turns the import formats (keyring.json and
policies/) into signed governance events: the operator registers itself (signed by
keys/operator.key, the trust anchor with keys/operator.pub), then every keyring principal,
then publishes the policy set; the authority answers each with its GovernanceApplied,
decided by the same engine code as every later governance event, so a restart that decides
them again gets the same bytes. From then on keyring.json and policies/ are read by nothing:
change keys and policies with governance events (``govledger principal``, ``govledger policy
publish``).

:func:`import_genesis` gives a journal without governance entries (a new processor, or one
whose journal was lost) the governance history of the ledger, so the engine restores it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from ledger.core.envelope import read_stored, sign_event
from ledger.core.events import Event
from ledger.core.governance import GovernanceState
from ledger.core.governance_events import (
    GovernanceApplied,
    PolicyPublished,
    PrincipalRegistered,
)
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.core.streams import Stream
from ledger.datadir import DataDir
from ledger.errors import ConfigError, Unavailable
from ledger.keyfiles import load_keyring, load_signer
from ledger.log.governance import FOLLOWED_KINDS, OPERATOR_IDENTITY, anchors
from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.log.store import LedgerStore
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.core.governing import GOVERNANCE_KEY
from processors.core.outcomes import Outcome, Output
from processors.core.ratelimit import TokenBucketLimiter
from processors.journal import Journal
from processors.policy import PolicyBundle

log = logging.getLogger("govledger.genesis")

GENESIS_META = "governance_imported"


def has_genesis(store: LedgerStore) -> bool:
    return next(store.iter_kinds([GovernanceApplied.KIND], 0), None) is not None


def ensure_genesis(data_dir: Path, now: datetime, *, authority_key: Path | None = None,
                   ledger_key: Path | None = None, operator_key: Path | None = None) -> int:
    """Write the genesis into DATA/ledger.db unless it holds one; returns the leaves written.
    Signs with the operator key, the authority key and the ledger key (a checkpoint), each
    where the settings name it (``operator_key``, ``authority_key``, ``ledger_key``;
    default DATA/keys). Takes the ledger's writer lock (call before the sequencer starts).
    Raises ConfigError (keys, keyring, policies), Unavailable or ProofError."""
    data = DataDir(data_dir, authority_key, ledger_key, operator_key)
    with LedgerStore(data.ledger_db) as store:
        if has_genesis(store):
            return 0
    operator, authority = load_signer(data.operator_key), load_signer(data.authority_key)
    envelopes = genesis_envelopes(operator, authority, load_keyring(data.keyring),
                                  PolicyBundle.load(data.policies), now)
    ring = KeyRing(anchors(data_dir))
    sequencer = open_ledger(data_dir, keyring_verifier(ring), key_file=data.ledger_key)
    try:
        records = [sequencer.verify(e) for e in envelopes]
        sequencer.append_records(records)  # and a checkpoint (no interval: signed now)
    finally:
        sequencer.close()
    log.info("governance genesis written: %d leaves", len(envelopes))
    return len(envelopes)


def genesis_envelopes(operator: Signer, authority: Signer, keyring: KeyRing,
                      policy: PolicyBundle, now: datetime) -> list[bytes]:
    """The genesis events and the authority's answers, in ledger order (module docstring).
    Raises ConfigError if the engine refuses one of them (a keyring it cannot import)."""
    anchor = Principal(OPERATOR_IDENTITY, "*", operator.public_key, frozenset({"admin"}))
    engine = Engine(authority=authority, authority_identity=authority_identity(keyring, authority),
                    governance=GovernanceState(), compile_policy=PolicyBundle.from_files,
                    operator=anchor, limiter=TokenBucketLimiter(1.0, 1), limits=Limits())
    events: list[Event] = [_registration(anchor, now, 0)]
    events += [_registration(p, now, n) for n, p in enumerate(keyring.principals(), 1)
               if p.key_id != anchor.key_id and p.revoked_at is None]
    events.append(PolicyPublished(signer=OPERATOR_IDENTITY, tenant="*", nonce=_nonce(len(events)),
                                  issued_at=now, version="genesis",
                                  policy_digest=policy.digest, files=dict(policy.files())))
    out: list[bytes] = []
    for event in events:
        raw = sign_event(event, operator)
        outcome = engine.handle(Stream.GOVERNANCE, raw, now)
        if outcome.allow is not True:
            raise ConfigError(f"the genesis {event.KIND} was refused: {outcome.reasons} "
                              f"({_detail(outcome)})")
        out += [raw, *(o.value for o in outcome.outputs)]
    return out


def authority_identity(keyring: KeyRing, authority: Signer) -> str:
    """The identity the keyring gives the authority key. Raises ConfigError if none."""
    if authority.key_id not in keyring:
        raise ConfigError("the authority key is not in the keyring")
    principal = keyring.get(authority.key_id)
    if "authority" not in principal.roles:
        raise ConfigError(f"{principal.identity} lacks the authority role in the keyring")
    return principal.identity


def _registration(principal: Principal, now: datetime, n: int) -> PrincipalRegistered:
    return PrincipalRegistered(
        signer=OPERATOR_IDENTITY, tenant=principal.tenant, nonce=_nonce(n), issued_at=now,
        identity=principal.identity, public_key=base64.b64encode(principal.public_key).decode(),
        key_id=principal.key_id, roles=tuple(sorted(principal.roles)),
        not_before=principal.not_before, not_after=principal.not_after,
        reason="genesis: imported from keyring.json")


def _nonce(n: int) -> str:
    return f"genesis-{n:08d}"


def _detail(outcome: Outcome) -> str:
    for output in outcome.outputs:
        stored = read_stored(output.value)
        if stored is not None and "detail" in stored.fields:
            return str(stored.fields["detail"])
    return ""


def import_genesis(journal: Journal, store: LedgerStore) -> int:
    """Journal the ledger's applied governance events (input, the authority's answer, the
    time it was applied) when the journal has none yet; returns how many. Raises
    Unavailable (module docstring of :func:`governance_entries`)."""
    if journal.meta(GENESIS_META) is not None:
        return 0
    batch = list(governance_entries(store))
    journal.append(batch, published=journal.last_seq() + len(batch))
    journal.set_meta(GENESIS_META, len(batch))
    return len(batch)


def restore_from_ledger(engine: Engine, store: LedgerStore) -> int:
    """Restore ``engine``'s governance from the ledger alone (tools and tests that decide
    outside a worker). Returns how many events. Raises Unavailable."""
    entries = list(governance_entries(store))
    for stream, arrival, raw, outcome in entries:
        engine.restore(stream, raw, arrival, outcome)
    return len(entries)


def governance_entries(store: LedgerStore) -> Iterator[tuple[Stream, datetime, bytes, Outcome]]:
    """Journal entries for the ledger's applied governance events, in order: the event, the
    time it was applied, the authority's GovernanceApplied. An event applied by a quorum
    cannot be rebuilt without its approvals' order: Unavailable (restore the journal from a
    backup). Raises Unavailable."""
    events: dict[str, bytes] = {}
    for leaf in store.iter_kinds(FOLLOWED_KINDS, 0):
        if leaf.kind != GovernanceApplied.KIND:
            events[leaf.event_id] = leaf.leaf
            continue
        stored = read_stored(leaf.leaf)
        if stored is None:
            raise Unavailable(f"ledger leaf {leaf.index} does not decode")
        ack = GovernanceApplied.model_validate_json(stored.payload)
        if ack.approvals:
            raise Unavailable("the journal lacks governance events applied by a quorum; "
                              "restore processor.db from a backup")
        raw = events.get(ack.request_id)
        if raw is None:
            raise Unavailable(f"governance event {ack.request_id[:16]} is acknowledged but "
                              "not in the ledger")
        output = Output(Stream.DECISIONS, GOVERNANCE_KEY, leaf.leaf)
        yield (Stream.GOVERNANCE, ack.issued_at, raw,
               Outcome(ack.request_id, (output,), allow=True))


__all__ = ["authority_identity", "ensure_genesis", "genesis_envelopes", "governance_entries",
           "has_genesis", "import_genesis", "restore_from_ledger"]
