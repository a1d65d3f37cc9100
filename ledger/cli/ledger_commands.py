"""``govledger init`` and ``govledger ledger ...``: set up the data directory, append, read
the latest checkpoint, export proof bundles, verify them offline, audit the whole log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import Progress

from ledger.cli.client_commands import ApiKey, TokenFile, api_auth
from ledger.cli.options import EXIT_INVALID, DataOpt, JsonFlag, emit, settings_from
from ledger.cli.remote import RemoteLog, fetch_url
from ledger.core.bundles import Bundle, verify_bundle
from ledger.core.cosignature import WitnessPolicy
from ledger.datadir import DataDir, init_data_dir
from ledger.errors import ConfigError, ProofError
from ledger.keyfiles import load_signer_keys
from ledger.log.audit import audit_ledger
from ledger.log.ledger_dir import VKEY_NAME, append_jsonl, latest_checkpoint, ledger_info
from ledger.log.proofs import (
    bundle_json,
    prove_consistency,
    prove_inclusion,
    prove_lineage,
    verify_bundle_bytes,
    verify_bundle_file,
)
from ledger.server.children import check_decision_side


def ledger_init(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Create the data directory's keys, keyring, example policies and empty ledger.

    Keeps what works, finishes an interrupted setup. Example: govledger ledger init --data
    ./govledger-data
    """
    init(data, as_json)


def init(data: DataOpt = None, as_json: JsonFlag = False,
         genesis: Annotated[bool, typer.Option(
             "--genesis", help="Also write the governance genesis now, from keyring.json and "
             "policies/ (a split deployment, where no `govledger up` writes it on its first "
             "start; edit keyring.json before, not after).")] = False) -> None:
    """Create what the service needs in the data directory; keep what works.

    Authority, operator (admin) and ledger keys (0600; elsewhere than DATA/keys with
    GOVLEDGER_AUTHORITY_KEY_FILE, GOVLEDGER_OPERATOR_KEY_FILE and
    GOVLEDGER_LEDGER_KEY_FILE), a keyring with the authority, the example Cedar policies
    and an empty signed ledger. The first start writes the governance genesis from
    keyring.json and policies/ (docs/governance.md). A setup a crash interrupted is
    finished; a file that does not work is named, with what to do
    (exit 2). Example: govledger init --data ./govledger-data
    """
    settings = settings_from(data)
    report = init_data_dir(settings.data_dir, settings.log_origin,
                           authority_key=settings.authority_key_file,
                           ledger_key=settings.ledger_key_file,
                           operator_key=settings.operator_key_file)
    check_decision_side(settings)  # what the processor loads at start, checked now
    if genesis:
        from ledger.clock import utc_now
        from ledger.server.governance_tools import write_genesis
        if written := write_genesis(settings.data_dir, utc_now(),
                                    authority_key=settings.authority_key_file,
                                    ledger_key=settings.ledger_key_file,
                                    operator_key=settings.operator_key_file):
            report.created.append(f"{settings.data_dir / 'ledger.db'}: governance genesis, "
                                  f"{written} leaves")
    emit({"created": report.created, "kept": report.kept, "repaired": report.repaired,
          "removed": report.removed}, as_json,
         "\n".join([f"removed {p} (left by an interrupted setup)" for p in report.removed] +
                   [f"created {p}" for p in report.created] +
                   [f"redone  {p} (an interrupted setup left it unusable)"
                    for p in report.repaired] +
                   [f"kept    {p}" for p in report.kept]))


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


