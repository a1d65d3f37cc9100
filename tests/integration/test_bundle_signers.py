"""Offline bundle verification checks who signed each leaf, not only that the leaf is logged.

The ledger here is built by a permissive verifier (signature only, any kind under any known
key), as an older or compromised sequencer would have: a grant an agent signed for its own
request is properly included, and only the signer check can tell it from a real one.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.core.bundles import verify_bundle
from ledger.core.envelope import sign_event_with_id, verify_envelope
from ledger.core.signers import SignerKeys
from ledger.errors import ConfigError, ProofError
from ledger.keyfiles import load_signer_keys
from ledger.log.audit import audit_ledger
from ledger.log.ledger_dir import open_ledger, read_vkey
from ledger.log.proofs import bundle_json, prove_inclusion, prove_lineage
from ledger.log.records import LeafRecord
from tests.factories import ALICE, AUTHORITY, default_ring, request
from tests.ledger_support import grant, make_ledger, write_keyring

pytestmark = pytest.mark.integration
GOVLEDGER = str(Path(sys.executable).parent / "govledger")
KEYS = SignerKeys(keyring=default_ring())
AUTHORITY_ONLY = SignerKeys(authority=frozenset({AUTHORITY.public_key}))


def permissive(data: bytes) -> LeafRecord:
    """Signature under a known key, nothing about who may sign which kind."""
    event = verify_envelope(data, default_ring(), None)
    return LeafRecord(event.event_id, event.kind, data, event.event.parent_ref())


@pytest.fixture(scope="module")
def forged_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(data dir, forged grant id, genuine grant id), each granting its own logged request."""
    data_dir = make_ledger(tmp_path_factory.mktemp("forged"))
    write_keyring(data_dir / "keyring.json")
    denied, denied_id = sign_event_with_id(request(nonce="denied-request-001"), ALICE)
    asked, asked_id = sign_event_with_id(request(nonce="granted-request-01"), ALICE)
    forged = grant(denied_id, denied_id, None, 0, "forged-grant-00001", signer=ALICE,
                   identity="agent:alice")
    genuine = grant(asked_id, asked_id, None, 0, "genuine-grant-0001")
    seq = open_ledger(data_dir, permissive)
    result = seq.submit([denied, forged[0], asked, genuine[0]])
    assert (result.appended, result.refused) == (4, ())
    seq.close()
    return data_dir, forged[1], genuine[1]


def test_a_lineage_hop_signed_by_a_non_authority_key_is_refused(
        forged_ledger: tuple[Path, str, str]) -> None:
    data_dir, forged, genuine = forged_ledger
    vkey = read_vkey(data_dir)
    bundle = prove_lineage(data_dir, forged)
    for keys in (KEYS, AUTHORITY_ONLY):
        with pytest.raises(ProofError, match="hop 0"):
            verify_bundle(bundle, vkey, keys)
    result = verify_bundle(prove_lineage(data_dir, genuine), vkey, KEYS)
    assert result.kind == "lineage" and len(result.event_ids) == 2 and result.signers_checked


def test_with_the_authority_key_alone_a_hop_signed_by_an_agent_is_refused(
        forged_ledger: tuple[Path, str, str]) -> None:
    """Every hop must verify under a key the verifier was given: the agent's request under
    the genuine grant needs the keyring."""
    data_dir, _, genuine = forged_ledger
    with pytest.raises(ProofError, match=r"hop 1: .*not among the keys given"):
        verify_bundle(prove_lineage(data_dir, genuine), read_vkey(data_dir), AUTHORITY_ONLY)


def test_a_lineage_bundle_without_signer_keys_fails_closed(
        forged_ledger: tuple[Path, str, str]) -> None:
    data_dir, _, genuine = forged_ledger
    bundle = prove_lineage(data_dir, genuine)
    for keys in (None, SignerKeys()):
        with pytest.raises(ConfigError, match="needs the keys"):
            verify_bundle(bundle, read_vkey(data_dir), keys)


