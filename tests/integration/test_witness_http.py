"""A witness (``govledger witness serve``, a real subprocess) and logs talking to it through
real HTTP: a split view is refused, so are a rollback, an unknown log, a checkpoint the
log did not sign and malformed or oversized requests; a SIGKILL mid-stream leaves the state
at the last acknowledged checkpoint (or the one in flight), never before it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ledger.core import merkle
from ledger.core.checkpoint import Checkpoint, sign_checkpoint
from ledger.core.cosignature import WitnessPolicy, add_cosignatures, verify_witnessed
from ledger.core.keys import Signer
from ledger.core.witnessing import build_add_checkpoint
from ledger.errors import ProofError
from ledger.kafka.broker import free_port
from ledger.keyfiles import load_signer
from ledger.log.cosigning import CosignatureStore, Cosigner, parse_witness_endpoints
from ledger.log.ledger_dir import KEY_DIR, KEY_NAME, init_ledger, open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.log.witness import add_log, init_witness
from tests.factories import default_ring
from tests.ledger_support import envelopes
from tests.reference_merkle import proof as consistency_proof

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
GOVLEDGER = str(Path(sys.executable).with_name("govledger"))
ORIGIN = "govledger.test/log"
VERIFY = keyring_verifier(default_ring())


@dataclass
class WitnessProcess:
    directory: Path
    vkey: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.directory / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                [GOVLEDGER, "witness", "serve", "--dir", str(self.directory), "--port",
                 str(self.port)], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "serve.log").read_text()
                raise AssertionError(f"witness exited: {log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)  # polling for the port to open, bounded by the deadline
        raise AssertionError("witness did not start listening")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def make_ledger(path: Path, leaves: int) -> Path:
    init_ledger(path, ORIGIN)
    grow(path, 0, leaves)
    return path


def grow(path: Path, start: int, count: int) -> None:
    sequencer = open_ledger(path, VERIFY)
    try:
        sequencer.submit(envelopes(count, start=start))
    finally:
        sequencer.close()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A ledger of 3 leaves: the history both forks share."""
    return make_ledger(tmp_path / "base", 3)


@pytest.fixture
def witness(tmp_path: Path, base: Path) -> Iterator[WitnessProcess]:
    directory = tmp_path / "witness"
    vkey = init_witness(directory, "witness.test/w1")
    add_log(directory, ORIGIN, (base / "ledger.vkey").read_text())
    running = WitnessProcess(directory, vkey, free_port())
    running.start()
    yield running
    running.stop()


def fork(base: Path, path: Path, start: int, count: int) -> Path:
    shutil.copytree(base, path)
    grow(path, start, count)
    return path


def cosign_once(data_dir: Path, witness: WitnessProcess) -> str:
    async def go() -> str:
        cosigner = Cosigner(data_dir, parse_witness_endpoints([f"{witness.url} {witness.vkey}"]))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                return await cosigner.ask(http, cosigner.witnesses[0])
        finally:
            cosigner.close()
    return asyncio.run(go())


def witnessed_note(data_dir: Path, size: int) -> str:
    from ledger.log.store import LedgerStore
    with LedgerStore(data_dir / "ledger.db") as store:
        note = store.checkpoint_at(size)
    assert note is not None
    store_ = CosignatureStore(data_dir)
    try:
        return add_cosignatures(note, store_.lines_at(size))
    finally:
        store_.close()


def test_split_view_second_fork_is_refused(tmp_path: Path, base: Path,
                                           witness: WitnessProcess) -> None:
    honest = fork(base, tmp_path / "a", 3, 2)           # size 5
    evil = fork(base, tmp_path / "b", 100, 4)           # size 7, other leaves after 3
    assert cosign_once(honest, witness) == "cosigned size 5"
    policy = WitnessPolicy.of([witness.vkey], 1)
    assert verify_witnessed(witnessed_note(honest, 5), policy)
    with pytest.raises(ProofError, match="422"):
        cosign_once(evil, witness)
    assert CosignatureStore(evil).lines_at(7) == []
    grow(honest, 5, 3)                                   # the honest log goes on: size 8
    assert cosign_once(honest, witness) == "cosigned size 8"


def test_split_view_at_the_same_size_is_refused(tmp_path: Path, base: Path,
                                                witness: WitnessProcess) -> None:
    honest, evil = fork(base, tmp_path / "a", 3, 2), fork(base, tmp_path / "b", 100, 2)
    assert cosign_once(honest, witness) == "cosigned size 5"
    with pytest.raises(ProofError, match="another tree at size 5"):
        cosign_once(evil, witness)


def _signed(data: list[bytes], signer: Signer, origin: str = ORIGIN) -> str:
    return sign_checkpoint(Checkpoint(origin, len(data), merkle.root_of(data)),  # type: ignore[arg-type]
                           origin, signer)


