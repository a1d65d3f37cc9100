"""``govledger``: one command per library call.

Exit codes: 0 ok; 1 verification failed or denied; 2 usage or configuration error;
3 the system is unavailable (broker, ledger). ``main()`` catches GovLedgerError once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import pydantic
import typer
from rich.progress import Progress

from ledger.config import Settings, load_settings
from ledger.core.envelope import sign_event, verify_envelope
from ledger.core.events import BY_KIND
from ledger.core.keys import Principal, Signer, principal_document
from ledger.datadir import DataDir, init_data_dir
from ledger.errors import ConfigError, GovLedgerError, ProofError, Rejected, Unavailable
from ledger.kafka.clients import client_options
from ledger.kafka.topics import Topics, ensure_topics
from ledger.keyfiles import (
    generate_keypair,
    load_keyring,
    load_signer,
    load_signer_keys,
    write_atomic,
)
from ledger.log.audit import audit_ledger
from ledger.log.proofs import (
    bundle_json,
    prove_consistency,
    prove_inclusion,
    prove_lineage,
    verify_bundle_file,
)
from ledger.log.sequencer import VKEY_NAME, append_jsonl, latest_checkpoint, ledger_info, read_vkey
from ledger.schema import export_schemas
from ledger.server.service import COMPONENTS, Service, check_decision_side, run_service

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
ledger_app = typer.Typer(help="The Merkle ledger: append, prove, verify, audit.",
                         no_args_is_help=True)
prove_app = typer.Typer(help="Export proof bundles that verify offline.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
ledger_app.add_typer(prove_app, name="prove")
app.add_typer(ledger_app, name="ledger")
app.add_typer(topics_app, name="topics")

DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Data directory (default: $GOVLEDGER_DATA_DIR or ./govledger-data).")]
KafkaOpt = Annotated[str | None, typer.Option(
    "--kafka", help="Kafka bootstrap host:port (default: $GOVLEDGER_KAFKA_BOOTSTRAP; unset = "
    "start the embedded broker).")]

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


def settings_from(data: Path | None = None, kafka: str | None = None,
                  **overrides: object) -> Settings:
    """Settings from the environment plus the command's flags (flags win)."""
    if data is not None:
        overrides["data_dir"] = data
    if kafka is not None:
        overrides["kafka_bootstrap"] = kafka
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


# -- the ledger ---------------------------------------------------------------------------


