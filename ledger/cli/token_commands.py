"""``govledger tokens create``: an API bearer token for one principal in force (the keys the
ledger's governance has registered and not revoked, a key registered live included)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import DataOpt, JsonFlag, emit, settings_from
from ledger.errors import ConfigError
from ledger.keyfiles import write_atomic
from ledger.log.governance import keyring_in_force
from ledger.server.tokens import TOKENS_FILE, create_token


def tokens_create(
    identity: Annotated[str, typer.Argument(
        help="The principal's identity, as registered in the ledger's governance.")],
    out: Annotated[Path, typer.Option(
        help="Where to write the token (created 0600; never overwritten).")],
    data: DataOpt = None,
    comment: Annotated[str, typer.Option(help="A note stored beside the hash.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create an API bearer token bound to IDENTITY's key, for clients that cannot sign
    requests (curl). Only its SHA-256 is stored (DATA/api-tokens.json, read when the API
    starts: restart it); the token itself is written once, to --out. It reads what IDENTITY
    may read, and stops working when that key is revoked or expires.

    Example: govledger tokens create agent:alice --data ./data --out alice.token
    """
    settings = settings_from(data)
    ring = keyring_in_force(settings.data_dir)
    matches = [p for p in ring.principals()
               if p.identity == identity and p.revoked_at is None]
    if len(matches) != 1:
        raise ConfigError(f"{identity} has {len(matches)} keys in force in the ledger's "
                          "governance; a token is bound to exactly one")
    if out.exists():
        raise ConfigError(f"{out} exists; a token file is never overwritten")
    principal = matches[0]
    token = create_token(settings.data_dir / TOKENS_FILE, principal.key_id, identity, comment)
    write_atomic(out, (token + "\n").encode(), mode=0o600)
    emit({"identity": identity, "key_id": principal.key_id, "token_file": str(out)}, as_json,
         f"token for {identity} written to {out} (restart the API to load it)")
