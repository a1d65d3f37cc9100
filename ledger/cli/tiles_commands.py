"""``govledger ledger export-tiles`` and ``govledger ledger mirror``: the log as C2SP
tlog-tiles static files, written from the local ledger or mirrored (verified) from an API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from ledger.cli.client_commands import ApiKey, TokenFile, api_auth
from ledger.cli.ledger_commands import vkey_text
from ledger.cli.options import DataOpt, JsonFlag, emit, settings_from
from ledger.cli.remote import RemoteLog
from ledger.log.mirror import mirror_log
from ledger.log.tiles import export_tiles

DirArg = Annotated[Path, typer.Argument(help="The directory of static tlog-tiles files.")]


def export_tiles_cmd(out: DirArg, data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Write the log as C2SP tlog-tiles static files (checkpoint, tiles, entry bundles).

    Under the latest signed checkpoint: DIR/checkpoint, DIR/tile/<L>/<N>[.p/<W>] and
    DIR/tile/entries/<N>[.p/<W>], for a CDN or an object store to serve as they are.

    Re-running writes only what changed; a full tile already in DIR with other bytes, or a
    checkpoint in DIR of another log or of a larger tree, is refused (exit 1). Full tiles
    never change: serve them with a long cache lifetime, and `checkpoint` with a short one.
    Example: govledger ledger export-tiles ./tiles
    """
    data_dir = settings_from(data).data_dir
    with Progress(transient=True, disable=as_json) as progress:
        task = progress.add_task("exporting tiles", total=None)
        report = export_tiles(data_dir, out, progress=lambda done, total: progress.update(
            task, completed=done, total=total))
    emit({"tree_size": report.tree_size, "written": report.written,
          "unchanged": report.unchanged, "dir": str(out)}, as_json,
         f"exported tree size {report.tree_size} to {out}: {report.written} files written, "
         f"{report.unchanged} unchanged")


def mirror_cmd(
    out: DirArg,
    api: Annotated[str, typer.Option(
        "--api", help="The log's tlog-tiles prefix: a govledger API (http://host:port) or "
        "any server of exported tiles.")],
    vkey: Annotated[str, typer.Option(
        help="The log's vkey (text, or a file holding it): the checkpoint must be signed "
        "by it. Get it from the log's operator, not from the log you are checking.")],
    origin: Annotated[str | None, typer.Option(
        help="The log's origin (default: the name in the vkey; afterwards: the origin the "
        "mirror holds).")] = None,
    key: ApiKey = None,
    token_file: TokenFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Mirror a log's tiles into DIR over HTTP, verifying every step from what DIR holds.

    The entry bundles hold every tenant's events: a govledger API serves them only to a
    principal of tenant * (an operator or auditor key with --key, or --token-file); the
    checkpoint and hash tiles are public.

    The checkpoint under --vkey,
    consistency from the checkpoint DIR holds to the new one, every changed tile rebuilt
    from the entries and compared byte for byte. A log that went back, forked or rewrote
    history is refused (exit 1) and nothing of it is stored; DIR/checkpoint is written last
    and is the verified state the next run starts from.

    Example: govledger ledger mirror ./mirror --api http://127.0.0.1:8080 --vkey ledger.vkey
    --key keys/auditor.key
    """
    with RemoteLog(api, auth=api_auth(key, token_file)) as remote, \
            Progress(transient=True, disable=as_json) as progress:
        task = progress.add_task("mirroring", total=None)
        report = mirror_log(remote.get, out, vkey_text(vkey), origin=origin,
                            progress=lambda done, total: progress.update(
                                task, completed=done, total=total))
    emit({"origin": report.origin, "old_size": report.old_size, "new_size": report.new_size,
          "root_hash": report.root_hash, "tiles_fetched": report.tiles_fetched,
          "bundles_fetched": report.bundles_fetched, "files_written": report.files_written},
         as_json,
         f"OK {report.origin}: {report.old_size} -> {report.new_size} (root "
         f"{report.root_hash[:16]}...), {report.tiles_fetched} tiles and "
         f"{report.bundles_fetched} entry bundles verified"
         if report.new_size != report.old_size else
         f"OK {report.origin}: up to date at {report.new_size}")

