"""Keys per role (issue 19 item 2, docs/production.md "Keys per role"): `govledger init`
writes each signing key where the settings name it; the processor starts holding only the
authority key, the sequencer only the ledger key, the API neither. On the real embedded
broker; the key a role must not hold is moved off the file system while it starts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ledger.clock import utc_now
from ledger.config import Settings
from ledger.core.envelope import event_id, parse_envelope
from ledger.core.keys import Signer
from ledger.datadir import DataDir, init_data_dir
from ledger.errors import ConfigError
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_signer
from ledger.log.governance import OPERATOR_IDENTITY
from ledger.sdk.client import Client
from ledger.sdk.governance import Admin
from ledger.sdk.httpsig import SignedRequests
from ledger.server.governance_tools import write_genesis
from ledger.server.service import Service

pytestmark = pytest.mark.integration


def split_settings(tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> Settings:
    return Settings(data_dir=tmp_path / "data", kafka_bootstrap=broker.bootstrap,
                    topic_prefix=topics.prefix, partitions=4, kafka_idempotent=False,
                    authority_key_file=tmp_path / "authority" / "authority.key",
                    ledger_key_file=tmp_path / "ledger" / "ledger.key",
                    operator_key_file=tmp_path / "operator" / "operator.key")


def init_split(settings: Settings) -> None:
    """What `govledger init --genesis` does in a split deployment: no `govledger up` writes
    the governance genesis there, and every role follows governance from it."""
    keys = {"authority_key": settings.authority_key_file,
            "ledger_key": settings.ledger_key_file, "operator_key": settings.operator_key_file}
    init_data_dir(settings.data_dir, settings.log_origin, **keys)
    assert write_genesis(settings.data_dir, utc_now(), **keys) > 0


@contextmanager
def absent(*key_files: Path | None) -> Iterator[None]:
    """The directories of ``key_files`` moved away (as if never mounted), then back."""
    dirs = [path.parent for path in key_files if path is not None]
    for directory in dirs:
        directory.rename(directory.with_name(directory.name + "-elsewhere"))
    try:
        yield
    finally:
        for directory in dirs:
            directory.with_name(directory.name + "-elsewhere").rename(directory)


def test_init_writes_each_key_where_the_settings_name_it(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    settings = split_settings(tmp_path, broker, topics)
    init_split(settings)
    assert settings.authority_key_file is not None and settings.ledger_key_file is not None
    assert settings.authority_key_file.is_file()
    assert settings.ledger_key_file.is_file()
    assert settings.operator_key_file is not None and settings.operator_key_file.is_file()
    keys = DataDir(settings.data_dir).keys
    # No private key is in the data directory every role mounts, not even the operator's
    # admin key that signed the genesis; the public trust anchors every role follows
    # governance from are.
    assert sorted(p.name for p in keys.glob("*.key")) == []
    for name, key in (("authority.pub", settings.authority_key_file),
                      ("operator.pub", settings.operator_key_file)):
        assert (keys / name).read_bytes() == key.with_suffix(".pub").read_bytes()
    assert DataDir.of(settings).ledger_key == settings.ledger_key_file
    # A later init (the operator key offline now) keeps everything and needs only the anchor.
    with absent(settings.operator_key_file):
        again = init_data_dir(settings.data_dir, settings.log_origin,
                              authority_key=settings.authority_key_file,
                              ledger_key=settings.ledger_key_file,
                              operator_key=settings.operator_key_file)
    assert again.created == [] and again.repaired == []


def test_api_role_starts_without_either_signing_key(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    settings = split_settings(tmp_path, broker, topics)
    init_split(settings)

    async def scenario() -> tuple[int, dict[str, bool]]:
        service = Service(settings, components=("api",))
        try:
            await service.start()
            async with httpx.AsyncClient(base_url=service.api_url) as http:
                health = await http.get("/healthz")
                ready = await http.get("/readyz")
            return health.status_code, ready.json()
        finally:
            await service.stop()

    with absent(settings.authority_key_file, settings.ledger_key_file,
                settings.operator_key_file):
        status, ready = asyncio.run(scenario())
    assert status == 200
    assert ready["decisions"] is True and ready["ledger"] is True


def test_processor_role_starts_without_the_ledger_key(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    settings = split_settings(tmp_path, broker, topics)
    init_split(settings)

    async def scenario() -> bool:
        service = Service(settings, components=("processor",))
        try:
            await service.start()
            return service.running("processor")
        finally:
            await service.stop()

    with absent(settings.ledger_key_file, settings.operator_key_file):
        assert asyncio.run(scenario())


def test_sequencer_role_starts_without_the_authority_key(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    settings = split_settings(tmp_path, broker, topics)
    init_split(settings)

    async def scenario() -> bool:
        service = Service(settings, components=("sequencer",))
        try:
            await service.start()
            return service.running("sequencer")
        finally:
            await service.stop()

    with absent(settings.authority_key_file, settings.operator_key_file):
        assert asyncio.run(scenario())


def test_one_role_refuses_a_data_directory_init_never_finished(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    settings = split_settings(tmp_path, broker, topics)
    settings.data_dir.mkdir()

    async def scenario() -> None:
        service = Service(settings, components=("api",))
        try:
            await service.start()
        finally:
            await service.stop()

    with pytest.raises(ConfigError, match="govledger init"):
        asyncio.run(scenario())
    assert not (settings.data_dir / "keys").exists()  # a role creates nothing


def test_key_file_settings_must_name_a_dot_key_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.key"):
        Settings(data_dir=tmp_path, authority_key_file=tmp_path / "authority")


def test_the_api_role_follows_keys_registered_and_revoked_live(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    """A split deployment: the API in a service of its own, the sequencer and the processor
    in another. A key registered live authenticates at the API, and once revoked live it is
    refused, without restarting the API (it follows the keys in force from the ledger)."""
    settings = split_settings(tmp_path, broker, topics)
    init_split(settings)
    newcomer = Signer.generate()
    assert settings.operator_key_file is not None
    admin = Admin(OPERATOR_IDENTITY, "*", load_signer(settings.operator_key_file))

    async def answered(api: str, want: int, timeout_s: float = 30) -> None:
        give_up = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=api, auth=SignedRequests(newcomer)) as http:
            while (status := (await http.get("/v1/approvals")).status_code) != want:
                assert time.monotonic() < give_up, f"still {status}, not {want}"
                await asyncio.sleep(0.1)

    async def govern(client: Client, envelope: bytes) -> None:
        await client.send_raw("governance", envelope, "governance")
        done = await client.decision(event_id(parse_envelope(envelope).payload), 30)
        assert done.allow, done.reasons

    async def scenario() -> None:
        core = Service(settings, components=("sequencer", "processor"))
        api = Service(settings, components=("api",))
        try:
            await core.start()
            await api.start()
            assert api.keyring is not None and api.api_url is not None
            await answered(api.api_url, 401)  # unknown key
            async with Client(settings, core.bootstrap, api.keyring) as client:
                await govern(client, admin.register("agent:live", newcomer.public_key,
                                                    ("reader",), tenant="acme"))
                await answered(api.api_url, 200)
                await govern(client, admin.revoke(newcomer.key_id, tenant="acme"))
                await answered(api.api_url, 401)
        finally:
            await api.stop()
            await core.stop()

    with absent(settings.operator_key_file):  # the roles never read it; the test signs
        asyncio.run(scenario())
