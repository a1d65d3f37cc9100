"""The API served by uvicorn on a loopback port: real HTTP, real SQLite ledger, and every curl
example of docs/api.md run as written."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.core.bundles import verify_bundle
from ledger.server.api import make_api
from tests.factories import signed_request
from tests.http_support import served
from tests.unit.test_api import (
    AUDIT_TOKEN,
    RID,
    TOKEN,
    FakeBackend,
    Ledger,
    api_auth,
    build_ledger,
    decision_envelope,
)

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return build_ledger(tmp_path_factory.mktemp("api-http"))


@pytest.fixture(scope="module")
def server(ledger: Ledger) -> Iterator[str]:
    """uvicorn in a thread on a free loopback port; yields the base URL."""
    backend = FakeBackend(ledger.data_dir, ledger.vkey)
    backend.wait_cap = 0.5
    backend.publish(RID, decision_envelope("grant", RID)[0])
    with served(make_api(backend, auth=api_auth())) as url:
        yield url


def doc_curl_lines() -> list[tuple[str, int]]:
    """(command, expected status) of every curl line in the sh blocks of docs/api.md."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.DOTALL)
    out = []
    for line in (line for block in blocks for line in block.splitlines()):
        if line.startswith("curl "):
            command, _, status = line.partition("  # ")
            out.append((command.strip(), int(status) if status else 200))
    return out


def test_docs_show_a_curl_example_for_every_route() -> None:
    text = "\n".join(command for command, _ in doc_curl_lines())
    for route in ("/v1/events", "/v1/decisions/", "/v1/checkpoint", "/v1/vkey",
                  "/v1/entries/", "/v1/entries?event_id=", "/v1/proofs/inclusion?index=",
                  "/v1/proofs/inclusion?event_id=", "/v1/proofs/consistency",
                  "/v1/proofs/lineage", "/v1/approvals?", "/v1/approvals/",
                  "/healthz", "/readyz", "/metrics", "/checkpoint",
                  "/tile/0/", "/tile/entries/"):
        assert f'$API{route}' in text, route


def test_every_doc_curl_example_answers_as_documented(server: str, ledger: Ledger,
                                                      tmp_path: Path) -> None:
    (tmp_path / "request.json").write_bytes(signed_request(nonce="api-doc-example-1"))
    env = {**os.environ, "API": server, "AUTH": f"Authorization: Bearer {TOKEN}",
           "AUDITOR": f"Authorization: Bearer {AUDIT_TOKEN}",
           "REQUEST_ID": RID, "UNKNOWN_ID": "ab" * 32,
           "EVENT_ID": ledger.chain[-1], "OLD_SIZE": "5", "NEW_SIZE": "13"}
    examples = doc_curl_lines()
    assert len(examples) >= 17
    for command, want in examples:
        done = subprocess.run(["bash", "-c", command + " -w '\\n%{http_code}'"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=30,
                              check=False)
        assert done.returncode == 0, (command, done.stderr)
        assert int(done.stdout.rsplit("\n", 1)[-1]) == want, (command, done.stdout[-500:])
    bundle = (tmp_path / "bundle.json").read_bytes()
    assert verify_bundle(bundle, ledger.vkey).kind == "inclusion"


def test_oversized_content_length_is_refused_before_the_body_is_sent(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /v1/events HTTP/1.1\r\nHost: api\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{")
        answer = b""
        while b"}" not in answer:                    # headers and body may be two segments
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"reason":"OVERSIZED"' in answer
