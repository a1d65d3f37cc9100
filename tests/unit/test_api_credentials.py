"""The pieces of API authentication on their own: tenant visibility, token storage and
matching, the nonce memory's bounds, the signer's lifetime bound."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
)

from ledger.core.envelope import sign_event
from ledger.core.governance_events import PolicyPublished
from ledger.core.keys import Principal, Signer
from ledger.core.tenancy import may_read_api, stored_tenant, visible_to
from ledger.errors import ConfigError, Unavailable
from ledger.sdk.httpsig import MAX_LIFETIME_S, GovledgerEd25519, sign_request
from ledger.sdk.httpsig import _Message as SignedView
from ledger.sdk.httpsig import _OneSigner as OneSigner
from ledger.server.auth import NonceMemory
from ledger.server.http_errors import ApiError
from ledger.server.tokens import TokenTable, create_token, load_tokens
from tests.factories import ALICE, AUTHORITY, T0, signed_request


def test_a_tenant_sees_its_own_events_and_the_operator_sees_all() -> None:
    acme = signed_request(nonce="tenancy-nonce-0001")
    assert stored_tenant(acme) == "acme"
    assert visible_to("acme", acme)
    assert visible_to("*", acme)
    assert not visible_to("globex", acme)


def test_unreadable_or_star_tenant_events_are_for_the_operator_only() -> None:
    policy = sign_event(PolicyPublished(signer="govledger:operator", tenant="*",
                                        nonce="policy-nonce-00001", issued_at=T0,
                                        policy_digest="sha256:" + "0" * 64, version="1",
                                        files={"p.cedar": "permit(principal, action, "
                                                          "resource);"}), AUTHORITY)
    assert stored_tenant(policy) == "*"
    for envelope in (policy, b"not an envelope", b'{"payload": 1}'):
        assert not visible_to("acme", envelope)
        assert visible_to("*", envelope)


def test_only_read_roles_read() -> None:
    def who(*roles: str) -> Principal:
        return Principal("x", "acme", ALICE.public_key, frozenset(roles))
    assert may_read_api(who("reader"))
    assert may_read_api(who("requester", "orders-writer"))
    assert not may_read_api(who("authority"))
    assert not may_read_api(who("ledger"))
    assert not may_read_api(who("orders-writer"))


def test_tokens_are_stored_hashed_and_matched(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.json"
    token = create_token(path, ALICE.key_id, "agent:alice", "laptop")
    stored = path.read_text()
    assert token not in stored
    assert json.loads(stored)["tokens"][0]["key_id"] == ALICE.key_id
    assert path.stat().st_mode & 0o777 == 0o600
    table = load_tokens(path)
    found = table.match(token)
    assert found is not None and found.identity == "agent:alice"
    assert table.match(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert table.match("") is None
    second = create_token(path, ALICE.key_id, "agent:alice")
    assert {load_tokens(path).match(t) is not None for t in (token, second)} == {True}


def test_a_missing_token_file_is_an_empty_table_and_a_bad_one_a_config_error(
        tmp_path: Path) -> None:
    assert load_tokens(tmp_path / "none.json").entries == ()
    bad = tmp_path / "bad.json"
    for doc in ('{"version": 2, "tokens": []}', '{"version": 1, "tokens": [{"key_id": "x"}]}',
                "not json"):
        bad.write_text(doc)
        with pytest.raises(ConfigError):
            load_tokens(bad)
    assert TokenTable().match("glt_" + "a" * 43) is None


def test_nonce_memory_refuses_a_replay_and_forgets_after_the_window() -> None:
    memory = NonceMemory(capacity=10)
    memory.remember("k", "nonce-1", until=100.0, now=0.0)
    with pytest.raises(ApiError) as refused:
        memory.remember("k", "nonce-1", until=100.0, now=50.0)
    assert refused.value.status == 401
    memory.remember("other-key", "nonce-1", until=100.0, now=50.0)   # per key
    memory.remember("k", "nonce-1", until=300.0, now=101.0)          # its window ended
    assert len(memory) == 1                                           # the rest expired


def test_a_full_nonce_memory_refuses_rather_than_forgets() -> None:
    memory = NonceMemory(capacity=2)
    memory.remember("k", "a", until=100.0, now=0.0)
    memory.remember("k", "b", until=100.0, now=0.0)
    with pytest.raises(Unavailable):
        memory.remember("k", "c", until=100.0, now=1.0)
    memory.remember("k", "c", until=300.0, now=100.0)   # the old ones expired


def test_the_signer_refuses_a_lifetime_the_server_would_refuse() -> None:
    request = httpx.Request("GET", "http://api.test/v1/entries/0")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for lifetime in (0, MAX_LIFETIME_S + 1):
        with pytest.raises(ValueError, match="lifetime"):
            sign_request(request, ALICE, now=now, lifetime_s=lifetime)
    sign_request(request, ALICE, now=now, lifetime_s=MAX_LIFETIME_S)
    assert f'keyid="{ALICE.key_id}"' in request.headers["signature-input"]
    assert 'tag="govledger"' in request.headers["signature-input"]


# RFC 9421 Appendix B.1.4 (test-key-ed25519) and B.2.6 (signing a request using ed25519): an
# independent known answer for our Ed25519 plugged into the library.
RFC_KEY_PKCS8 = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF"
RFC_B26_INPUT = ('sig-b26=("date" "@method" "@path" "@authority" "content-type" '
                 '"content-length");created=1618884473;keyid="test-key-ed25519"')
RFC_B26_SIGNATURE = ("wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6v"
                     "uQv5lIp5WPpBKRCw==")


def rfc_request() -> SignedView:
    return SignedView("POST", "https://example.com/foo?param=Value&Pet=dog", httpx.Headers({
        "Host": "example.com", "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "Content-Type": "application/json",
        "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiY"
                          "llu7BNNyealdVLvRwEmTHWXvJwew==:",
        "Content-Length": "18"}))


def test_rfc9421_b26_signature_verifies_and_is_reproduced_byte_for_byte() -> None:
    signer = Signer.from_private_bytes(base64.b64decode(RFC_KEY_PKCS8)[-32:])

    class RfcKey(HTTPSignatureKeyResolver):
        def resolve_public_key(self, key_id: str) -> bytes | None:
            return signer.public_key if key_id == "test-key-ed25519" else None

    message = rfc_request()
    message.headers["Signature-Input"] = RFC_B26_INPUT
    message.headers["Signature"] = f"sig-b26=:{RFC_B26_SIGNATURE}:"
    verifier = HTTPMessageVerifier(signature_algorithm=GovledgerEd25519, key_resolver=RfcKey())
    (result,) = verifier.verify(message, max_age=None)
    assert result.parameters["keyid"] == "test-key-ed25519"

    ours = rfc_request()
    HTTPMessageSigner(signature_algorithm=GovledgerEd25519,
                      key_resolver=OneSigner(signer)).sign(
        ours, key_id=signer.key_id, created=datetime.fromtimestamp(1618884473, UTC),
        label="sig-b26", include_alg=False, use_existing_digest=True,
        covered_component_ids=("date", "@method", "@path", "@authority", "content-type",
                               "content-length"))
    # the same base but our key id: the signature differs, and verifies under our key
    assert ours.headers["signature-input"] == RFC_B26_INPUT.replace("test-key-ed25519",
                                                                    signer.key_id)
    base = ('"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n'
            '"@authority": example.com\n"content-type": application/json\n'
            '"content-length": 18\n"@signature-params": ' + RFC_B26_INPUT[len("sig-b26="):])
    assert base64.b64encode(signer.sign(base.encode())).decode() == RFC_B26_SIGNATURE
