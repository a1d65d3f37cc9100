"""Builders for ledger tests: a data directory, a keyring file, signed envelopes, a lineage."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from ledger.core.envelope import sign_event_with_id
from ledger.core.events import Artifact, AuthorizationGranted, Lineage, Scope, Window
from ledger.core.execution_events import ExecutionRequested
from ledger.core.keys import Signer, principal_document
from ledger.log.ledger_dir import init_ledger
from ledger.log.store import LedgerStore
from tests.factories import ALICE, AUTHORITY, ENV, T0, default_ring, request, signed_request

ORIGIN = "govledger.test/log"


def make_ledger(tmp_path: Path) -> Path:
    data_dir = tmp_path / "ledger"
    init_ledger(data_dir, ORIGIN)
    return data_dir


def write_keyring(path: Path) -> Path:
    doc = {"version": 1, "principals": [dict(principal_document(p))
                                        for p in default_ring().principals()]}
    path.write_text(json.dumps(doc))
    return path


def envelopes(n: int, start: int = 0) -> list[bytes]:
    return [signed_request(nonce=f"nonce-{i:012d}") for i in range(start, start + n)]


def grant(request_id: str, root: str, parent: str | None, depth: int, nonce: str, *,
          signer: Signer = AUTHORITY, identity: str = "govledger:authority",
          ) -> tuple[bytes, str]:
    """(envelope, event id) of an AuthorizationGranted for ``request_id``, signed by
    ``signer`` under ``identity`` (by default the authority of ``default_ring``)."""
    artifact = Artifact(
        request_id=request_id, initiator="agent:alice", holder="agent:alice", tenant="acme",
        scope=Scope(actions=("read",), resource="db/orders/*"), environments=(ENV,),
        window=Window(not_before=T0, not_after=T0 + timedelta(hours=1)), single_use=False,
        policy_digest=ENV, policy_ids=("p1",), lineage=Lineage(root=root, parent=parent,
                                                                depth=depth),
        governance={})
    event = AuthorizationGranted(signer=identity, tenant="acme", nonce=nonce, issued_at=T0,
                                 request_id=request_id, artifact=artifact)
    return sign_event_with_id(event, signer)


def lineage_chain() -> list[tuple[bytes, str]]:
    """(envelope, event id): root request, its grant, a child request, its grant, and an
    execution request under the child grant. Each event's parent_ref is the previous one."""
    root_env, root_id = sign_event_with_id(request(nonce="lineage-root-0001"), ALICE)
    grant1 = grant(root_id, root_id, None, 0, "lineage-grant-0001")
    child = sign_event_with_id(request(nonce="lineage-child-0001", root=root_id,
                                       parent=grant1[1]), ALICE)
    grant2 = grant(child[1], root_id, grant1[1], 1, "lineage-grant-0002")
    execution = ExecutionRequested(signer="agent:alice", tenant="acme",
                                   nonce="lineage-exec-00001", issued_at=T0,
                                   artifact_id=grant2[1], root=root_id, action="read",
                                   resource="db/orders/1", environment=ENV)
    return [(root_env, root_id), grant1, child, grant2, sign_event_with_id(execution, ALICE)]



def leaf_order(data_dir: Path, *event_ids: str) -> list[int | None]:
    """The leaf index of each event id in DIR/ledger.db (None: not a leaf)."""
    from ledger.log.store import LedgerStore
    with LedgerStore(data_dir / "ledger.db") as store:
        return [None if (leaf := store.find(e)) is None else leaf.index for e in event_ids]


POISON = ("CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE poison (ref INTEGER "
          "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED); CREATE TRIGGER poison_leaf "
          "AFTER INSERT ON leaves WHEN NEW.kind = 'Poison' BEGIN INSERT INTO poison "
          "VALUES (1); END;")
"""A deferred foreign key that a 'Poison' leaf violates: the COMMIT of its batch fails (a
failed COMMIT with everything before it written, as a full disk at the WAL's fsync)."""


def poisoned(store: LedgerStore) -> None:
    """Make the COMMIT of any batch with a leaf of kind 'Poison' fail (:data:`POISON`)."""
    store.conn.execute("PRAGMA foreign_keys = ON")
    store.conn.executescript(POISON)
