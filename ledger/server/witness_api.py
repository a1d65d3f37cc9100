"""The witness's HTTP interface (C2SP tlog-witness): ``POST /add-checkpoint``.

* 200 ``text/plain``: the cosignature line(s), each ``— <name> <base64>\\n``;
* 409 ``text/x.tlog.size``: the size the witness last cosigned for the log, then ``\\n``;
* 400, 403, 404, 422: the refusals of :mod:`ledger.core.witnessing`, with a one-line reason;
* 413: a body over :data:`ledger.core.witnessing.MAX_REQUEST_BYTES` (read no further);
* 503: the witness's state could not be read or written (nothing was cosigned).

Requests are decided one at a time in a worker thread (the state's check-and-store is one
SQLite transaction, and only this process holds the state).
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ledger.core.witnessing import MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE, WitnessRefused
from ledger.errors import Unavailable
from ledger.log.witness import Witness

log = logging.getLogger(__name__)


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it exceeds MAX_REQUEST_BYTES (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_REQUEST_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            return None
    return bytes(body)


def make_witness_api(witness: Witness) -> FastAPI:
    """The witness's FastAPI app over an open :class:`Witness`."""
    app = FastAPI(title="govledger witness", docs_url=None, redoc_url=None, openapi_url=None)
    one_at_a_time = asyncio.Lock()

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return PlainTextResponse(f"request body over {MAX_REQUEST_BYTES} bytes\n", 413)
        try:
            async with one_at_a_time:
                line = await run_in_threadpool(witness.add_checkpoint, body, int(time.time()))
        except WitnessRefused as exc:
            log.info("add-checkpoint refused (%d): %s", exc.status, exc)
            if exc.status == 409 and exc.size is not None:
                # set as a header: a text/* media type would get "; charset=utf-8"
                return Response(f"{exc.size}\n", 409,
                                headers={"content-type": SIZE_CONTENT_TYPE})
            return PlainTextResponse(f"{exc}\n", exc.status)
        except Unavailable as exc:
            log.error("add-checkpoint failed: %s", exc)
            return PlainTextResponse("witness state unavailable\n", 503)
        return PlainTextResponse(line)

    return app
