"""GOVLEDGER_WITNESSES entries: "<http(s) URL> <witness vkey>", refused clearly otherwise."""

from __future__ import annotations

import pytest

from ledger.config import Settings
from ledger.core.checkpoint import build_vkey
from ledger.core.cosignature import build_witness_vkey
from ledger.core.keys import Signer
from ledger.errors import ConfigError
from ledger.log.cosigning import parse_witness_endpoints
from ledger.server.children import settings_env

KEY = Signer.from_private_bytes(bytes(range(32))).public_key  # fixed: test ids name it
VKEY = build_witness_vkey("w1.test", KEY)


def test_url_and_witness_vkey_parse() -> None:
    (endpoint,) = parse_witness_endpoints([f"https://w1.test/prefix/ {VKEY}"])
    assert endpoint.url == "https://w1.test/prefix"
    assert endpoint.key.name == "w1.test"


@pytest.mark.parametrize(("entry", "message"), [
    (VKEY, "give"),
    (f"ftp://w1.test {VKEY}", "give"),
    ("http://w1.test " + build_vkey("w1.test", KEY), "type 0x04"),
    (f"http://w1.test {VKEY} extra", "give"),
], ids=["no-url", "not-http", "log-vkey", "extra-word"])
def test_bad_witness_entry_is_a_config_error(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_witness_endpoints([entry])


def test_same_witness_key_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_witness_endpoints([f"http://a.test {VKEY}",
                                 "http://b.test " + build_witness_vkey("w2.test", KEY)])


def test_witnesses_reach_a_child_process_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(witnesses=(f"http://w1.test {VKEY}",))
    env = settings_env(settings)
    monkeypatch.setenv("GOVLEDGER_WITNESSES", env["GOVLEDGER_WITNESSES"])
    assert Settings().witnesses == settings.witnesses
