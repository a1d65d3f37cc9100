"""What the MCP gateway's end-to-end tests share: the running service with the agents'
keys (:class:`World`), a gateway subprocess behind a real MCP client, and readers of the
ledger's SQLite file. The upstream (tests/mcp_upstream.py) appends every call that reaches it
to a file: "never reached" is read there."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from ledger.core.bundles import verify_bundle
from ledger.core.canonical import canonical_bytes
from ledger.core.envelope import parse_envelope
from ledger.core.keys import Principal, principal_document
from ledger.core.signers import SignerKeys
from ledger.keyfiles import generate_keypair, load_keyring, load_signer
from ledger.sdk.httpsig import SignedRequests
from tests.factories import ENV
from tests.service_support import Running

GOVLEDGER = str(Path(sys.executable).parent / "govledger")
UPSTREAM = str(Path(__file__).resolve().parent / "mcp_upstream.py")
ARGS = {"database": "orders", "table": "t1"}
# Given a bootstrap address the settings assume Apache Kafka: the embedded broker has no
# InitProducerId, and holds each fetch for its full wait (500 ms there, 10 ms embedded).
ENV_VARS = {"GOVLEDGER_KAFKA_IDEMPOTENT": "false", "GOVLEDGER_KAFKA_FETCH_MAX_WAIT_MS": "10"}
# Dropping a table needs one person of the tenant with the db-approver role (docs/approvals.md).
APPROVAL_POLICY = """@id("gw-drop-table-approved")
@approval("role=db-approver,k=1,ttl=600")
permit (principal, action == Action::"delete", resource in Resource::"db/*")
when { principal.roles.contains("requester") };
"""


class World:
    """The running service, the agents' key files, and a place for configs and call logs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        keys = root / "keys"
        self.alice, self.alice_key, _ = generate_keypair("gw-alice", keys)
        self.sub, self.sub_key, _ = generate_keypair("gw-sub", keys)
        self.ann, _, _ = generate_keypair("gw-ann", keys)  # approves drop_table calls
        self.data = root / "data"
        self.running = Running(self.data, before_start=self._add_agents)
        self.counter = 0

    def _add_agents(self) -> None:
        ring = self.data / "keyring.json"
        doc = json.loads(ring.read_text())
        for identity, signer, roles in (
                ("agent:gw-alice", self.alice, {"requester", "reader"}),
                ("agent:gw-sub", self.sub, {"requester", "reader"}),
                ("human:gw-ann", self.ann, {"db-approver"})):
            principal = Principal(identity, "acme", signer.public_key, frozenset(roles))
            doc["principals"].append(dict(principal_document(principal)))
        ring.write_text(json.dumps(doc, indent=2))
        (self.data / "policies" / "gateway-approvals.cedar").write_text(APPROVAL_POLICY)

    def config(self, *, key: Path | None = None, extra: str = "") -> tuple[Path, Path]:
        """A gateway config (and the upstream's call log) of its own for one test."""
        self.counter += 1
        calls = self.root / f"calls-{self.counter}.jsonl"
        calls.touch()
        service = self.running.service
        path = self.root / f"gateway-{self.counter}.toml"
        path.write_text(f"""
agent_key = "{key or self.alice_key}"
data = "{self.data}"
kafka = "{service.bootstrap}"
api = "{service.api_url}"
decision_timeout_s = 20
call_timeout_s = 2
max_argument_bytes = 2048
environment = "{ENV}"
{extra}
[upstreams.db]
command = "{sys.executable}"
args = ["{UPSTREAM}"]
env = {{ MCP_UPSTREAM_CALLS = "{calls}" }}

[tools.query]
action = "read"
resource = "db/{{database}}/{{table}}"
[tools.write_row]
action = "write"
resource = "db/{{database}}/{{table}}"
[tools.crash]
action = "read"
resource = "db/{{database}}"
[tools.hang]
action = "read"
resource = "db/{{database}}"
[tools.fail]
action = "read"
resource = "db/{{database}}"
[tools.drop_table]
action = "delete"
resource = "db/{{database}}/{{table}}"
""")
        return path, calls

    def stop(self) -> None:
        self.running.stop()


@asynccontextmanager
async def gateway(config: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=GOVLEDGER,
                                   args=["mcp-gateway", "--config", str(config)], env=ENV_VARS)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def reached(calls: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in calls.read_text().splitlines()]


def digest(value: object) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(value)).hexdigest()


def ledger_events(data: Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(event id, payload) of every leaf of ``kind``, in leaf order."""
    with sqlite3.connect(f"file:{data / 'ledger.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT event_id, leaf FROM leaves WHERE kind = ? ORDER BY idx",
                          (kind,)).fetchall()
    return [(bytes(eid).hex(), json.loads(parse_envelope(bytes(leaf)).payload))
            for eid, leaf in rows]


def wait_for(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (the ledger is sequenced and
    checkpointed asynchronously), else fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def reports_with(data: Path, kind: str, arguments_digest: str) -> list[dict[str, Any]]:
    return [p for _, p in ledger_events(data, kind)
            if p.get("arguments_digest") == arguments_digest]


def hop_payload(hop: dict[str, Any]) -> dict[str, Any]:
    envelope = base64.b64decode(hop["leaf"])
    payload: dict[str, Any] = json.loads(parse_envelope(envelope).payload)
    return payload


def lineage_bundle(world: World, event_id: str) -> dict[str, Any] | None:
    """The verified lineage evidence bundle of ``event_id`` (read as the operator), or None
    while the API cannot give it yet."""
    operator = load_signer(world.data / "keys" / "operator.key")  # reads every tenant
    response = httpx.get(f"{world.running.service.api_url}/v1/proofs/lineage",
                         params={"event_id": event_id}, timeout=10,
                         auth=SignedRequests(operator))
    if response.status_code != 200:
        return None
    bundle: dict[str, Any] = response.json()
    verify_bundle(bundle, (world.data / "ledger.vkey").read_text().strip(),
                  SignerKeys(keyring=load_keyring(world.data / "keyring.json")))
    return bundle
