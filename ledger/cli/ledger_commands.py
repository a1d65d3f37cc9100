"""``govledger init`` and ``govledger ledger ...``: set up the data directory, append, read
the latest checkpoint, export proof bundles, verify them offline, audit the whole log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from ledger.cli.options import EXIT_INVALID, DataOpt, JsonFlag, emit, settings_from
from ledger.datadir import DataDir, init_data_dir
from ledger.errors import ConfigError, ProofError
from ledger.keyfiles import load_signer_keys
from ledger.log.audit import audit_ledger
from ledger.log.proofs import (
    bundle_json,
    prove_consistency,
    prove_inclusion,
    prove_lineage,
    verify_bundle_file,
)
from ledger.log.sequencer import VKEY_NAME, append_jsonl, latest_checkpoint, ledger_info
from ledger.server.service import check_decision_side


def ledger_init(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Create the data directory's keys, keyring, example policies and empty ledger.

    Keeps what works, finishes an interrupted setup. Example: govledger ledger init --data
    ./govledger-data
    """
    init(data, as_json)


def init(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Create what the service needs in the data directory; keep what works.

    Authority and ledger keys (0600; elsewhere than DATA/keys with
    GOVLEDGER_AUTHORITY_KEY_FILE and GOVLEDGER_LEDGER_KEY_FILE), a keyring with the
    authority, the example Cedar policies and an empty signed ledger. A setup a crash
    interrupted is finished; a file that does not work is named, with what to do (exit 2).
    Example: govledger init --data ./govledger-data
    """
    settings = settings_from(data)
    report = init_data_dir(settings.data_dir, settings.log_origin,
                           authority_key=settings.authority_key_file,
                           ledger_key=settings.ledger_key_file)
    check_decision_side(settings)  # what the processor loads at start, checked now
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


def prove_lineage_cmd(
    event_id: Annotated[str, typer.Option(help="Event id whose chain to export.")],
    out: OutOpt = None, data: DataOpt = None,
) -> None:
    """Evidence bundle: the event's chain back to its lineage root, each hop proven.

    Example: govledger ledger prove lineage --event-id <hex> --out evidence.json
    """
    write_bundle(prove_lineage(settings_from(data).data_dir, event_id), out)


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
