"""``govledger tokens create``: an API bearer token for one principal of the keyring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import DataOpt, JsonFlag, emit, settings_from
from ledger.datadir import DataDir
from ledger.errors import ConfigError
from ledger.keyfiles import load_keyring, write_atomic
from ledger.server.tokens import TOKENS_FILE, create_token


def tokens_create(
    identity: Annotated[str, typer.Argument(help="The principal's identity in the keyring.")],
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
    ring = load_keyring(DataDir(settings.data_dir).keyring)
    matches = [p for p in ring.principals() if p.identity == identity]
    if len(matches) != 1:
        raise ConfigError(f"{identity} has {len(matches)} keys in the keyring; a token is "
                          "bound to exactly one")
    if out.exists():
        raise ConfigError(f"{out} exists; a token file is never overwritten")
    principal = matches[0]
    token = create_token(settings.data_dir / TOKENS_FILE, principal.key_id, identity, comment)
    write_atomic(out, (token + "\n").encode(), mode=0o600)
    emit({"identity": identity, "key_id": principal.key_id, "token_file": str(out)}, as_json,
         f"token for {identity} written to {out} (restart the API to load it)")
