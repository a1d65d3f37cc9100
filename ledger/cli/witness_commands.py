"""``govledger witness``: run a C2SP tlog-witness that cosigns other logs' checkpoints
(``init``, ``add-log``, ``serve``; the files: :mod:`ledger.log.witness`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from ledger.cli.options import JsonFlag, configure_logging, emit
from ledger.errors import ConfigError
from ledger.log.witness import VKEY_NAME, Witness, add_log, init_witness, load_config
from ledger.server.witness_api import make_witness_api

DirOpt = Annotated[Path, typer.Option("--dir", help="The witness directory.")]


def witness_init(
    directory: DirOpt,
    name: Annotated[str, typer.Option(
        help="The witness's name in its cosignatures: a schema-less URL, no spaces or '+' "
             "(e.g. witness.example.org/w1).")],
    as_json: JsonFlag = False,
) -> None:
    """Create a witness: its Ed25519 key (DIR/witness.key, 0600, never share it), its
    cosignature vkey (DIR/witness.vkey: give it to the logs and clients) and an empty list
    of logs.

    Example: govledger witness init --dir witness --name witness.example.org/w1
    """
    vkey = init_witness(directory, name)
    emit({"vkey": vkey, "dir": str(directory)}, as_json,
         f"witness created in {directory}\nvkey: {vkey}")


def witness_add_log(
    directory: DirOpt,
    origin: Annotated[str, typer.Option(help="The log's origin line.")],
    vkey: Annotated[str, typer.Option(
        help="The log's C2SP vkey text, or a file holding it (a govledger log's "
             "DATA/ledger.vkey).")],
) -> None:
    """Configure a log this witness cosigns (restart `witness serve` to pick it up).

    Example: govledger witness add-log --dir witness --origin govledger.localhost/log
    --vkey govledger-data/ledger.vkey
    """
    path = Path(vkey)
    if path.is_file():
        try:
            vkey = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    add_log(directory, origin, vkey)
    typer.echo(f"log {origin} added")


def witness_serve(
    directory: DirOpt,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 7380,
) -> None:
    """Serve POST /add-checkpoint (C2SP tlog-witness) for the configured logs until
    SIGINT/SIGTERM. The state (DIR/witness.db) never moves backwards.

    Example: govledger witness serve --dir witness --port 7380
    """
    configure_logging()
    witness = Witness(directory)
    if not load_config(directory).logs:
        logging.getLogger("govledger").warning(
            "no logs configured: every request is refused (govledger witness add-log)")
    logging.getLogger("govledger").info("witness %s on http://%s:%d (vkey in %s)",
                                        witness.config.name, host, port,
                                        directory / VKEY_NAME)
    try:
        uvicorn.run(make_witness_api(witness), host=host, port=port, log_level="warning",
                    lifespan="off", access_log=False)
    finally:
        witness.close()
