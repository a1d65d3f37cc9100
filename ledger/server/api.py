"""HTTP API: a thin shell over an :class:`ApiBackend` and the ledger's read-only store.

Routes (docs/api.md has a curl example for each)::

    POST /v1/events                         submit envelope bytes (never re-serialized)
    GET  /v1/decisions/{subject_id}?wait=S  decision / verdict envelope of a request or execution
    GET  /v1/checkpoint                     latest signed checkpoint (C2SP signed note)
    GET  /v1/vkey                           the log's C2SP verifier key
    GET  /v1/entries/{index}, /v1/entries?event_id=ID
    GET  /v1/proofs/inclusion, /v1/proofs/consistency, /v1/proofs/lineage
    GET  /v1/approvals?pending, /v1/approvals/{request_id}   (ledger.server.routes_approvals)
    GET  /healthz, /readyz, /metrics

This module holds the app, the submit and decision routes and the health routes; the ledger
routes are in ``ledger.server.routes_ledger``, the response bodies in ``ledger.server.bodies``
and the one table from typed errors to HTTP in ``ledger.server.http_errors``.

Fail closed (DESIGN.md section 3): an unexpected exception is a 500 carrying no decision; a
decision envelope the backend hands over is parsed (signature *not* re-checked: clients verify
it themselves) and must be a decision about the asked subject, else 500. Until the sequencer
verified the ledger, ledger routes answer 503 and ``/readyz`` reports
``ledger_verified: false``.

Authentication and tenants (``ledger.server.auth``, docs/api.md "Authentication"): every
route that returns payloads (decisions, entries, inclusion and lineage bundles) needs a signed
request or a bearer token of a principal with a read role, and answers only about the
caller's tenant; another tenant's ids answer exactly as unknown ids do. Submitting stays
open (the envelope is its own authentication) unless ``wait`` asks for the decision back.
Checkpoint, vkey, consistency proofs and health stay public.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Final, NamedTuple, Protocol

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from ledger.core.envelope import MAX_ENVELOPE_BYTES
from ledger.core.keys import Principal
from ledger.core.tenancy import visible_to
from ledger.errors import ProofError, Unavailable
from ledger.log.reports import read_alerts
from ledger.log.store import LedgerStore
from ledger.schema import ENVELOPE_SCHEMA
from ledger.server.auth import ApiAuth, Reader, read_body, reader_dependency
from ledger.server.bodies import (
    DecisionBody,
    SubmittedAndDecidedBody,
    SubmittedBody,
    errors_doc,
    summarize_decision,
    text_doc,
)
from ledger.server.http_errors import HANDLED, ApiError, ObserveHttp, SingleQueryValues, handle
from ledger.server.metrics import CONTENT_TYPE, Metrics
from ledger.server.routes_approvals import add_approval_routes
from ledger.server.routes_ledger import Hex64, LedgerReads, LedgerSource, add_ledger_routes
from ledger.server.routes_tiles import add_tile_routes

__all__ = ["ApiBackend", "ApiError", "DecisionBody", "Submitted", "make_api"]

_log = logging.getLogger("govledger.api")

MAX_WAIT_S: Final = 30.0
DECISION_GRACE_S: Final = 5.0         # on top of ``wait`` before a hung backend is a 503
READY_TIMEOUT_S: Final = 5.0
_JSON_TYPES = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")


class Submitted(NamedTuple):
    """What :meth:`ApiBackend.submit` accepted: the event id, its kind, the topic it went to."""

    event_id: str
    kind: str
    topic: str


class ApiBackend(LedgerSource, Protocol):
    """What the API needs from the running service (``ledger_dir`` and ``vkey``: the ledger
    routes' :class:`~ledger.server.routes_ledger.LedgerSource`)."""

    async def submit(self, envelope: bytes) -> Submitted:
        """Verify ``envelope`` (ledger.core.envelope.verify_envelope) and produce it to its
        topic. Raises Rejected (bad input) or Unavailable (broker down)."""

    async def decision(self, subject_id: str, wait_s: float) -> bytes | None:
        """The decision/verdict envelope of a request id or execution id, waiting up to
        ``wait_s`` seconds; None if there is none yet. May raise Unavailable."""

    async def ready(self) -> dict[str, bool]:
        """Readiness per component, e.g. {"broker": .., "ledger": .., "processor": ..}."""


# -- the app -------------------------------------------------------------------------------

_ENVELOPE_BODY = {"required": True, "description": "The envelope bytes, sent exactly as signed",
                  "content": {"application/json": {"schema": {
                      k: v for k, v in ENVELOPE_SCHEMA.items() if not k.startswith("$")}}}}


def make_api(backend: ApiBackend, metrics: Metrics | None = None, *,
             auth: ApiAuth) -> FastAPI:
    """The HTTP app over ``backend``. ``metrics`` (default: a new :class:`Metrics`) is also
    at ``app.state.metrics`` for the service to record decisions and lag in. ``auth``
    decides who calls the read routes (required: there is no unauthenticated mode)."""
    metrics = metrics or Metrics()
    app = FastAPI(title="govledger", version="1", docs_url=None, redoc_url=None,
                  description="Pre-execution authorization: submit signed events, read "
                  "decisions, fetch checkpoints and offline-verifiable proofs.")
    app.state.metrics, app.state.backend = metrics, backend
    app.add_middleware(SingleQueryValues)
    app.add_middleware(ObserveHttp, metrics=metrics)  # outermost: it sees every answer
    for handled in HANDLED:
        app.add_exception_handler(handled, handle)
    ledger = LedgerReads(backend)
    reader = reader_dependency(auth)
    _add_event_routes(app, backend, auth, reader)
    add_ledger_routes(app, backend, ledger, reader)
    add_approval_routes(app, ledger, reader)
    add_tile_routes(app, backend, ledger, auth)  # C2SP tlog-tiles: /checkpoint, /tile/...
    _add_health_routes(app, backend, ledger, metrics)
    return app


def _add_event_routes(app: FastAPI, backend: ApiBackend, auth: ApiAuth,
                      reader: Reader) -> None:
    signed_in = Depends(reader)  # a default value, not an annotation: resolved at def time
    @app.post("/v1/events", status_code=202, response_model=SubmittedBody,
              summary="Submit a signed event envelope (and wait for its decision)",
              responses={200: {"model": SubmittedAndDecidedBody,
                               "description": "Accepted and decided within ``wait``"},
                         **errors_doc(400, 401, 403, 413, 415, 422, 503)},
              openapi_extra={"requestBody": _ENVELOPE_BODY,
                             # no credential needed, one for ``wait`` (docs/api.md)
                             "security": [{}, {"httpMessageSignature": []},
                                          {"bearerToken": []}]})
    async def submit_event(request: Request, wait: Annotated[float, Query(
            ge=0, le=MAX_WAIT_S, description="seconds to wait for the decision (0: do not "
            "wait)")] = 0.0) -> SubmittedBody | JSONResponse:
        """Verify the DSSE envelope and produce it to its topic. 202 means *accepted*: the
        decision comes later at GET /v1/decisions/{event_id}. With ``wait`` > 0 the answer
        waits up to that long for the decision: 200 with the decision (as GET
        /v1/decisions returns it) when it came, else 202 as without ``wait`` (one round trip
        instead of two). 503 UNAVAILABLE when the broker cannot take it (at once when the
        broker is known to be down), or when it fails during the wait.

        No credential is needed to submit (the envelope is signed); ``wait`` > 0 reads the
        decision, so it needs a reader's signature or token (401/403, checked before
        anything is submitted), and a decision of another tenant is never shown (202).
        A credential that is given must verify, ``wait`` or not."""
        media = request.headers.get("content-type", "application/json").split(";")[0]
        if not _JSON_TYPES.match(media.strip().lower()):
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json")
        envelope = await read_body(request, MAX_ENVELOPE_BYTES)
        who: Principal | None = None
        if wait > 0:
            who = auth.reader(request, envelope)
        elif auth.presented(request):
            auth.authenticate(request, envelope)
        done = await backend.submit(envelope)
        submitted = SubmittedBody(event_id=done.event_id, kind=done.kind, topic=done.topic)
        if who is None:
            return submitted
        decision = await _decision_within(done.event_id, wait, who)
        if decision is None:
            return submitted
        body = SubmittedAndDecidedBody(**submitted.model_dump(), decision=decision)
        return JSONResponse(body.model_dump(), status_code=200)

    async def _decision_within(subject_id: str, wait: float,
                               who: Principal) -> DecisionBody | None:
        """The decision about ``subject_id`` within ``wait`` seconds, or None; None too for
        a decision ``who`` may not see, after the whole ``wait`` (an unknown id waits that
        long: the answer and its timing are the same). Raises Unavailable (the lookup hung
        past its grace, or the backend is down)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            async with asyncio.timeout(wait + DECISION_GRACE_S):
                data = await backend.decision(subject_id, wait)
        except TimeoutError as exc:
            raise Unavailable("the decision lookup timed out") from exc
        if data is None:
            return None
        summary = summarize_decision(subject_id, data)  # a wrong envelope is a 500 first
        if not visible_to(who.tenant, data):
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            return None
        return summary

    @app.get("/v1/decisions/{subject_id}", response_model=DecisionBody,
             summary="Decision for a request id, or verdict for an execution id",
             responses=errors_doc(401, 403, 404, 422, 500, 503))
    async def get_decision(subject_id: Hex64, who: Principal = signed_in,
                           wait: Annotated[float, Query(
            ge=0, le=MAX_WAIT_S, description="seconds to wait for it")] = 0.0) -> DecisionBody:
        """The signed decision envelope, waiting up to ``wait`` seconds. 404 PENDING if none
        yet, or if it is another tenant's; 503 UNAVAILABLE (never PENDING) when the broker
        or the decision consumer is down or the service is stopping, also in the middle of
        the wait. ``allow`` is a convenience: act only on the envelope after verifying it."""
        decision = await _decision_within(subject_id, wait, who)
        if decision is None:
            raise ApiError(404, "PENDING", f"no decision for {subject_id} yet")
        return decision


def _add_health_routes(app: FastAPI, backend: ApiBackend, ledger: LedgerReads,
                       metrics: Metrics) -> None:
    @app.get("/healthz", response_model=dict[str, str], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=dict[str, bool], summary="Readiness per component",
             responses={503: {"model": dict[str, bool]}})
    async def readyz() -> JSONResponse:
        """200 only when every component is ready; else 503 with the same map."""
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                components = {str(k): v is True for k, v in (await backend.ready()).items()}
        except (Unavailable, TimeoutError) as exc:
            _log.warning("readiness check failed: %s", exc)
            components = {"backend": False}
        try:
            components["ledger_verified"] = await ledger(lambda store: True)
        except (Unavailable, ProofError) as exc:
            _log.warning("ledger not ready: %s", exc)
            components["ledger_verified"] = False
        ok = bool(components) and all(components.values())
        return JSONResponse(components, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics",
             responses=text_doc("Prometheus text exposition format"))
    async def get_metrics() -> Response:
        try:
            metrics.observe_store(*await ledger(_sizes))
            start = metrics.alerts_scanned
            metrics.observe_alerts(*await ledger(lambda store: _alert_rules(store, start)))
        except (Unavailable, ProofError) as exc:   # metrics are served without ledger numbers
            _log.debug("ledger numbers unavailable for /metrics: %s", exc)
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _alert_rules(store: LedgerStore, start: int) -> tuple[list[str], int]:
    """The rules of the alerts logged from ``start``, and where the next scan starts."""
    size = int(store.tree_size())
    return [alert.rule for index, _, alert in read_alerts(store, start) if index < size], size


def _sizes(store: LedgerStore) -> tuple[int, int | None]:
    latest = store.latest_checkpoint()
    return store.tree_size(), None if latest is None else latest[0]
