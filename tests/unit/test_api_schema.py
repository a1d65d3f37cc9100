"""schemathesis against the app's own OpenAPI document, in process (ASGI, no network).

Every operation gets generated requests, valid (positive) and schema-violating (negative);
every response must not be a 5xx and must match the documented status codes, content types,
headers and schemas. The backend is the fake of test_api.py over a real ledger with one
decision published. Uses schemathesis' Python API (strategies per operation): its lazy pytest
fixture loader touches ``request.node._nodeid``, which pytest 9 no longer has.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.api import make_api
from tests.unit.test_api import RID, FakeBackend, build_ledger, decision_envelope

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    ledger = build_ledger(tmp_path_factory.mktemp("api-schema"))
    backend = FakeBackend(ledger.data_dir, ledger.vkey)
    backend.publish(RID, decision_envelope("grant", RID)[0])
    return schemathesis.openapi.from_asgi("/openapi.json", make_api(backend))


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE,
                                  schemathesis.GenerationMode.NEGATIVE])
def test_every_response_conforms_to_the_openapi_document(
        api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 12
    seen: set[str] = set()

    @given(data=st.data())
    @settings(max_examples=MAX_EXAMPLES * len(operations), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(data: st.DataObject) -> None:
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(operation.as_strategy(generation_mode=mode))
        case.call_and_validate()
        seen.add(operation.label)

    check()
    assert len(seen) == len(operations)