def ledger_info_cmd(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Origin, tree size, root hash, vkey and latest checkpoint (verified).

    Example: govledger ledger info --json
    """
    info = ledger_info(settings_from(data).data_dir)
    emit({"origin": info.origin, "tree_size": info.tree_size, "root_hash": info.root_hash,
          "vkey": info.vkey, "checkpoint": info.checkpoint}, as_json,
         f"origin     {info.origin}\ntree_size  {info.tree_size}\nroot_hash  "
         f"{info.root_hash}\nvkey       {info.vkey}")


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
ApiOpt = Annotated[str | None, typer.Option(
    "--api", help="Fetch the bundle from this govledger API (http(s)://host:port) instead "
    "of the local data directory.")]
RemoteVkeyOpt = Annotated[str | None, typer.Option(
    "--vkey", help="With --api: verify the fetched bundle under this vkey (text or file) "
    "before writing it; nothing is written if it does not verify.")]


def remote_bundle(api: str, path: str, params: dict[str, str | int | None],
                  vkey: str | None, auth: httpx.Auth | None = None) -> Bundle:
    """A bundle from ``api`` (one of the /v1/proofs/* routes, read with ``auth``), verified
    under ``vkey`` first if one is given. Raises Unavailable, NotFound, ConfigError or
    ProofError."""
    with RemoteLog(api, auth=auth) as remote:
        data = remote.get(path, {k: v for k, v in params.items() if v is not None})
    if vkey is not None:
        verify_bundle(data, vkey_text(vkey))
    try:
        bundle: Bundle = json.loads(data)
    except ValueError as exc:
        raise ProofError(f"{api}{path} did not answer a JSON bundle") from exc
    if not isinstance(bundle, dict):
        raise ProofError(f"{api}{path} did not answer a JSON object")
    return bundle


def reader_auth(api: str | None, key: Path | None, token_file: Path | None) -> httpx.Auth | None:
    """The credential of a read of payloads (inclusion, lineage) from ``api``: required with
    --api (docs/api.md "Authentication"); without --api nothing is read over HTTP and it is
    not used (it may come from the environment). Raises ConfigError."""
    if api is None:
        return None
    auth = api_auth(key, token_file)
    if auth is None:
        raise ConfigError("this proof is read from the API by a reader: give --key (your "
                          "keyring key) or --token-file (an API token)")
    return auth


def vkey_text(vkey: str) -> str:
    """A vkey given as text or as a file holding it."""
    path = Path(vkey)
    if path.is_file():
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return vkey.strip()


def prove_inclusion_cmd(
    index: Annotated[int | None, typer.Option(help="Leaf index.")] = None,
    event_id: Annotated[str | None, typer.Option(help="Event id (hex).")] = None,
    out: OutOpt = None, data: DataOpt = None, api: ApiOpt = None, vkey: RemoteVkeyOpt = None,
    api_key: ApiKey = None, token_file: TokenFile = None,
) -> None:
    """Inclusion proof bundle for one leaf under the latest checkpoint.

    With --api the API answers readers only, about their own tenant: give --key (or
    --token-file). Example: govledger ledger prove inclusion --index 0 --out proof.json;
    remotely: govledger ledger prove inclusion --index 0 --api http://127.0.0.1:8080
    --vkey log.vkey --key keys/alice.key
    """
    if (index is None) == (event_id is None):
        raise ConfigError("give exactly one of --index or --event-id")
    auth = reader_auth(api, api_key, token_file)
    write_bundle(remote_bundle(api, "/v1/proofs/inclusion",
                               {"index": index, "event_id": event_id}, vkey, auth)
                 if api is not None else
                 prove_inclusion(settings_from(data).data_dir, index=index, event_id=event_id),
                 out)


def prove_consistency_cmd(
    old_size: Annotated[int, typer.Option(help="Size of the older tree.")],
    new_size: Annotated[int | None, typer.Option(help="Size of the newer tree "
                                                     "(default: latest).")] = None,
    out: OutOpt = None, data: DataOpt = None, api: ApiOpt = None, vkey: RemoteVkeyOpt = None,
) -> None:
    """Consistency proof bundle between two signed checkpoints.

    Example: govledger ledger prove consistency --old-size 10 --out consistency.json
    (add --api URL to fetch it from a running service)
    """
    write_bundle(remote_bundle(api, "/v1/proofs/consistency",
                               {"old_size": old_size, "new_size": new_size}, vkey)
                 if api is not None else
                 prove_consistency(settings_from(data).data_dir, old_size, new_size), out)


def prove_lineage_cmd(
    event_id: Annotated[str, typer.Option(help="Event id whose chain to export.")],
    out: OutOpt = None, data: DataOpt = None, api: ApiOpt = None,
    api_key: ApiKey = None, token_file: TokenFile = None,
) -> None:
    """Evidence bundle: the event's chain back to its lineage root, each hop proven.

    Example: govledger ledger prove lineage --event-id <hex> --out evidence.json (add --api
    URL and --key or --token-file to fetch it from a running service as a reader of its
    tenant; verify it with `govledger ledger verify`, which also checks who signed each hop)
    """
    auth = reader_auth(api, api_key, token_file)
    write_bundle(remote_bundle(api, "/v1/proofs/lineage", {"event_id": event_id}, None, auth)
                 if api is not None else
                 prove_lineage(settings_from(data).data_dir, event_id), out)


def ledger_verify(
    bundle: Annotated[str, typer.Argument(
        help="A proof or evidence bundle (JSON): a file, or an http(s):// URL to fetch it "
             "from (a govledger API's /v1/proofs/... route).")],
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
    witness: Annotated[list[str] | None, typer.Option(
        help="A witness's cosignature vkey (text or a file holding it; repeat for each "
             "witness): the bundle's checkpoint must be cosigned by --witness-quorum of "
             "them.")] = None,
    witness_quorum: Annotated[int | None, typer.Option(
        min=1, help="How many of the --witness keys must have cosigned (default: all).")
    ] = None,
    as_json: JsonFlag = False, api_key: ApiKey = None, token_file: TokenFile = None,
) -> None:
    """Verify a bundle offline: the checkpoint under the vkey, the proofs, who signed each
    leaf under the keys given and, with --witness, that k witnesses cosigned the checkpoint
    (exit 1 if invalid or witnessed by fewer, 2 if a lineage bundle gets no keys).

    Example: govledger ledger verify evidence.json --data govledger-data
    --witness w1.vkey --witness w2.vkey --witness-quorum 1; over HTTP:
    govledger ledger verify "http://127.0.0.1:8080/v1/proofs/inclusion?index=0" --vkey log.vkey
    --key keys/alice.key (inclusion and lineage bundles are read with --key or --token-file)
    """
    if data is not None:
        vkey = vkey or str(data / VKEY_NAME)
        keyring = keyring or DataDir(data).keyring
    if vkey is None:
        raise ConfigError("give --vkey (or --data)")
    signers = load_signer_keys(authority, keyring)
    policy = _witness_policy(witness or [], witness_quorum)
    # Fetched before the check: an API that cannot answer is not an invalid bundle.
    fetched = (fetch_url(bundle, api_auth(api_key, token_file))
               if bundle.startswith(("http://", "https://")) else None)
    try:
        key = Path(vkey) if Path(vkey).exists() else vkey
        result = (verify_bundle_file(Path(bundle), key, signers, witnesses=policy)
                  if fetched is None else
                  verify_bundle_bytes(fetched, key, signers, witnesses=policy))
    except ProofError as exc:
        emit({"valid": False, "error": str(exc)}, as_json, f"INVALID: {exc}")
        raise typer.Exit(EXIT_INVALID) from exc
    unchecked = "" if result.signers_checked or result.kind == "consistency" else (
        "; leaf signer NOT checked (give --authority, --keyring or --data)")
    witnessed = "" if policy is None else (
        f", cosigned by {len(result.witnesses)} of {len(policy.keys)} witnesses "
        f"(quorum {policy.quorum})")
    emit({"valid": True, "kind": result.kind, "origin": result.origin,
          "tree_size": result.tree_size, "root_hash": result.root_hash,
          "event_ids": list(result.event_ids), "signers_checked": result.signers_checked,
          "witnesses": list(result.witnesses)},
         as_json,
         f"OK {result.kind} proof under {result.origin} at size {result.tree_size} "
         f"(root {result.root_hash[:16]}...)" +
         (f", {len(result.event_ids)} event(s)" if result.event_ids else "") + witnessed
         + unchecked)


def _witness_policy(vkeys: list[str], quorum: int | None) -> WitnessPolicy | None:
    """--witness / --witness-quorum as a policy (None without --witness). Raises
    ConfigError."""
    if not vkeys:
        if quorum is not None:
            raise ConfigError("--witness-quorum needs --witness")
        return None
    texts = []
    for value in vkeys:
        path = Path(value)
        try:
            texts.append(path.read_text().strip() if path.is_file() else value)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return WitnessPolicy.of(texts, len(texts) if quorum is None else quorum)


def ledger_audit(
    keyring: Annotated[Path | None, typer.Option(
        help="Also trust this keyring's keys (a ledger written before governance events; "
             "default: only the keys the ledger's own governance events registered, from "
             "keys/operator.pub and keys/authority.pub; for a data directory without them, "
             "keyring.json).")] = None,
    data: DataOpt = None, as_json: JsonFlag = False,
) -> None:
    """Recompute every leaf, node, checkpoint and signature; report the first divergence.

    Example: govledger ledger audit
    """
    settings = settings_from(data)
    ring = keyring
    if ring is None and not (settings.data_dir / "keys" / "operator.pub").exists():
        ring = settings.data_dir / "keyring.json"
    report = audit_ledger(settings.data_dir, ring if ring is not None and ring.exists() else None)
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
