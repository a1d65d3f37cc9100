"""The C2SP tlog-tiles read API (https://c2sp.org/tlog-tiles) of the HTTP API.

``GET /checkpoint`` (the latest signed checkpoint, cacheable for seconds),
``GET /tile/<L>/<N>[.p/<W>]`` and ``GET /tile/entries/<N>[.p/<W>]`` (bytes, as
``ledger.log.tiles`` reads them under the latest published checkpoint). The checkpoint and
the hash tiles carry only hashes and stay public; an entry bundle carries every tenant's
full envelopes, so it is served only to an authenticated reader of tenant ``*`` (an operator
or an auditor: 401 without a credential, 403 for any other tenant), with ``private`` caching
(a shared cache must not hand it to anyone else). Full tiles and bundles never change: a
year of cache, ``immutable``; a partial one is cached for seconds (the log may drop it once
the full tile exists). Entry bundles are gzip-compressed for a
client that accepts it (the spec's SHOULD; ``Vary: Accept-Encoding``). A malformed path is
400 MALFORMED, a tile past the published tree size 404 NOT_FOUND, an entry too long for a
bundle 500 ENTRY_TOO_LARGE. Reads go through the same verified, per-thread read-only stores as the
other ledger routes (``routes_ledger.LedgerReads``): 503 until the sequencer has verified
the ledger.
"""

from __future__ import annotations

import gzip
from typing import Final

from fastapi import FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ledger.core.tenancy import ALL_TENANTS
from ledger.core.tiles import EntryTooLarge, parse_tile_path
from ledger.log.store import LedgerStore
from ledger.log.tiles import published, read_path
from ledger.server.auth import ApiAuth
from ledger.server.bodies import errors_doc, text_doc
from ledger.server.http_errors import ApiError
from ledger.server.routes_ledger import LedgerReads, LedgerSource

FULL_CACHE: Final = "public, max-age=31536000, immutable"
SHORT_CACHE: Final = "public, max-age=5"
ENTRIES_FULL_CACHE: Final = "private, max-age=31536000, immutable"
ENTRIES_SHORT_CACHE: Final = "private, max-age=5"
CHECKPOINT_CACHE: Final = "public, max-age=2, must-revalidate"
OCTETS: Final = "application/octet-stream"
GZIP_LEVEL: Final = 6       # envelopes are base64 JSON: ~3x smaller, ~1 ms a full bundle
_BYTES_DOC: Final[dict[int | str, dict[str, object]]] = {
    200: {"description": "Tile or entry bundle bytes",
          "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}}}


def add_tile_routes(app: FastAPI, source: LedgerSource, ledger: LedgerReads,
                    auth: ApiAuth) -> None:
    """GET /checkpoint, /tile/{path} on ``app``; ``auth`` admits the entry bundles' readers."""

    @app.get("/checkpoint", response_class=PlainTextResponse,
             summary="tlog-tiles: the latest signed checkpoint",
             responses={**text_doc("The signed note"), **errors_doc(500, 503)})
    async def tiles_checkpoint() -> PlainTextResponse:
        note = await ledger(lambda store: published(store, source.vkey())[1])
        return PlainTextResponse(note, media_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": CHECKPOINT_CACHE})

    @app.get("/tile/{rest:path}", response_class=Response,
             summary="tlog-tiles: a hash tile tile/<L>/<N>[.p/<W>] (public) or an entry "
                     "bundle tile/entries/<N>[.p/<W>] (readers of tenant *)",
             responses={**_BYTES_DOC, **errors_doc(400, 401, 403, 404, 500, 503)},
             openapi_extra={"security": [{}, {"httpMessageSignature": []},  # entries only
                                         {"bearerToken": []}]})
    async def tiles_tile(request: Request, rest: str = PathParam(
            description="<L>/<N>[.p/<W>] or entries/<N>[.p/<W>]"),
            accept_encoding: str = Header("", include_in_schema=False)) -> Response:
        tile = parse_tile_path(f"tile/{rest}")
        if tile.entries:
            who = auth.reader(request, b"")  # a GET has no body to cover
            if who.tenant != ALL_TENANTS:
                raise ApiError(403, "FORBIDDEN", "entry bundles hold every tenant's events: "
                               "reading them needs a principal of tenant *")

        def read(store: LedgerStore) -> bytes:
            return read_path(store, tile, published(store, source.vkey())[0].size)

        try:
            data = await ledger(read)
        except EntryTooLarge as exc:
            raise ApiError(500, "ENTRY_TOO_LARGE", str(exc)) from exc
        headers = {"Cache-Control": FULL_CACHE if tile.full else SHORT_CACHE}
        if tile.entries:
            headers["Cache-Control"] = ENTRIES_FULL_CACHE if tile.full else ENTRIES_SHORT_CACHE
            headers["Vary"] = "Accept-Encoding"
            if _accepts_gzip(accept_encoding):
                data = await run_in_threadpool(gzip.compress, data, GZIP_LEVEL, mtime=0)
                headers["Content-Encoding"] = "gzip"
        return Response(data, media_type=OCTETS, headers=headers)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header lists gzip with a q-value above 0 (RFC 9110
    12.5.3); an unreadable q-value counts as a refusal."""
    for item in accept_encoding.split(","):
        name, *params = item.split(";")
        if name.strip().lower() != "gzip":
            continue
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False
