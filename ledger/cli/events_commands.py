"""Offline commands on keys, envelopes and schemas: ``keys generate``, ``events sign``,
``events verify``, ``schema export`` (no broker, no ledger)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pydantic
import typer

from ledger.cli.options import EXIT_INVALID, JsonFlag, emit, read_envelope_file
from ledger.core.envelope import sign_event, verify_envelope
from ledger.core.keys import Principal, principal_document
from ledger.core.kinds import BY_KIND
from ledger.errors import ConfigError, Rejected
from ledger.keyfiles import generate_keypair, load_keyring, load_signer, write_atomic
from ledger.schema import export_schemas


def keys_generate(
    name: Annotated[str, typer.Argument(help="Key name: files NAME.key and NAME.pub.")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the key files.")],
    identity: Annotated[str | None, typer.Option(help="Identity to register in --keyring.")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant of the identity ('*' = any).")] = "default",
    role: Annotated[list[str] | None, typer.Option(help="Role in --keyring (repeatable).")] = None,
    keyring: Annotated[Path | None, typer.Option(
        help="Add the new key to this keyring file (created if missing).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate an Ed25519 key pair: NAME.key (0600) and NAME.pub.

    Example: govledger keys generate alice --dir keys --identity agent:alice --tenant acme
    --role requester --keyring keys/keyring.json
    """
    if keyring is not None and identity is None:
        raise ConfigError("--keyring needs --identity")
    signer, key_path, pub_path = generate_keypair(name, directory)
    if keyring is not None and identity is not None:
        add_to_keyring(keyring, Principal(identity, tenant, signer.public_key,
                                          frozenset(role or ["requester"])))
    public = pub_path.read_text().strip()
    emit({"key_id": signer.key_id, "public_key": public, "private_key_file": str(key_path),
          "public_key_file": str(pub_path)}, as_json,
         f"key id:      {signer.key_id}\npublic key:  {public}\nprivate key: {key_path} "
         f"(mode 0600)")


def add_to_keyring(path: Path, principal: Principal) -> None:
    """Append a principal to a keyring file, creating it if missing (atomically, keeping its
    mode). Raises ConfigError, Unavailable (disk full)."""
    mode = 0o644
    if path.exists():
        load_keyring(path)  # refuse to extend a file we cannot read back
        doc = json.loads(path.read_text())
        mode = path.stat().st_mode & 0o777
    else:
        doc = {"version": 1, "principals": []}
    doc["principals"].append(dict(principal_document(principal)))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Replaced in one step: a kill leaves the old keyring or the new one, never half of it.
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=mode, replace=True)


def events_sign(
    payload: Annotated[Path, typer.Argument(help="Event payload as JSON (any formatting).")],
    kind: Annotated[str, typer.Option(help=f"Event kind: {', '.join(sorted(BY_KIND))}.")],
    key: Annotated[Path, typer.Option(help="Private key file (NAME.key).")],
) -> None:
    """Validate a payload, encode it canonically (RFC 8785), and print its signed envelope.

    Example: govledger events sign request.json --kind AuthorizationRequested --key keys/alice.key
    """
    model = BY_KIND.get(kind)
    if model is None:
        raise ConfigError(f"unknown kind {kind!r}; one of {', '.join(sorted(BY_KIND))}")
    signer = load_signer(key)
    try:
        event = model.model_validate_json(payload.read_bytes(), strict=False)
    except OSError as exc:
        raise ConfigError(f"cannot read {payload}: {exc.strerror}") from exc
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{payload} is not a valid {kind}:\n{exc}") from exc
    typer.echo(sign_event(event, signer).decode("utf-8"))


def events_verify(
    envelope: Annotated[Path, typer.Argument(help="Envelope file (one trailing newline allowed).")],
    keyring: Annotated[Path, typer.Option(help="Keyring file of trusted principals.")],
    at: Annotated[datetime | None, typer.Option(
        help="Check key validity at this time (default: now).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify an envelope; print its event id and kind, or the reason code (exit 1).

    Example: govledger events verify request.dsse.json --keyring keys/keyring.json
    """
    ring = load_keyring(keyring)
    now = (at or datetime.now(UTC))
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        verified = verify_envelope(read_envelope_file(envelope), ring, now)
    except Rejected as exc:
        emit({"valid": False, "reason": exc.reason.value, "detail": exc.detail}, as_json,
             f"INVALID {exc.reason.value}: {exc.detail}")
        raise typer.Exit(EXIT_INVALID) from exc
    emit({"valid": True, "event_id": verified.event_id, "kind": verified.kind,
          "signer": verified.event.signer, "tenant": verified.event.tenant}, as_json,
         f"OK {verified.kind} {verified.event_id} signed by {verified.event.signer}")


def schema_export(
    directory: Annotated[Path, typer.Argument(help="Directory to write the schemas into.")],
) -> None:
    """Write the JSON Schemas of every event kind and of the envelope into DIR.

    Example: govledger schema export ./schemas
    """
    for path in export_schemas(directory):
        typer.echo(str(path))