@ledger_app.command("init")
def ledger_init(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Create the data directory's keys, keyring, example policies and empty ledger.

    Keeps what works, finishes an interrupted setup. Example: govledger ledger init --data
    ./govledger-data
    """
    init(data, as_json)


@app.command("init")
def init(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Create what the service needs in the data directory; keep what works.

    Authority and ledger keys (0600), a keyring with the authority, the example Cedar
    policies and an empty signed ledger. A setup a crash interrupted is finished; a file that
    does not work is named, with what to do (exit 2). Example: govledger init --data
    ./govledger-data
    """
    settings = settings_from(data)
    report = init_data_dir(settings.data_dir, settings.log_origin)
    check_decision_side(settings)  # what the processor loads at start, checked now
    emit({"created": report.created, "kept": report.kept, "repaired": report.repaired,
          "removed": report.removed}, as_json,
         "\n".join([f"removed {p} (left by an interrupted setup)" for p in report.removed] +
                   [f"created {p}" for p in report.created] +
                   [f"redone  {p} (an interrupted setup left it unusable)"
                    for p in report.repaired] +
                   [f"kept    {p}" for p in report.kept]))


@ledger_app.command("append")
def ledger_append(
    jsonl: Annotated[Path, typer.Argument(help="File with one envelope per line.")],
    keyring: Annotated[Path, typer.Option(help="Keyring the envelopes must verify against.")],
    data: DataOpt = None, as_json: JsonFlag = False,
) -> None:
    """Verify and append envelopes; report appended / duplicates / refused.

    Example: govledger ledger append events.jsonl --keyring keys/keyring.json
    """
    settings = settings_from(data)
    total = sum(1 for line in jsonl.open("rb") if line.strip()) if jsonl.exists() else 0
    with Progress(transient=True, disable=as_json or total < 5000) as progress:
        task = progress.add_task("appending", total=total)
        counts = append_jsonl(settings.data_dir, jsonl, keyring,
                              progress=lambda done: progress.update(task, completed=done))
    emit({"appended": counts.appended, "duplicates": counts.duplicates,
          "refused": counts.refused, "refused_reasons": counts.reasons}, as_json,
         f"appended {counts.appended}, skipped {counts.duplicates} duplicates, refused "
         f"{counts.refused}" + (f" {counts.reasons}" if counts.reasons else ""))
    if counts.refused:
        raise typer.Exit(EXIT_INVALID)


@ledger_app.command("info")
def ledger_info_cmd(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Origin, tree size, root hash, vkey and latest checkpoint (verified).

    Example: govledger ledger info --json
    """
    info = ledger_info(settings_from(data).data_dir)
    emit({"origin": info.origin, "tree_size": info.tree_size, "root_hash": info.root_hash,
          "vkey": info.vkey, "checkpoint": info.checkpoint}, as_json,
         f"origin     {info.origin}\ntree_size  {info.tree_size}\nroot_hash  "
         f"{info.root_hash}\nvkey       {info.vkey}")


@ledger_app.command("checkpoint")
def ledger_checkpoint(data: DataOpt = None) -> None:
    """Print the latest signed checkpoint note exactly (with its final newline).

    Example: govledger ledger checkpoint > checkpoint.txt
    """
    sys.stdout.write(latest_checkpoint(settings_from(data).data_dir))


def write_bundle(bundle: dict[str, object], out: Path | None) -> None:
    text = bundle_json(bundle)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}", err=True)


OutOpt = Annotated[Path | None, typer.Option("--out", help="Write the bundle to this file.")]


@prove_app.command("inclusion")
def prove_inclusion_cmd(
    index: Annotated[int | None, typer.Option(help="Leaf index.")] = None,
    event_id: Annotated[str | None, typer.Option(help="Event id (hex).")] = None,
    out: OutOpt = None, data: DataOpt = None,
) -> None:
    """Inclusion proof bundle for one leaf under the latest checkpoint.

    Example: govledger ledger prove inclusion --index 0 --out proof.json
    """
    if (index is None) == (event_id is None):
        raise ConfigError("give exactly one of --index or --event-id")
    write_bundle(prove_inclusion(settings_from(data).data_dir, index=index, event_id=event_id),
                 out)


@prove_app.command("consistency")
def prove_consistency_cmd(
    old_size: Annotated[int, typer.Option(help="Size of the older tree.")],
    new_size: Annotated[int | None, typer.Option(help="Size of the newer tree "
                                                     "(default: latest).")] = None,
    out: OutOpt = None, data: DataOpt = None,
) -> None:
    """Consistency proof bundle between two signed checkpoints.

    Example: govledger ledger prove consistency --old-size 10 --out consistency.json
    """
    write_bundle(prove_consistency(settings_from(data).data_dir, old_size, new_size), out)


@prove_app.command("lineage")
def prove_lineage_cmd(
    event_id: Annotated[str, typer.Option(help="Event id whose chain to export.")],
    out: OutOpt = None, data: DataOpt = None,
) -> None:
    """Evidence bundle: the event's chain back to its lineage root, each hop proven.

    Example: govledger ledger prove lineage --event-id <hex> --out evidence.json
    """
    write_bundle(prove_lineage(settings_from(data).data_dir, event_id), out)


@ledger_app.command("verify")
def ledger_verify(
    bundle: Annotated[Path, typer.Argument(help="A proof or evidence bundle (JSON).")],
    vkey: Annotated[str | None, typer.Option(
        help="The log's vkey text, or a file holding it (default with --data: "
             "DIR/ledger.vkey).")] = None,
    authority: Annotated[str | None, typer.Option(
        help="The authority public key (a .pub file or its base64): authority-kind leaves "
             "must be signed with it.")] = None,
    keyring: Annotated[Path | None, typer.Option(
        help="A keyring: every leaf must be signed by one of its keys, authority kinds by "
             "an authority-role key (default with --data: DIR/keyring.json).")] = None,
    data: Annotated[Path | None, typer.Option(
        help="A data directory: its ledger.vkey and keyring.json.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify a bundle offline: the checkpoint under the vkey, the proofs, and who signed
    each leaf under the keys given (exit 1 if invalid, 2 if a lineage bundle gets no keys).

    Example: govledger ledger verify evidence.json --data govledger-data
    """
    if data is not None:
        vkey = vkey or str(data / VKEY_NAME)
        keyring = keyring or DataDir(data).keyring
    if vkey is None:
        raise ConfigError("give --vkey (or --data)")
    signers = load_signer_keys(authority, keyring)
    try:
        result = verify_bundle_file(bundle, Path(vkey) if Path(vkey).exists() else vkey,
                                    signers)
    except ProofError as exc:
        emit({"valid": False, "error": str(exc)}, as_json, f"INVALID: {exc}")
        raise typer.Exit(EXIT_INVALID) from exc
    unchecked = "" if result.signers_checked or result.kind == "consistency" else (
        "; leaf signer NOT checked (give --authority, --keyring or --data)")
    emit({"valid": True, "kind": result.kind, "origin": result.origin,
          "tree_size": result.tree_size, "root_hash": result.root_hash,
          "event_ids": list(result.event_ids), "signers_checked": result.signers_checked},
         as_json,
         f"OK {result.kind} proof under {result.origin} at size {result.tree_size} "
         f"(root {result.root_hash[:16]}...)" +
         (f", {len(result.event_ids)} event(s)" if result.event_ids else "") + unchecked)


@ledger_app.command("audit")
def ledger_audit(
    keyring: Annotated[Path | None, typer.Option(
        help="Also verify every leaf's signature against this keyring "
             "(default: the data directory's keyring.json).")] = None,
    data: DataOpt = None, as_json: JsonFlag = False,
) -> None:
    """Recompute every leaf, node, checkpoint and signature; report the first divergence.

    Example: govledger ledger audit
    """
    settings = settings_from(data)
    ring = keyring or (settings.data_dir / "keyring.json")
    report = audit_ledger(settings.data_dir, ring if ring.exists() else None)
    problems = [{"index": p.index, "what": p.what, "checkpoint": p.checkpoint, "exact": p.exact}
                for p in report.problems]
    emit({"ok": report.ok, "tree_size": report.tree_size,
          "leaves_checked": report.leaves_checked,
          "checkpoints_checked": report.checkpoints_checked,
          "envelopes_checked": report.envelopes_checked,
          "first_bad_index": report.first_bad_index, "what": report.what,
          "bad_checkpoint": report.bad_checkpoint, "problems": problems}, as_json,
         f"OK: {report.leaves_checked} leaves, {report.checkpoints_checked} checkpoints, "
         f"{report.envelopes_checked} signatures verified" if report.ok else
         f"DIVERGED at index {report.first_bad_index}: {report.what}" +
         "".join(f"\n  - {p['index']}: {p['what']}" for p in problems[1:20]))
    if not report.ok:
        raise typer.Exit(EXIT_INVALID)


# -- the service ----------------------------------------------------------------------------


@topics_app.command("create")
def topics_create(
    kafka: KafkaOpt = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic.")] = None,
    replication: Annotated[int | None, typer.Option(help="Replication factor.")] = None,
) -> None:
    """Create the gov.* topics on a Kafka cluster (idempotent).

    Example: GOVLEDGER_KAFKA_BOOTSTRAP=kafka:9092 govledger topics create --partitions 12
    """
    settings = settings_from(kafka=kafka, partitions=partitions,
                             replication_factor=replication)
    if settings.kafka_bootstrap is None:
        raise ConfigError("topics create needs --kafka or GOVLEDGER_KAFKA_BOOTSTRAP")
    names = Topics(settings.topic_prefix).all()
    found = asyncio.run(ensure_topics(settings.kafka_bootstrap, names, settings.partitions,
                                      settings.replication_factor,
                                      client_options=client_options(settings)))
    for name, count in found.items():
        typer.echo(f"{name}: {count} partitions")


def serve(components: tuple[str, ...], settings: Settings,
          ready_file: Path | None = None) -> None:
    configure_logging()

    def ready(service: Service) -> None:
        info = service.describe()
        log = logging.getLogger("govledger")
        for key, value in info.items():
            log.info("%-16s %s", key, value)
        log.info("ready; stop with Ctrl-C (SIGINT) or SIGTERM")
        if ready_file is not None:
            tmp = ready_file.with_suffix(ready_file.suffix + ".tmp")
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            tmp.replace(ready_file)  # readers never see a half-written file

    code = asyncio.run(run_service(settings, components, ready))
    if code:
        raise typer.Exit(code)


ApiHost = Annotated[str | None, typer.Option(help="API listen address.")]
ApiPort = Annotated[int | None, typer.Option(help="API port (0 = a free port).")]


ReadyFile = Annotated[Path | None, typer.Option(
    help="When ready, write the addresses (api, kafka), origin and vkey here as JSON.")]


@app.command("up")
def up(data: DataOpt = None, kafka: KafkaOpt = None, api_host: ApiHost = None,
       api_port: ApiPort = None, ready_file: ReadyFile = None) -> None:
    """Run everything on this machine: broker (embedded unless --kafka), topics, processor,
    sequencer and HTTP API. First start creates keys, keyring and policies and says where.

    Example: govledger up --data ./govledger-data --api-port 8080
    """
    serve(COMPONENTS, settings_from(data, kafka, api_host=api_host, api_port=api_port),
          ready_file)


@app.command("processor")
def processor(data: DataOpt = None, kafka: KafkaOpt = None) -> None:
    """Run one decision worker (scale out with more workers and partitions).

    Example: govledger processor --data /data --kafka kafka:9092
    """
    serve(("processor",), settings_from(data, kafka))


@app.command("sequencer")
def sequencer(data: DataOpt = None, kafka: KafkaOpt = None) -> None:
    """Run the ledger sequencer (exactly one per log).

    Example: govledger sequencer --data /data --kafka kafka:9092
    """
    serve(("sequencer",), settings_from(data, kafka))


@app.command("api")
def api(data: DataOpt = None, kafka: KafkaOpt = None, api_host: ApiHost = None,
        api_port: ApiPort = None) -> None:
    """Run the HTTP API (submit envelopes, decisions, checkpoints, proofs, health, metrics).

    Example: govledger api --data /data --kafka kafka:9092 --api-host 0.0.0.0 --api-port 8080
    """
    serve(("api",), settings_from(data, kafka, api_host=api_host, api_port=api_port))


ApiUrl = Annotated[str, typer.Option("--api", envvar="GOVLEDGER_API",
                                     help="Base URL of a running govledger API.")]


@app.command("submit")
def submit(
    envelope: Annotated[Path, typer.Argument(help="Signed envelope file (events sign).")],
    api_url: ApiUrl, as_json: JsonFlag = False,
) -> None:
    """Submit a signed envelope to a running service through its HTTP API.

    Prints the event id (the request id for a request). Exit 1 if the API refuses it.
    Example: govledger submit request.dsse.json --api http://127.0.0.1:8080
    """
    response = http_call("POST", api_url, "/v1/events", content=read_envelope_file(envelope))
    body = response.json()
    if response.status_code != 202:
        emit(body, as_json, f"REFUSED {body.get('reason')}: {body.get('detail', '')}")
        raise typer.Exit(EXIT_INVALID)
    emit(body, as_json, body["event_id"])


@app.command("decision")
def decision(
    subject_id: Annotated[str, typer.Argument(help="Request, execution or revocation id.")],
    api_url: ApiUrl,
    wait: Annotated[float, typer.Option(help="Seconds to wait for it (0-30).")] = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Fetch the signed decision for an id (exit 0 allowed, 1 denied or none yet).

    Example: govledger decision <request-id> --api http://127.0.0.1:8080 --wait 10
    """
    response = http_call("GET", api_url, f"/v1/decisions/{subject_id}",
                         params={"wait": wait}, timeout=wait + 10)
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


@app.command("exec", context_settings={"allow_extra_args": True,
                                       "ignore_unknown_options": True})
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
    processor's signed ExecutionAllowed. Reports completion or failure; exit 1 if refused.

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
    code = asyncio.run(run_gated(settings, read_envelope_file(artifact), action, resource,
                                 load_signer(key), environment, timeout, ctx.args,
                                 None if allow_unlogged else api_url))
    raise typer.Exit(code)


async def run_gated(settings: Settings, grant: bytes, action: str, resource: str,
                    runtime: Signer, environment: str, timeout: float,
                    command: list[str], api_url: str | None) -> int:
    """``api_url`` None: no log check (``--allow-unlogged``)."""
    from ledger.sdk.client import Client
    from ledger.sdk.gate import ExecutionRefusedError, Gate, http_log_check
    keyring = load_keyring(settings.data_dir / "keyring.json")
    principal = keyring.get(runtime.key_id)
    logged = None if api_url is None else http_log_check(api_url, read_vkey(settings.data_dir))
    assert settings.kafka_bootstrap is not None
    async with Client(settings, settings.kafka_bootstrap, keyring) as client:
        gate = Gate(client, runtime, principal, keyring, measure=lambda: environment,
                    timeout=timeout, require_logged=logged, allow_unlogged=logged is None)
        try:
            async with gate.authorize(grant, action, resource):
                typer.echo(f"ALLOWED {action} {resource}: running {' '.join(command)}",
                           err=True)
                proc = await asyncio.create_subprocess_exec(*command)
                code = await proc.wait()
                if code != 0:
                    raise CommandFailedError(code)
        except ExecutionRefusedError as exc:
            typer.echo(f"REFUSED {exc.reason.value}: {exc.detail}", err=True)
            return EXIT_INVALID
        except CommandFailedError as exc:
            return exc.code
    return 0


class CommandFailedError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exit {code}")


@app.command("demo")
def demo(data: Annotated[Path | None, typer.Option(
        "--data", help="Keep the demo's data directory here (default: a temporary one).")] = None,
         ) -> None:
    """Play the whole product on this machine in under a minute: agents, a delegation chain,
    denials, gated executions, a revocation cascade and an offline-verified evidence bundle.

    Starts its own embedded stack; exits 0 only if every expected outcome happened.
    Example: govledger demo
    """
    from ledger.demo import run_demo
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not run_demo(data):
        raise typer.Exit(EXIT_INVALID)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


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
