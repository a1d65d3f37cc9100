"""``GET /v1/approvals`` and ``GET /v1/approvals/{request_id}``: the requests that wait for
human approval, as the ledger shows them (ledger/log/approvals.py, docs/approvals.md).
Approving is ``POST /v1/events`` with a signed ApprovalGiven or ApprovalRefused."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from ledger.clock import utc_now
from ledger.log.approvals import list_approvals, show_approval
from ledger.server.bodies import errors_doc
from ledger.server.routes_ledger import Hex64, LedgerReads


def add_approval_routes(app: FastAPI, ledger: LedgerReads) -> None:
    """The approval views on ``app``."""

    @app.get("/v1/approvals", response_model=None,
             summary="Requests waiting for human approval (pending=false: all of them)",
             responses=errors_doc(422, 503))
    async def approvals(pending: Annotated[bool, Query(
            description="only the requests still waiting")] = True,
            tenant: Annotated[str | None, Query(max_length=64)] = None) -> JSONResponse:
        now = utc_now()
        return JSONResponse(await ledger(lambda store: list_approvals(
            store, now, pending_only=pending, tenant=tenant)))

    @app.get("/v1/approvals/{request_id}", response_model=None,
             summary="One request's approval record: what is asked, who approved, its state",
             responses=errors_doc(404, 422, 503))
    async def approval(request_id: Hex64) -> JSONResponse:
        now = utc_now()
        return JSONResponse(await ledger(lambda store: show_approval(store, request_id, now)))
