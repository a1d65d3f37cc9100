"""The published JSON Schemas are a contract: committed, shipped, and in step with the models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from ledger.core.envelope import payload_bytes
from ledger.schema import build_schemas, export_schemas, render, shipped_schemas
from tests.factories import request, signed_request

COMMITTED = Path(__file__).resolve().parents[2] / "ledger" / "schemas"


def test_committed_schemas_match_the_models() -> None:
    generated = {name: render(schema) for name, schema in build_schemas().items()}
    committed = {p.name: p.read_text(encoding="utf-8") for p in COMMITTED.glob("*.schema.json")}
    assert sorted(committed) == sorted(generated)
    for name, text in generated.items():
        assert committed[name] == text, f"{name} drifted: govledger schema export ledger/schemas"


def test_installed_package_ships_the_schemas() -> None:
    assert shipped_schemas().keys() == build_schemas().keys()


def test_export_writes_every_schema(tmp_path: Path) -> None:
    paths = export_schemas(tmp_path / "out")
    assert {p.name for p in paths} == set(build_schemas())


def test_schemas_accept_real_payloads_and_reject_extras() -> None:
    schemas = build_schemas()
    request_schema = schemas["authorization-requested.v1.schema.json"]
    doc = json.loads(payload_bytes(request()))
    jsonschema.validate(doc, request_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "admin": True}, request_schema)
    jsonschema.validate(json.loads(signed_request()), schemas["envelope.v1.schema.json"])