def test_an_inclusion_bundle_checks_its_leaf_signer_when_keys_are_given(
        forged_ledger: tuple[Path, str, str]) -> None:
    data_dir, forged, genuine = forged_ledger
    vkey = read_vkey(data_dir)
    forged_bundle = prove_inclusion(data_dir, event_id=forged)
    unchecked = verify_bundle(forged_bundle, vkey)  # proves the bytes are logged, no more
    assert unchecked.kind == "inclusion" and not unchecked.signers_checked
    for keys in (KEYS, AUTHORITY_ONLY):
        with pytest.raises(ProofError, match="signer"):
            verify_bundle(forged_bundle, vkey, keys)
        assert verify_bundle(prove_inclusion(data_dir, event_id=genuine), vkey,
                             keys).signers_checked


def test_the_authority_key_signing_a_request_is_refused_offline(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    envelope, event_id = sign_event_with_id(
        request(signer="govledger:authority", tenant="acme", nonce="authority-asks-01"),
        AUTHORITY)
    seq = open_ledger(data_dir, permissive)
    seq.submit([envelope])
    seq.close()
    with pytest.raises(ProofError, match="authority key"):
        verify_bundle(prove_inclusion(data_dir, event_id=event_id), read_vkey(data_dir), KEYS)


def verify_cli(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOVLEDGER, "ledger", "verify", str(bundle), *args, "--json"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_ledger_verify_refuses_a_forged_lineage_and_needs_keys_for_one(
        forged_ledger: tuple[Path, str, str], tmp_path: Path) -> None:
    data_dir, forged, genuine = forged_ledger
    forged_path, genuine_path = tmp_path / "forged.json", tmp_path / "genuine.json"
    forged_path.write_text(bundle_json(prove_lineage(data_dir, forged)))
    genuine_path.write_text(bundle_json(prove_lineage(data_dir, genuine)))
    refused = verify_cli(forged_path, "--data", str(data_dir))
    assert refused.returncode == 1, refused.stderr
    assert json.loads(refused.stdout)["valid"] is False
    passed = verify_cli(genuine_path, "--data", str(data_dir))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert json.loads(passed.stdout)["signers_checked"] is True
    vkey = str(data_dir / "ledger.vkey")
    assert verify_cli(genuine_path, "--vkey", vkey,
                      "--keyring", str(data_dir / "keyring.json")).returncode == 0
    no_keys = verify_cli(genuine_path, "--vkey", vkey)
    assert no_keys.returncode == 2 and "needs the keys" in no_keys.stderr


def test_ledger_verify_checks_an_inclusion_leaf_under_the_authority_key(
        forged_ledger: tuple[Path, str, str], tmp_path: Path) -> None:
    data_dir, forged, genuine = forged_ledger
    vkey, authority = str(data_dir / "ledger.vkey"), base64.b64encode(
        AUTHORITY.public_key).decode()
    genuine_path, forged_path = tmp_path / "genuine.json", tmp_path / "forged.json"
    genuine_path.write_text(bundle_json(prove_inclusion(data_dir, event_id=genuine)))
    forged_path.write_text(bundle_json(prove_inclusion(data_dir, event_id=forged)))
    assert verify_cli(genuine_path, "--vkey", vkey, "--authority", authority).returncode == 0
    assert verify_cli(forged_path, "--vkey", vkey, "--authority", authority).returncode == 1
    unchecked = verify_cli(forged_path, "--vkey", vkey)
    assert unchecked.returncode == 0
    assert json.loads(unchecked.stdout)["signers_checked"] is False
    assert load_signer_keys(authority).authority == AUTHORITY_ONLY.authority


def test_the_audit_names_a_logged_forgery_with_the_keyring(
        forged_ledger: tuple[Path, str, str]) -> None:
    data_dir, _, _ = forged_ledger
    report = audit_ledger(data_dir, data_dir / "keyring.json")
    assert not report.ok
    assert report.first_bad_index == 1  # the agent-signed grant
    assert "IDENTITY_MISMATCH" in str(report.what)
