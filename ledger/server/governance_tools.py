"""What the governance commands need from the decision side and the ledger, for the CLI
(which does not import ``processors``): a policy directory as a PolicyPublished payload, and
the governance state at a leaf of a ledger, offline, with the events it was built from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ledger.core.governance import GovernanceState
from ledger.errors import ConfigError
from ledger.log.governance import GovernanceFollower, anchors
from ledger.log.ledger_dir import DB_NAME
from ledger.log.proofs import inclusion_bundle
from ledger.log.store import LedgerStore


def write_genesis(data_dir: Path, now: datetime, *, authority_key: Path | None = None,
                  ledger_key: Path | None = None, operator_key: Path | None = None) -> int:
    """processors.genesis.ensure_genesis, for `govledger init --genesis`."""
    from processors.genesis import ensure_genesis
    return ensure_genesis(data_dir, now, authority_key=authority_key, ledger_key=ledger_key,
                          operator_key=operator_key)


def policy_payload(directory: Path) -> tuple[dict[str, str], str]:
    """The files and digest of the policy set in ``directory``, loaded (and so validated
    against its schema) exactly as the processor will. Raises ConfigError."""
    from processors.policy import PolicyBundle  # the decision side, only when asked
    bundle = PolicyBundle.load(directory)
    return dict(bundle.files()), bundle.digest


@dataclass(frozen=True, slots=True)
class StateAt:
    """The governance state in force at leaf ``index`` (after it), the tree size read, and
    the (event id, acknowledgement id) pairs applied to reach it, in order."""

    index: int
    state: GovernanceState
    used: tuple[tuple[str, str], ...]

    def summary(self) -> Mapping[str, object]:
        state = self.state
        return {
            "at_index": self.index, "position": state.position,
            "last_event": state.last_event,
            "policy": None if state.policy is None else {
                "digest": state.policy.digest, "version": state.policy.version,
                "event": state.policy.event_id},
            "shadow_policy": None if state.shadow is None else state.shadow.digest,
            "quorum": state.quorum, "quorum_window_s": int(state.window.total_seconds()),
            "suspended_tenants": sorted(state.suspended_tenants),
            "suspended_principals": sorted(f"{t}/{i}" for t, i in state.suspended_principals),
            "principals": sorted((
                {"identity": p.identity, "tenant": p.tenant, "key_id": p.key_id,
                 "roles": sorted(p.roles),
                 "revoked_at": None if p.revoked_at is None else p.revoked_at.isoformat()}
                for p in state.keyring.principals()), key=lambda d: (d["tenant"], d["identity"],
                                                                     d["key_id"])),
        }


def state_at(data_dir: Path, index: int | None = None) -> StateAt:
    """The governance state of DATA/ledger.db after leaf ``index`` (default: the last),
    followed from the genesis (trust anchors: DATA/keys/operator.pub and authority.pub).
    Raises ConfigError, ProofError or Unavailable."""
    operator, authority = anchors(data_dir)
    follower = GovernanceFollower(operator, authority)
    path = data_dir / DB_NAME
    if not path.exists():
        raise ConfigError(f"no ledger at {path}")
    with LedgerStore(path) as store:
        size = store.tree_size()
        if index is not None and not 0 <= index < size:
            raise ConfigError(f"leaf index {index} is outside the ledger (size {size})")
        stop = size if index is None else index + 1
        follower.feed_ledger(store, 0, stop)
    return StateAt(stop - 1, follower.state, tuple(follower.used))


def evidence(data_dir: Path, found: StateAt) -> list[Mapping[str, object]]:
    """Inclusion bundles (ledger.log.proofs) of every event and acknowledgement ``found``
    was built from, each verifiable offline. Raises ProofError or Unavailable."""
    with LedgerStore(data_dir / DB_NAME) as store:
        return [inclusion_bundle(store, event_id=eid)
                for pair in found.used for eid in pair]
