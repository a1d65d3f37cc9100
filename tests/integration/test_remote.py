"""Remote proofs and the verifying mirror, through the real CLI against the API served by
uvicorn on a loopback port over real SQLite ledgers: `ledger prove ... --api`, `ledger
verify URL`, and `ledger mirror --api URL DIR` following a log, then refusing the same log
(same key, same origin) once it was forked, rolled back or rewritten.

Inclusion and lineage bundles carry payloads: the CLI reads them as a reader of the
ledger's tenant (agent:alice, ``--key`` or ``--token-file``); without a credential it is a
usage error (exit 2) naming the flags. Consistency proofs and tiles stay public."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.log.ledger_dir import read_vkey
from ledger.log.store import LedgerStore
from tests.integration.test_api_auth import key_file
from tests.ledger_support import write_keyring
from tests.tiles_support import grow, serve, tiles_ledger
from tests.unit.test_api import AUDIT_TOKEN, TOKEN, build_ledger

pytestmark = pytest.mark.integration

GOVLEDGER = str(Path(sys.executable).parent / "govledger")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOVLEDGER, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_prove_over_http_writes_a_bundle_that_verifies_offline(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path)
    keyring = write_keyring(tmp_path / "keyring.json")
    vkey_file = tmp_path / "log.vkey"
    vkey_file.write_text(ledger.vkey)
    alice = ["--key", str(key_file(tmp_path, "alice"))]
    with serve(ledger.data_dir) as api:
        for args in (["inclusion", "--index", "3", *alice],
                     ["inclusion", "--event-id", ledger.chain[2], *alice],
                     ["consistency", "--old-size", "5"],         # public: no credential
                     ["lineage", "--event-id", ledger.chain[-1], *alice]):
            out = tmp_path / f"{args[0]}.json"
            done = cli("ledger", "prove", *args, "--api", api, "--out", str(out))
            assert done.returncode == 0, done.stderr
            checked = cli("ledger", "verify", str(out), "--vkey", str(vkey_file),
                          "--keyring", str(keyring), "--json")
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert json.loads(checked.stdout)["kind"] == args[0]
        verified_first = cli("ledger", "prove", "inclusion", "--index", "0", "--api", api,
                             "--vkey", str(vkey_file), *alice)
        assert verified_first.returncode == 0, verified_first.stderr
        assert json.loads(verified_first.stdout)["index"] == 0
        for kind, args in (("inclusion", ["--index", "0"]),
                           ("lineage", ["--event-id", ledger.chain[-1]])):
            anonymous = cli("ledger", "prove", kind, *args, "--api", api)
            assert anonymous.returncode == 2, anonymous.stderr
            assert "--key" in anonymous.stderr and "--token-file" in anonymous.stderr


def test_verify_fetches_a_bundle_over_http(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path)
    other = tiles_ledger(tmp_path / "other", [20])
    alice = ["--key", str(key_file(tmp_path, "alice"))]
    token_file = tmp_path / "alice.token"
    token_file.write_text(TOKEN + "\n")
    with serve(ledger.data_dir) as api:
        url = f"{api}/v1/proofs/inclusion?event_id={ledger.chain[1]}"
        for credential in (alice, ["--token-file", str(token_file)]):
            good = cli("ledger", "verify", url, "--vkey", ledger.vkey, "--json", *credential)
            assert good.returncode == 0, good.stderr
            result = json.loads(good.stdout)
            assert (result["valid"], result["kind"], result["tree_size"]) == \
                (True, "inclusion", 13)
        wrong_log = cli("ledger", "verify", url, "--vkey", read_vkey(other), "--json", *alice)
        assert wrong_log.returncode == 1
        assert json.loads(wrong_log.stdout)["valid"] is False
        missing = cli("ledger", "verify", f"{api}/v1/proofs/inclusion?index=999",
                      "--vkey", ledger.vkey, *alice)
        assert missing.returncode == 1 and "no leaf at index 999" in missing.stderr
        anonymous = cli("ledger", "verify", url, "--vkey", ledger.vkey)
        assert anonymous.returncode == 2 and "401" in anonymous.stderr
        assert "--key" in anonymous.stderr and "INVALID" not in anonymous.stdout
        stranger = cli("ledger", "verify", url, "--vkey", ledger.vkey, "--key",
                       str(key_file(tmp_path, "mallory")))      # not in the keyring
        assert stranger.returncode == 2 and "refused the credential" in stranger.stderr
        public = cli("ledger", "verify", f"{api}/v1/proofs/consistency?old_size=5",
                     "--vkey", ledger.vkey, "--json")           # no credential needed
        assert public.returncode == 0, public.stderr
        assert json.loads(public.stdout)["kind"] == "consistency"


def test_prove_over_http_refuses_a_bundle_of_another_log(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path)
    other = tiles_ledger(tmp_path / "other", [20])
    out = tmp_path / "bundle.json"
    with serve(ledger.data_dir) as api:
        done = cli("ledger", "prove", "inclusion", "--index", "1", "--api", api,
                   "--vkey", read_vkey(other), "--out", str(out),
                   "--key", str(key_file(tmp_path, "alice")))
    assert done.returncode == 1 and "verification failed" in done.stderr
    assert not out.exists()


def test_remote_commands_report_an_unreachable_api_as_unavailable(tmp_path: Path) -> None:
    with serve(tiles_ledger(tmp_path, [3])) as api:
        pass                                        # the port is closed again
    for args in (["ledger", "prove", "inclusion", "--index", "0", "--api", api, "--key",
                  str(key_file(tmp_path, "alice"))],
                 ["ledger", "verify", f"{api}/v1/proofs/inclusion?index=0", "--vkey", "x"],
                 ["ledger", "mirror", str(tmp_path / "m"), "--api", api, "--vkey",
                  read_vkey(tmp_path / "ledger")]):
        done = cli(*args)
        assert done.returncode == 3, (args, done.stderr)
        assert "unavailable: cannot reach" in done.stderr


def mirror(out: Path, api: str, vkey: str, *extra: str,
           auditor: bool = True) -> subprocess.CompletedProcess[str]:
    """``govledger ledger mirror`` as the test auditor (tenant *: the entry bundles' reader),
    or with no credential."""
    credential = []
    if auditor:
        token = out.parent / "auditor.token"
        token.write_text(AUDIT_TOKEN + "\n")
        credential = ["--token-file", str(token)]
    return cli("ledger", "mirror", str(out), "--api", api, "--vkey", vkey, "--json",
               *credential, *extra)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_mirror_follows_the_log_and_refuses_it_once_it_rewrote_history(tmp_path: Path) -> None:
    log = tiles_ledger(tmp_path / "log", [600])
    before = tmp_path / "before"               # the same log at 600: rolled back later
    shutil.copytree(log, before)
    fork = tmp_path / "fork"                   # same key and origin, other leaves after 600
    shutil.copytree(log, fork)
    vkey, out = read_vkey(log), tmp_path / "mirror"
    with serve(log) as api:
        anonymous = mirror(out, api, vkey, auditor=False)   # entry bundles need tenant *
        assert anonymous.returncode == 2 and "needs a credential" in anonymous.stderr
        assert not (out / "checkpoint").exists()
        first = mirror(out, api, vkey)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) | {"old_size": 0, "new_size": 600} == \
            json.loads(first.stdout)
        grow(log, 600, 1000)
        second = mirror(out, api, vkey)
        assert second.returncode == 0, second.stderr
        assert (json.loads(second.stdout)["old_size"], json.loads(second.stdout)["new_size"]) \
            == (600, 1000)
        third = json.loads(mirror(out, api, vkey).stdout)
        assert (third["old_size"], third["new_size"], third["files_written"]) == (1000, 1000, 0)
    held = snapshot(out)
    assert held["checkpoint"].split(b"\n")[1] == b"1000"

    grow(fork, 600, 1000, tag="fork")          # another tree of the same size: a fork
    with serve(fork) as api:
        forked = mirror(out, api, vkey)
        assert forked.returncode == 1
        assert "another tree of size 1000 (a fork)" in forked.stderr
    grow(fork, 1000, 1300, tag="fork")         # larger, but not an extension of 1000
    with serve(fork) as api:
        rewritten = mirror(out, api, vkey)
        assert rewritten.returncode == 1
        assert "is not an extension of the held tree of size 1000 (it rewrote history)" \
            in rewritten.stderr
    with serve(before) as api:
        rolled_back = mirror(out, api, vkey)
        assert rolled_back.returncode == 1
        assert "went back from size 1000 to 600" in rolled_back.stderr
    assert snapshot(out) == held               # nothing of a refused log was stored


def test_mirror_refuses_a_checkpoint_of_another_origin_or_key(tmp_path: Path) -> None:
    log = tiles_ledger(tmp_path / "log", [10])
    other = tiles_ledger(tmp_path / "other", [10], tag="other")
    with serve(log) as api:
        wrong_origin = mirror(tmp_path / "m1", api, read_vkey(log), "--origin",
                              "elsewhere.example/log")
        assert wrong_origin.returncode == 1
        assert "checkpoint is for another log" in wrong_origin.stderr
        wrong_key = mirror(tmp_path / "m2", api, read_vkey(other))
        assert wrong_key.returncode == 1 and "note has no signature by" in wrong_key.stderr
        bad_url = cli("ledger", "mirror", str(tmp_path / "m3"), "--api", "ftp://x", "--vkey",
                      read_vkey(log))
        assert bad_url.returncode == 2 and "must be an http:// or https:// URL" in bad_url.stderr
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_mirror_of_a_log_not_verified_yet_is_unavailable_not_invalid(tmp_path: Path) -> None:
    log = tiles_ledger(tmp_path / "log", [10])
    with LedgerStore(log / "ledger.db", writer=True) as store:
        store.set_verified(None)              # as while the sequencer's start-up check runs
    with serve(log) as api:
        done = mirror(tmp_path / "m", api, read_vkey(log))
    assert done.returncode == 3
    assert "unavailable" in done.stderr and "503" in done.stderr
    assert not (tmp_path / "m").exists()
