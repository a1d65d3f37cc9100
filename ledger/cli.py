"""``govledger``: one command per library call.

Exit codes: 0 ok; 1 verification failed or denied; 2 usage or configuration error;
3 the system is unavailable (broker, ledger). ``main()`` catches GovLedgerError once.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import pydantic
import typer

from ledger.core.envelope import sign_event, verify_envelope
from ledger.core.events import BY_KIND
from ledger.core.keys import Principal, principal_document
from ledger.errors import ConfigError, GovLedgerError, ProofError, Rejected, Unavailable
from ledger.keyfiles import generate_keypair, load_keyring, load_signer
from ledger.schema import export_schemas

EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3

app = typer.Typer(
    name="govledger",
    help=(
        "Pre-execution authorization for autonomous systems: signed requests, fail-closed "
        "decisions, and a Merkle ledger anyone can verify offline."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Generate Ed25519 keys and keyrings.", no_args_is_help=True)
events_app = typer.Typer(help="Sign and verify DSSE event envelopes.", no_args_is_help=True)
schema_app = typer.Typer(help="The published JSON Schemas.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")
app.add_typer(schema_app, name="schema")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def emit(data: dict[str, object], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, sort_keys=True) if as_json else text)


def read_envelope_file(path: Path) -> bytes:
    """Envelope bytes from a file; one trailing newline (as editors add) is not part of them."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return data[:-1] if data.endswith(b"\n") else data


@keys_app.command("generate")
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
    """Append a principal to a keyring file, creating it if missing. Raises ConfigError."""
    if path.exists():
        load_keyring(path)  # refuse to extend a file we cannot read back
        doc = json.loads(path.read_text())
    else:
        doc = {"version": 1, "principals": []}
    doc["principals"].append(dict(principal_document(principal)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


@events_app.command("sign")
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


@events_app.command("verify")
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


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="Directory to write the schemas into.")],
) -> None:
    """Write the JSON Schemas of every event kind and of the envelope into DIR.

    Example: govledger schema export ./schemas
    """
    for path in export_schemas(directory):
        typer.echo(str(path))


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"govledger: {message}", err=True)
    sys.exit(code)


def main() -> None:
    """Console entry point: the one place GovLedgerError becomes an exit code."""
    try:
        app(standalone_mode=True)
    except Rejected as exc:
        fail(str(exc), EXIT_INVALID)
    except ProofError as exc:
        fail(f"verification failed: {exc}", EXIT_INVALID)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except Unavailable as exc:
        fail(f"unavailable: {exc}", EXIT_UNAVAILABLE)
    except GovLedgerError as exc:
        fail(str(exc), EXIT_INVALID)


if __name__ == "__main__":
    main()
