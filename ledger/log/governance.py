"""Following governance from the ledger: the sequencer, the API and offline readers.

The processor *decides* governance events (processors/core/governing.py); everyone else
*follows* its decisions: a governance event is in force from the leaf of the authority's
GovernanceApplied naming it, at the position it names, as of the time it was applied
(``ledger.core.governance.follow``). A follower starts from the trust anchors (the
operator's and the authority's public keys, keys/*.pub) and feeds on leaves in ledger order;
:func:`governance_verifier` makes a sequencer ``Verify`` that admits each event under the
keys in force when it arrives (a key registered live is known once its GovernanceApplied is
logged, which a client waits for before using the key).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ledger.core.envelope import VerifiedEvent
from ledger.core.governance import GovernanceState, follow
from ledger.core.governance_events import GovernanceApplied
from ledger.core.keys import KeyRing, Principal
from ledger.core.kinds import GOVERNANCE_KINDS
from ledger.core.signers import verify_loggable
from ledger.errors import ConfigError, ProofError, Rejected
from ledger.keyfiles import load_keyring, load_public_key
from ledger.log.records import LeafRecord
from ledger.log.store import LedgerStore

log = logging.getLogger("govledger.governance")

OPERATOR_IDENTITY = "govledger:operator"
AUTHORITY_IDENTITY = "govledger:authority"
FOLLOWED_KINDS = (*sorted(GOVERNANCE_KINDS), GovernanceApplied.KIND)
MAX_WAITING = 4096


def anchors(data_dir: Path) -> tuple[Principal, Principal]:
    """The operator and authority principals from DATA/keys/*.pub (public keys only).
    Raises ConfigError."""
    keys = data_dir / "keys"
    operator = Principal(OPERATOR_IDENTITY, "*", load_public_key(keys / "operator.pub"),
                         frozenset({"admin"}))
    authority = Principal(AUTHORITY_IDENTITY, "*", load_public_key(keys / "authority.pub"),
                          frozenset({"authority"}))
    return operator, authority


@dataclass(slots=True)
class GovernanceFollower:
    """The governance state as of the leaves fed so far (module docstring)."""

    operator: Principal
    authority: Principal
    state: GovernanceState = field(default_factory=GovernanceState)
    events: dict[str, VerifiedEvent] = field(default_factory=dict)
    waiting: dict[int, tuple[GovernanceApplied, str]] = field(default_factory=dict)
    used: list[tuple[str, str]] = field(default_factory=list)  # (event id, its ack's id)
    fed_upto: int = 0  # the ledger leaves fed by feed_ledger: [0, fed_upto)

    def __post_init__(self) -> None:
        # The anchors verify from the start: the authority's acknowledgements of the genesis
        # events, and the operator's genesis events, before either is registered.
        for principal in (self.operator, self.authority):
            if principal.key_id not in self.state.keyring:
                self.state.keyring.add(principal)

    @property
    def keyring(self) -> KeyRing:
        return self.state.keyring

    def feed(self, verified: VerifiedEvent) -> None:
        """Take one logged event in ledger order. Raises ProofError for an acknowledgement
        that contradicts the state (a position reused or skipped forever is not detectable
        until its gap is filled; :meth:`check_complete` says whether any is left)."""
        event = verified.event
        if verified.kind in GOVERNANCE_KINDS:
            self.events[verified.event_id] = verified
        elif isinstance(event, GovernanceApplied):
            if event.position <= self.state.position:
                return  # applied before (a leaf is never logged twice; a replayed twin)
            if len(self.waiting) >= MAX_WAITING:
                raise ProofError("too many governance acknowledgements without their event")
            self.waiting[event.position] = (event, verified.event_id)
        self._apply_ready()

    def _apply_ready(self) -> None:
        while (waiting := self.waiting.get(self.state.position + 1)) is not None:
            ack, ack_id = waiting
            proposed = self.events.get(ack.request_id)
            if proposed is None:
                return  # its event is not logged yet
            del self.waiting[ack.position]
            try:
                follow(self.state, proposed, ack.position, ack.issued_at)
            except Rejected as exc:
                raise ProofError(f"governance position {ack.position}: {exc}") from exc
            self.events.pop(ack.request_id, None)
            self.used.append((ack.request_id, ack_id))

    def feed_ledger(self, store: LedgerStore, start: int = 0, stop: int | None = None) -> int:
        """Feed every governance leaf and acknowledgement of ``store`` with
        ``start <= index < stop`` (default: the tree size); returns ``stop``. Raises
        ProofError or Unavailable."""
        size = store.tree_size() if stop is None else min(stop, store.tree_size())
        for leaf in store.iter_kinds(FOLLOWED_KINDS, start, size):
            try:
                verified = verify_loggable(leaf.leaf, self.keyring)
            except Rejected as exc:
                raise ProofError(f"leaf {leaf.index} ({leaf.kind}) does not verify under the "
                                 f"keys in force: {exc}") from exc
            self.feed(verified)
        self.fed_upto = max(self.fed_upto, size)
        return size

    def catch_up(self, path: Path) -> None:
        """Feed the leaves of the ledger at ``path`` logged since the last feed (a process
        that follows a ledger another process writes). The keyring and state change in
        place, so every holder sees them. Raises ProofError or Unavailable."""
        with LedgerStore(path) as store:
            self.feed_ledger(store, self.fed_upto)


def governance_verifier(follower: GovernanceFollower) -> Callable[[bytes], LeafRecord]:
    """A sequencer ``Verify`` (ledger.log.sequencer) that judges each event under the keys
    in force (the follower's) and feeds what it admits to the follower. Raises Rejected."""
    def verify(data: bytes) -> LeafRecord:
        event = verify_loggable(data, follower.keyring)
        follower.feed(event)
        return LeafRecord(event.event_id, event.kind, data, event.event.parent_ref())
    return verify


class LedgerKeyring:
    """The keys in force per the ledger, for a process that does not sequence (the monitor):
    a zero-argument callable returning the live :class:`KeyRing`, which first feeds the
    follower the leaves logged since it last looked (at most every ``every_s``), so a key
    registered while the process runs is known once its GovernanceApplied is a leaf."""

    def __init__(self, data_dir: Path, every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = data_dir / "ledger.db"
        self.every_s, self.clock = every_s, clock
        with LedgerStore(self.path) as store:
            self.follower = follow_ledger(data_dir, store)
        self.checked = clock()

    def __call__(self) -> KeyRing:
        if self.clock() - self.checked >= self.every_s:
            self.follower.catch_up(self.path)
            self.checked = self.clock()
        return self.follower.keyring


def keyring_in_force(data_dir: Path) -> KeyRing:
    """The keys a tool of the data directory trusts (``tokens create``, the MCP gateway):
    those in force at the head of DATA/ledger.db, followed from the genesis with the trust
    anchors, so a key registered live is known. Before the genesis is written (or on a host
    without the ledger), DATA/keyring.json: the import format the genesis will read. Raises
    ConfigError, ProofError."""
    path = data_dir / "ledger.db"
    if path.is_file():
        operator, authority = anchors(data_dir)
        follower = GovernanceFollower(operator, authority)
        with LedgerStore(path) as store:
            follower.feed_ledger(store)
        if follower.state.position > 0:
            return follower.keyring
    return load_keyring(data_dir / "keyring.json")


def follow_ledger(data_dir: Path, store: LedgerStore) -> GovernanceFollower:
    """The governance state at the head of ``store``. Raises ConfigError or ProofError."""
    operator, authority = anchors(data_dir)
    follower = GovernanceFollower(operator, authority)
    follower.feed_ledger(store)
    if follower.state.position == 0:
        raise ConfigError(f"the ledger in {data_dir} holds no governance genesis: run "
                          "`govledger init` (or `govledger up`, which writes it on first start)")
    return follower
