"""Commands that talk to a running service as a client: ``submit`` and ``decision`` over
its HTTP API, ``exec`` through the gate (Kafka for the verdict, the API for the proof).

Reads from the API are authenticated (docs/api.md "Authentication"): ``--key`` signs each
request with your keyring key (RFC 9421), or ``--token-file`` sends a bearer token; ``exec``
signs its log check with the runtime's ``--key``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import httpx
import typer

from ledger.cli.options import (
    EXEC_NOT_EXECUTABLE,
    EXEC_NOT_FOUND,
    EXEC_REFUSED,
    EXEC_UNAVAILABLE,
    EXIT_INVALID,
    DataOpt,
    JsonFlag,
    KafkaOpt,
    emit,
    read_envelope_file,
    settings_from,
)
from ledger.config import Settings
from ledger.core.keys import Signer
from ledger.errors import ConfigError, ProofError, Rejected, Unavailable
from ledger.keyfiles import load_keyring, load_signer
from ledger.log.ledger_dir import read_vkey
from ledger.sdk.httpsig import SignedRequests, bearer

ApiUrl = Annotated[str, typer.Option("--api", envvar="GOVLEDGER_API",
                                     help="Base URL of a running govledger API.")]
ApiKey = Annotated[Path | None, typer.Option(
    "--key", envvar="GOVLEDGER_API_KEY_FILE",
    help="Your private key file (a principal of the keyring with a read role): every "
    "request is signed with it (RFC 9421 HTTP Message Signatures).")]
TokenFile = Annotated[Path | None, typer.Option(
    "--token-file", envvar="GOVLEDGER_API_TOKEN_FILE",
    help="A file holding an API bearer token (govledger tokens create), instead of --key.")]


def api_auth(key: Path | None, token_file: Path | None) -> httpx.Auth | None:
    """The credential the flags give (None: none). Raises ConfigError."""
    if key is not None and token_file is not None:
        raise ConfigError("give --key or --token-file, not both")
    if key is not None:
        return SignedRequests(load_signer(key))
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {token_file}: {exc.strerror}") from exc
        return bearer(token)
    return None


def submit(
    envelope: Annotated[Path, typer.Argument(help="Signed envelope file (events sign).")],
    api_url: ApiUrl, as_json: JsonFlag = False, key: ApiKey = None,
    token_file: TokenFile = None,
) -> None:
    """Submit a signed envelope to a running service through its HTTP API.

    Prints the event id (the request id for a request). Exit 1 if the API refuses it. No
    credential is needed (the envelope is signed); one that is given must verify.
    Example: govledger submit request.dsse.json --api http://127.0.0.1:8080
    """
    response = http_call("POST", api_url, "/v1/events", content=read_envelope_file(envelope),
                         auth=api_auth(key, token_file))
    body = response.json()
    if response.status_code != 202:
        emit(body, as_json, f"REFUSED {body.get('reason')}: {body.get('detail', '')}")
        raise typer.Exit(EXIT_INVALID)
    emit(body, as_json, body["event_id"])


def decision(
    subject_id: Annotated[str, typer.Argument(help="Request, execution or revocation id.")],
    api_url: ApiUrl,
    wait: Annotated[float, typer.Option(help="Seconds to wait for it (0-30).")] = 10.0,
    as_json: JsonFlag = False, key: ApiKey = None, token_file: TokenFile = None,
) -> None:
    """Fetch the signed decision for an id (exit 0 allowed, 1 denied or none yet).

    The API answers readers only, about their own tenant: give --key (or --token-file).
    Example: govledger decision <request-id> --api http://127.0.0.1:8080 --wait 10
    --key keys/alice.key
    """
    auth = api_auth(key, token_file)
    if auth is None:
        raise ConfigError("decision reads from the API: give --key (your keyring key) or "
                          "--token-file (an API token)")
    response = http_call("GET", api_url, f"/v1/decisions/{subject_id}",
                         params={"wait": wait}, timeout=wait + 10, auth=auth)
    body = response.json()
    if response.status_code != 200:
        emit(body, as_json, f"NONE {body.get('reason', response.status_code)}")
        raise typer.Exit(EXIT_INVALID)
    reasons = ",".join(body.get("reasons") or [])
    emit(body, as_json, f"{'ALLOWED' if body['allow'] else 'DENIED'} {body['kind']} "
         f"{body['event_id']}" + (f" {reasons}" if reasons else ""))
    if not body["allow"]:
        raise typer.Exit(EXIT_INVALID)


def http_call(method: str, base: str, path: str, timeout: float = 30.0,
              **kwargs: object) -> httpx.Response:
    try:
        return httpx.request(method, base.rstrip("/") + path, timeout=timeout,
                             **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach the govledger API at {base}: {exc}") from exc


def exec_gated(
    ctx: typer.Context,
    artifact: Annotated[Path, typer.Option(help="The grant envelope (the artifact).")],
    action: Annotated[str, typer.Option(help="The action the command performs.")],
    resource: Annotated[str, typer.Option(help="The concrete resource it acts on.")],
    key: Annotated[Path, typer.Option(help="This runtime's private key file.")],
    environment: Annotated[str, typer.Option(
        help="The measured runtime environment digest (sha256:<hex>).")],
    data: DataOpt = None, kafka: KafkaOpt = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the artifact's inclusion proof, then for the verdict.")
    ] = 10.0,
    api_url: Annotated[str | None, typer.Option(
        "--api", envvar="GOVLEDGER_API",
        help="Base URL of the govledger API that proves the artifact is logged.")] = None,
    allow_unlogged: Annotated[bool, typer.Option(
        "--allow-unlogged", help="Skip the proof that the artifact is logged (weaker: "
        "nothing shows the artifact is in the ledger before the command runs).")] = False,
) -> None:
    """Run a command only if the gate allows it: the artifact verified offline, proven in
    the ledger under a signed checkpoint (against --data's ledger.vkey, via --api), then the
    processor's signed ExecutionAllowed. Reports completion or failure.

    Exit status: the command's own once it ran (128+N if killed by signal N); 125 refused by
    the gate (the command did not run); 124 no verdict (the service unavailable; it did not
    run); 126 the command could not be executed, 127 it was not found (both reported as
    failed executions); 2 a usage error before anything ran.

    The keyring of --data says who this runtime is and which keys sign decisions.
    Example: govledger exec --artifact grant.json --action read --resource db/orders/1
    --key keys/runner.key --environment sha256:... --kafka 127.0.0.1:9092
    --api http://127.0.0.1:8080 -- ./job.sh
    """
    if not ctx.args:
        raise ConfigError("give the command to run after --")
    settings = settings_from(data, kafka)
    if settings.kafka_bootstrap is None:
        raise ConfigError("exec needs --kafka (or GOVLEDGER_KAFKA_BOOTSTRAP) of the service")
    if api_url is None and not allow_unlogged:
        raise ConfigError("exec proves the artifact is logged: give --api (or GOVLEDGER_API) "
                          "of the service, or --allow-unlogged to skip that check (weaker)")
    grant, runtime = read_envelope_file(artifact), load_signer(key)
    try:
        code = asyncio.run(run_gated(settings, grant, action, resource, runtime, environment,
                                     timeout, ctx.args, None if allow_unlogged else api_url))
    except Unavailable as exc:  # the command did not run: not to be mistaken for its status
        typer.echo(f"govledger: unavailable: {exc}", err=True)
        raise typer.Exit(EXEC_UNAVAILABLE) from exc
    except (Rejected, ProofError) as exc:
        typer.echo(f"REFUSED: {exc}", err=True)
        raise typer.Exit(EXEC_REFUSED) from exc
    raise typer.Exit(code)


async def run_gated(settings: Settings, grant: bytes, action: str, resource: str,
                    runtime: Signer, environment: str, timeout: float,
                    command: list[str], api_url: str | None) -> int:
    """``api_url`` None: no log check (``--allow-unlogged``)."""
    from ledger.sdk.client import Client
    from ledger.sdk.gate import ExecutionRefusedError, Gate, http_log_check
    keyring = load_keyring(settings.data_dir / "keyring.json")
    principal = keyring.get(runtime.key_id)
    logged = None if api_url is None else http_log_check(
        api_url, read_vkey(settings.data_dir), auth=SignedRequests(runtime))
    assert settings.kafka_bootstrap is not None
    async with Client(settings, settings.kafka_bootstrap, keyring) as client:
        gate = Gate(client, runtime, principal, keyring, measure=lambda: environment,
                    timeout=timeout, require_logged=logged, allow_unlogged=logged is None)
        try:
            async with gate.authorize(grant, action, resource):
                typer.echo(f"ALLOWED {action} {resource}: running {' '.join(command)}",
                           err=True)
                code = await _run(command)
                if code != 0:
                    raise CommandFailedError(code)  # the gate reports ExecutionFailed
        except ExecutionRefusedError as exc:
            typer.echo(f"REFUSED {exc.reason.value}: {exc.detail}", err=True)
            return EXEC_REFUSED
        except CommandFailedError as exc:
            return exc.code
    return 0


async def _run(command: list[str]) -> int:
    """The command's exit status (128+N for signal N, as a shell says); 127 if not found,
    126 if not executable."""
    try:
        proc = await asyncio.create_subprocess_exec(*command)
    except FileNotFoundError:
        typer.echo(f"govledger: {command[0]}: command not found", err=True)
        return EXEC_NOT_FOUND
    except PermissionError:
        typer.echo(f"govledger: {command[0]}: cannot execute", err=True)
        return EXEC_NOT_EXECUTABLE
    code = await proc.wait()
    return 128 - code if code < 0 else code


class CommandFailedError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exit {code}")