def _leaves(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


@pytest.fixture
def log_key(base: Path) -> Signer:
    return load_signer(base / KEY_DIR / f"{KEY_NAME}.key")


def post(witness: WitnessProcess, body: bytes) -> httpx.Response:
    return httpx.post(f"{witness.url}/add-checkpoint", content=body, timeout=10)


def test_rollback_is_refused_with_409_and_the_witness_size(
        witness: WitnessProcess, log_key: Signer) -> None:
    data = _leaves(9)
    assert post(witness, build_add_checkpoint(0, [], _signed(data, log_key))).status_code == 200
    response = post(witness, build_add_checkpoint(5, [], _signed(data[:5], log_key)))
    assert (response.status_code, response.text) == (409, "9\n")
    assert response.headers["content-type"] == "text/x.tlog.size"


@pytest.mark.parametrize(("what", "status"), [
    ("unknown-log", 404), ("not-the-log-key", 403), ("bad-proof", 422), ("malformed", 400),
    ("oversized", 413)])
def test_bad_requests_are_refused_with_the_protocol_status(
        witness: WitnessProcess, log_key: Signer, what: str, status: int) -> None:
    data = _leaves(9)
    assert post(witness, build_add_checkpoint(0, [], _signed(data[:4], log_key))).status_code \
        == 200
    bodies = {
        "unknown-log": build_add_checkpoint(0, [], _signed(data, log_key, "other.test/log")),
        "not-the-log-key": build_add_checkpoint(4, consistency_proof(4, data),
                                                _signed(data, Signer.generate())),
        "bad-proof": build_add_checkpoint(4, [bytes(32)] * 3, _signed(data, log_key)),
        "malformed": b"old four\n\n" + _signed(data, log_key).encode(),
        "oversized": b"old 4\n\n" + b"x" * (1 << 20),
    }
    assert post(witness, bodies[what]).status_code == status
    again = post(witness, build_add_checkpoint(0, [], _signed(data, log_key)))
    assert (again.status_code, again.text) == (409, "4\n")   # the state did not move


def test_sigkill_mid_stream_keeps_the_last_acknowledged_checkpoint(
        witness: WitnessProcess, log_key: Signer) -> None:
    data = _leaves(400)
    acked: list[int] = []
    sent: list[int] = []
    enough = threading.Event()

    def stream() -> None:
        old = 0
        with httpx.Client(timeout=5) as http:
            for size in range(1, len(data) + 1):
                proof = consistency_proof(old, data[:size]) if old else []
                sent.append(size)
                try:
                    response = http.post(f"{witness.url}/add-checkpoint",
                                         content=build_add_checkpoint(
                                             old, proof, _signed(data[:size], log_key)))
                except httpx.HTTPError:
                    return
                assert response.status_code == 200, response.text
                acked.append(size)
                old = size
                if len(acked) >= 20:
                    enough.set()

    client = threading.Thread(target=stream)
    client.start()
    assert enough.wait(60)
    witness.kill()
    client.join(30)
    assert acked and acked[-1] < len(data), "the kill did not land mid-stream"
    witness.start()
    response = post(witness, build_add_checkpoint(0, [], _signed(data, log_key)))
    assert response.status_code == 409
    state = int(response.text)
    # Committed before answering: the last acknowledged one, or the one in flight.
    assert state in (acked[-1], sent[-1]), (state, acked[-1], sent[-1])
    proof = consistency_proof(state, data)
    assert post(witness, build_add_checkpoint(state, proof, _signed(data, log_key))
                ).status_code == 200


@pytest.mark.parametrize("answer", ["by-another-key", "over-another-checkpoint", "garbage"])
def test_cosigner_keeps_no_cosignature_that_does_not_verify(base: Path, answer: str) -> None:
    """A witness (here a stub transport) answering 200 with a line that is not a valid
    cosignature of this checkpoint by its key: nothing is stored or served."""
    from ledger.core.checkpoint import split_note
    from ledger.core.cosignature import build_witness_vkey, cosign
    from ledger.log.store import LedgerStore
    key, other = Signer.generate(), Signer.generate()
    vkey = build_witness_vkey("w.test", key.public_key)
    with LedgerStore(base / "ledger.db") as store:
        latest = store.latest_checkpoint()
    assert latest is not None
    text = split_note(latest[1])[0]
    lines = {"by-another-key": cosign(text, "w.test", other, 1000),
             "over-another-checkpoint": cosign(text.replace("\n3\n", "\n2\n"), "w.test",
                                               key, 1000),
             "garbage": "\u2014 w.test AAAA\n"}

    async def go() -> None:
        cosigner = Cosigner(base, parse_witness_endpoints([f"http://w.test {vkey}"]))
        transport = httpx.MockTransport(lambda _: httpx.Response(200, text=lines[answer]))
        try:
            async with httpx.AsyncClient(transport=transport) as http:
                with pytest.raises(ProofError):
                    await cosigner.ask(http, cosigner.witnesses[0])
            assert cosigner.cosignatures.lines_at(3) == []
        finally:
            cosigner.close()
    asyncio.run(go())


def test_cosigner_retries_a_witness_that_was_down_with_the_latest_checkpoint(
        tmp_path: Path, base: Path) -> None:
    from ledger.errors import Unavailable
    directory = tmp_path / "late"
    late = WitnessProcess(directory, init_witness(directory, "late.test"), free_port())
    add_log(directory, ORIGIN, (base / "ledger.vkey").read_text())
    with pytest.raises(Unavailable, match="unreachable"):
        cosign_once(base, late)                       # down: nothing cosigned, nothing stuck
    grow(base, 3, 4)                                  # the log went on meanwhile: size 7
    late.start()
    try:
        assert cosign_once(base, late) == "cosigned size 7"
        assert cosign_once(base, late) == "up to date"
    finally:
        late.stop()
