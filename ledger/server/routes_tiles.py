"""The C2SP tlog-tiles read API (https://c2sp.org/tlog-tiles) of the HTTP API.

``GET /checkpoint`` (the latest signed checkpoint, cacheable for seconds),
``GET /tile/<L>/<N>[.p/<W>]`` and ``GET /tile/entries/<N>[.p/<W>]`` (bytes, as
``ledger.log.tiles`` reads them under the latest published checkpoint). Full tiles and
bundles never change: a year of cache, ``immutable``; a partial one is cached for seconds
(the log may drop it once the full tile exists). Entry bundles are gzip-compressed for a
client that accepts it (the spec's SHOULD; ``Vary: Accept-Encoding``). A malformed path is
400 MALFORMED, a tile past the published tree size 404 NOT_FOUND, an entry too long for a
bundle 500 ENTRY_TOO_LARGE. Reads go through the same verified, per-thread read-only stores as the
other ledger routes (``routes_ledger.LedgerReads``): 503 until the sequencer has verified
the ledger.
"""

from __future__ import annotations

import gzip
from typing import Final

from fastapi import FastAPI, Header
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ledger.core.tiles import EntryTooLarge, parse_tile_path
from ledger.log.store import LedgerStore
from ledger.log.tiles import published, read_path
from ledger.server.bodies import errors_doc, text_doc
from ledger.server.http_errors import ApiError
from ledger.server.routes_ledger import LedgerReads, LedgerSource

FULL_CACHE: Final = "public, max-age=31536000, immutable"
SHORT_CACHE: Final = "public, max-age=5"
CHECKPOINT_CACHE: Final = "public, max-age=2, must-revalidate"
OCTETS: Final = "application/octet-stream"
GZIP_LEVEL: Final = 6       # envelopes are base64 JSON: ~3x smaller, ~1 ms a full bundle
_BYTES_DOC: Final[dict[int | str, dict[str, object]]] = {
    200: {"description": "Tile or entry bundle bytes",
          "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}}}


def add_tile_routes(app: FastAPI, source: LedgerSource, ledger: LedgerReads) -> None:
    """GET /checkpoint, /tile/{path} on ``app``."""

    @app.get("/checkpoint", response_class=PlainTextResponse,
             summary="tlog-tiles: the latest signed checkpoint",
             responses={**text_doc("The signed note"), **errors_doc(500, 503)})
    async def tiles_checkpoint() -> PlainTextResponse:
        note = await ledger(lambda store: published(store, source.vkey())[1])
        return PlainTextResponse(note, media_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": CHECKPOINT_CACHE})

    @app.get("/tile/{rest:path}", response_class=Response,
             summary="tlog-tiles: a hash tile tile/<L>/<N>[.p/<W>] or an entry bundle "
                     "tile/entries/<N>[.p/<W>]",
             responses={**_BYTES_DOC, **errors_doc(400, 404, 500, 503)})
    async def tiles_tile(rest: str = PathParam(
            description="<L>/<N>[.p/<W>] or entries/<N>[.p/<W>]"),
            accept_encoding: str = Header("", include_in_schema=False)) -> Response:
        tile = parse_tile_path(f"tile/{rest}")

        def read(store: LedgerStore) -> bytes:
            return read_path(store, tile, published(store, source.vkey())[0].size)

        try:
            data = await ledger(read)
        except EntryTooLarge as exc:
            raise ApiError(500, "ENTRY_TOO_LARGE", str(exc)) from exc
        headers = {"Cache-Control": FULL_CACHE if tile.full else SHORT_CACHE}
        if tile.entries:
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
