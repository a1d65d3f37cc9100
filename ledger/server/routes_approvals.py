"""``GET /v1/approvals`` and ``GET /v1/approvals/{request_id}``: the requests that wait for
human approval, as the ledger shows them (ledger/log/approvals.py, docs/approvals.md).
They carry what is asked, so they need a reader (``ledger.server.auth``) and show only the
reader's tenant (a request of another tenant answers as a missing one). Approving is
``POST /v1/events`` with a signed ApprovalGiven or ApprovalRefused."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse

from ledger.clock import utc_now
from ledger.core.events import TENANT_PATTERN
from ledger.core.keys import Principal
from ledger.core.tenancy import ALL_TENANTS
from ledger.errors import NotFound
from ledger.log.approvals import list_approvals, show_approval
from ledger.server.auth import Reader
from ledger.server.bodies import errors_doc
from ledger.server.routes_ledger import Hex64, LedgerReads


def add_approval_routes(app: FastAPI, ledger: LedgerReads, reader: Reader) -> None:
    """The approval views on ``app``; ``reader`` authenticates the caller."""
    signed_in = Depends(reader)  # a default value, not an annotation: resolved at def time

    @app.get("/v1/approvals", response_model=None,
             summary="Requests waiting for human approval (pending=false: all of them)",
             responses=errors_doc(401, 403, 422, 503))
    async def approvals(pending: Annotated[bool, Query(
            description="only the requests still waiting")] = True,
            tenant: Annotated[str | None, Query(
                pattern=TENANT_PATTERN, description="only this tenant's (a tenant id)")
            ] = None,
            who: Principal = signed_in) -> JSONResponse:
        now = utc_now()
        if who.tenant != ALL_TENANTS:
            if tenant not in (None, who.tenant):
                return JSONResponse([])  # another tenant's requests are never listed
            tenant = who.tenant
        return JSONResponse(await ledger(lambda store: list_approvals(
            store, now, pending_only=pending, tenant=tenant)))

    @app.get("/v1/approvals/{request_id}", response_model=None,
             summary="One request's approval record: what is asked, who approved, its state",
             responses=errors_doc(401, 403, 404, 422, 503))
    async def approval(request_id: Hex64, who: Principal = signed_in) -> JSONResponse:
        now = utc_now()
        view = await ledger(lambda store: show_approval(store, request_id, now))
        if who.tenant not in (ALL_TENANTS, view["tenant"]):
            raise NotFound(f"request {request_id} is not waiting for approval in the ledger")
        return JSONResponse(view)
