"""Published JSON Schemas: one per event kind (generated from the models) and the envelope.

The schemas are a contract for producers in any language. They ship as package data in
``ledger/schemas/`` and ``tests/unit/test_schema.py`` fails when the committed files drift
from the models. Regenerate with ``govledger schema export ledger/schemas``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from ledger.core.envelope import payload_type
from ledger.core.kinds import EVENT_TYPES

SCHEMA_VERSION = "v1"

ENVELOPE_SCHEMA: Mapping[str, object] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:govledger:schema:envelope:v1",
    "title": "govledger DSSE envelope (v1)",
    "description": (
        "A DSSE envelope whose bytes are RFC 8785 canonical JSON, with exactly one Ed25519 "
        "signature over PAE(payloadType, payload). See docs/envelope.md."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["payload", "payloadType", "signatures"],
    "properties": {
        "payload": {"type": "string", "contentEncoding": "base64",
                    "pattern": "^[A-Za-z0-9+/]*={0,2}$"},
        "payloadType": {"type": "string",
                        "enum": sorted(payload_type(cls.KIND) for cls in EVENT_TYPES)},
        "signatures": {
            "type": "array", "minItems": 1, "maxItems": 1,
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["keyid", "sig"],
                "properties": {
                    "keyid": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "sig": {"type": "string", "contentEncoding": "base64",
                            "pattern": "^[A-Za-z0-9+/]{86}==$"},
                },
            },
        },
    },
}


def build_schemas() -> dict[str, Mapping[str, object]]:
    """File name -> schema, for every event kind and the envelope."""
    schemas: dict[str, Mapping[str, object]] = {
        f"envelope.{SCHEMA_VERSION}.schema.json": ENVELOPE_SCHEMA}
    for cls in EVENT_TYPES:
        schema = cls.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:govledger:schema:{cls.SLUG}:{SCHEMA_VERSION}",
            "x-payloadType": payload_type(cls.KIND),
            **schema,
        }
        schemas[f"{cls.SLUG}.{SCHEMA_VERSION}.schema.json"] = schema
    return schemas


def render(schema: Mapping[str, object]) -> str:
    """The committed text form: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if needed); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(build_schemas().items()):
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def shipped_schemas() -> dict[str, str]:
    """The schema files shipped in the installed package."""
    folder = resources.files("ledger") / "schemas"
    return {entry.name: entry.read_text(encoding="utf-8") for entry in folder.iterdir()
            if entry.name.endswith(".schema.json")}
