"""The ledger database's tables and triggers (schema version :data:`SCHEMA_VERSION`), as
docs/ledger.md ("Schema") draws them; the lookup index's tables are
:data:`ledger.log.index.SCHEMA`, the hash pages' triggers :data:`ledger.log.pages.PAGE_TRIGGERS`.
Triggers refuse ``UPDATE`` and ``DELETE`` on ``leaves`` and ``checkpoints``: defence in depth,
the start-up check and the audit are what detect an attacker who drops them."""

from __future__ import annotations

from typing import Final

import sqlite_utils

from ledger.log.index import SCHEMA as INDEX_SCHEMA
from ledger.log.pages import PAGE_TRIGGERS

SCHEMA_VERSION: Final = "2"

TRIGGERS: Final = (
    *(f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
      f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
      for table in ("leaves", "checkpoints") for op in ("UPDATE", "DELETE")),
    *PAGE_TRIGGERS,
)


def create_schema(db: sqlite_utils.Database) -> None:
    """Create what is missing of the schema and record its version, in the caller's
    transaction. Raises sqlite3.Error."""
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("leaves").create({"idx": int, "event_id": bytes, "kind": str,
                               "parent_ref": bytes, "leaf": bytes}, pk="idx",
                              not_null={"event_id", "kind", "leaf"}, if_not_exists=True)
    db.table("hash_pages").create({"page": int, "hashes": bytes}, pk="page",
                                  not_null={"hashes"}, if_not_exists=True)
    db.table("checkpoints").create({"size": int, "note": str}, pk="size",
                                   not_null={"note"}, if_not_exists=True)
    db.table("offsets").create({"topic": str, "partition": int, "next_offset": int},
                               pk=("topic", "partition"), if_not_exists=True)
    for statement in (*INDEX_SCHEMA, *TRIGGERS):
        db.conn.execute(statement)
    db.conn.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value", (SCHEMA_VERSION,))
