"""HTTP API: a thin shell over an :class:`ApiBackend` and the ledger's read-only store.

Routes (docs/api.md has a curl example for each)::

    POST /v1/events                         submit envelope bytes (never re-serialized)
    GET  /v1/decisions/{subject_id}?wait=S  decision / verdict envelope of a request or execution
    GET  /v1/checkpoint                     latest signed checkpoint (C2SP signed note)
    GET  /v1/vkey                           the log's C2SP verifier key
    GET  /v1/entries/{index}, /v1/entries?event_id=ID
    GET  /v1/proofs/inclusion, /v1/proofs/consistency, /v1/proofs/lineage
    GET  /healthz, /readyz, /metrics

Errors are always ``{"reason": CODE, "detail": text}``. CODE is a
:class:`~ledger.errors.Reason` for input the backend rejected, or one of the API codes
``PENDING``, ``NOT_FOUND``, ``NOT_PUBLISHED``, ``UNSUPPORTED_MEDIA_TYPE``, ``INTERNAL``.
Status of a :class:`~ledger.errors.Rejected`: 413 for OVERSIZED; 400 when the bytes are not
a well-formed v1 envelope (MALFORMED, NON_CANONICAL, UNSUPPORTED_VERSION, SIGNATURE_MISSING);
422 for every later check (signature, key, identity, ...). ``Unavailable`` is 503.

Fail closed (DESIGN.md section 3): an unexpected exception is a 500 carrying no decision; a
decision envelope the backend hands over is parsed (signature *not* re-checked: clients verify
it themselves) and must be a decision about the asked subject, else 500. Checkpoints are
verified under the published vkey before they are served. Ledger reads run in worker threads,
each with its own read-only SQLite connection (WAL: readers never block the sequencer, which
stays the only writer). Every ledger read first requires the sequencer's marker that it
verified the whole ledger against its signed checkpoint since it opened it
(``LedgerStore.verified``): until then ledger routes answer 503 and ``/readyz`` reports
``ledger_verified: false``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Final, NamedTuple, Protocol, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.core import merkle
from ledger.core.checkpoint import Checkpoint, parse_vkey, verify_checkpoint
from ledger.core.envelope import MAX_ENVELOPE_BYTES, parse_envelope, parse_payload
from ledger.core.envelope import event_id as envelope_event_id
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    ExecutionAllowed,
    ExecutionRefused,
    RevocationApplied,
)
from ledger.errors import ConfigError, ProofError, Reason, Rejected, Unavailable
from ledger.log.proofs import consistency_bundle, inclusion_bundle, lineage_bundle
from ledger.log.sequencer import DB_NAME
from ledger.log.store import LedgerStore, StoredLeaf
from ledger.schema import ENVELOPE_SCHEMA
from ledger.server.metrics import CONTENT_TYPE, Metrics

__all__ = ["ApiBackend", "ApiError", "DecisionBody", "Submitted", "make_api"]

_log = logging.getLogger("govledger.api")

HEX64: Final = r"^[0-9a-f]{64}$"
MAX_WAIT_S: Final = 30.0
MAX_INDEX: Final = 2**63 - 1          # SQLite INTEGER range
DECISION_GRACE_S: Final = 5.0         # on top of ``wait`` before a hung backend is a 503
READY_TIMEOUT_S: Final = 5.0
_JSON_TYPES = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")
_BAD_BYTES = frozenset({Reason.MALFORMED, Reason.NON_CANONICAL, Reason.UNSUPPORTED_VERSION,
                        Reason.SIGNATURE_MISSING})


class Submitted(NamedTuple):
    """What :meth:`ApiBackend.submit` accepted: the event id, its kind, the topic it went to."""

    event_id: str
    kind: str
    topic: str


class ApiBackend(Protocol):
    """What the API needs from the running service."""

    async def submit(self, envelope: bytes) -> Submitted:
        """Verify ``envelope`` (ledger.core.envelope.verify_envelope) and produce it to its
        topic. Raises Rejected (bad input) or Unavailable (broker down)."""

    async def decision(self, subject_id: str, wait_s: float) -> bytes | None:
        """The decision/verdict envelope of a request id or execution id, waiting up to
        ``wait_s`` seconds; None if there is none yet. May raise Unavailable."""

    def ledger_dir(self) -> Path:
        """The data directory holding ledger.db (read-only use)."""

    def vkey(self) -> str:
        """The log's C2SP verifier key text."""

    async def ready(self) -> dict[str, bool]:
        """Readiness per component, e.g. {"broker": .., "ledger": .., "processor": ..}."""


class ApiError(Exception):
    """An HTTP-level answer other than a Rejected input: 404 PENDING, 500 INTERNAL, ..."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail


# -- response models (the OpenAPI contract; schemathesis checks responses against them) ------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Body):
    reason: str
    detail: str


class SubmittedBody(_Body):
    event_id: str
    kind: str
    topic: str


class DecisionBody(_Body):
    """``envelope`` is the decision envelope text exactly as signed; verify it yourself."""

    envelope: str
    event_id: str
    kind: str
    allow: bool
    reasons: list[str]


class EntryBody(_Body):
    index: int
    event_id: str
    leaf: str
    leaf_hash: str


class InclusionBundle(_Body):
    origin: str
    index: int
    tree_size: int
    leaf: str
    leaf_hash: str
    proof: list[str]
    root_hash: str
    checkpoint: str


class ConsistencyBundle(_Body):
    origin: str
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str]
    old_checkpoint: str
    new_checkpoint: str


class LineageHop(_Body):
    event_id: str
    index: int
    leaf: str
    leaf_hash: str
    proof: list[str]


class LineageBundle(_Body):
    format: str
    origin: str
    event_id: str
    tree_size: int
    root_hash: str
    checkpoint: str
    hops: list[LineageHop]


def _errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _text(description: str) -> dict[int | str, dict[str, object]]:
    return {200: {"description": description,
                  "content": {"text/plain": {"schema": {"type": "string"}}}}}


# -- pure pieces -------------------------------------------------------------------------------


def rejected_status(reason: Reason) -> int:
    """HTTP status of a rejected input (module docstring)."""
    if reason is Reason.OVERSIZED:
        return 413
    if reason is Reason.UNAVAILABLE:
        return 503
    return 400 if reason in _BAD_BYTES else 422


def summarize_decision(subject_id: str, data: bytes) -> DecisionBody:
    """Summary fields of a decision envelope about ``subject_id``. The signature is not
    checked here. Raises ApiError(500) if the bytes are not a decision about that subject."""
    try:
        parsed = parse_envelope(data)
        event = parse_payload(parsed.payload_type, parsed.payload)
        text = data.decode("utf-8")
    except (Rejected, UnicodeDecodeError) as exc:
        raise ApiError(500, "INTERNAL", f"backend returned an unreadable decision: {exc}") from exc
    reasons: tuple[Reason, ...] = ()
    if isinstance(event, AuthorizationGranted):
        subject, allow = event.request_id, True
    elif isinstance(event, AuthorizationDenied):
        subject, allow, reasons = event.request_id, False, event.reasons
    elif isinstance(event, ExecutionAllowed):
        subject, allow = event.execution_id, True
    elif isinstance(event, ExecutionRefused):
        subject, allow, reasons = event.execution_id, False, event.reasons
    elif isinstance(event, RevocationApplied):
        subject, allow = event.revocation_id, True
    else:
        raise ApiError(500, "INTERNAL", f"backend returned a {event.KIND}, not a decision")
    if subject != subject_id:
        raise ApiError(500, "INTERNAL", "backend returned a decision about another subject")
    return DecisionBody(envelope=text, event_id=envelope_event_id(parsed.payload),
                        kind=event.KIND, allow=allow, reasons=[r.value for r in reasons])


# -- ledger reads (blocking: run in worker threads) -------------------------------------------

T = TypeVar("T")


class _Readers(threading.local):
    """One read-only store per worker thread (SQLite connections stay in their thread). In
    WAL mode each statement reads the latest committed state; the sequencer is not blocked."""

    store: LedgerStore | None = None

    def read(self, data_dir: Path, read: Callable[[LedgerStore], T]) -> T:
        """Run ``read`` on this thread's store. Raises Unavailable if ledger.db cannot be
        opened; a store whose read failed is closed and reopened next time."""
        if self.store is None or self.store.path != data_dir / DB_NAME:
            try:
                self.store = LedgerStore(data_dir / DB_NAME)
            except ConfigError as exc:
                raise Unavailable(f"ledger is not available: {exc}") from exc
        try:
            _require_verified(self.store)
            return read(self.store)
        except Unavailable:
            self.store.close()
            self.store = None
            raise


def _require_verified(store: LedgerStore) -> None:
    """Nothing is served from a ledger the sequencer has not verified since it opened it
    (its start-up check recomputes everything against the last signed checkpoint, and
    clears the marker first). Raises Unavailable (503) while it runs or after it failed."""
    if store.verified() is None:
        raise Unavailable("the ledger is not verified against its signed checkpoint yet "
                          "(the sequencer checks it when it starts); retry shortly")


def _published(store: LedgerStore, vkey: str) -> tuple[Checkpoint, str]:
    """The latest checkpoint, verified under ``vkey`` (C2SP signed-note). Raises Unavailable
    if there is none, ProofError (500) if it does not verify."""
    latest, origin = store.latest_checkpoint(), store.meta("origin")
    if latest is None or origin is None:
        raise Unavailable("ledger has no signed checkpoint yet")
    return verify_checkpoint(latest[1], parse_vkey(vkey), origin), latest[1]


def _locate(store: LedgerStore, index: int | None, event_id: str | None) -> StoredLeaf:
    """The stored leaf at ``index`` or of ``event_id``. Raises ApiError 404 NOT_FOUND."""
    if event_id is not None:
        leaf = store.find(event_id)
        if leaf is None:
            raise ApiError(404, "NOT_FOUND", f"event {event_id} is not in the ledger")
        return leaf
    if index is None or index >= store.tree_size():
        raise ApiError(404, "NOT_FOUND", f"no leaf at index {index}")
    return store.leaf(index)


def _published_leaf(store: LedgerStore, vkey: str, index: int | None,
                    event_id: str | None) -> int:
    """Index of a stored leaf under the latest checkpoint. Raises ApiError 404 NOT_FOUND or
    NOT_PUBLISHED."""
    checkpoint, _ = _published(store, vkey)
    at = _locate(store, index, event_id).index
    if at >= checkpoint.size:
        raise ApiError(404, "NOT_PUBLISHED", f"leaf {at} is sequenced but not yet under a "
                       f"signed checkpoint (size {checkpoint.size}); retry shortly")
    return at


def _entry(store: LedgerStore, index: int | None, event_id: str | None) -> EntryBody:
    leaf = _locate(store, index, event_id)
    return EntryBody(index=leaf.index, event_id=leaf.event_id,
                     leaf=base64.b64encode(leaf.leaf).decode("ascii"),
                     leaf_hash=merkle.leaf_hash(leaf.leaf).hex())


def _consistency(store: LedgerStore, vkey: str, old_size: int,
                 new_size: int | None) -> dict[str, object]:
    latest, _ = _published(store, vkey)
    new_size = latest.size if new_size is None else new_size
    if old_size > new_size:
        raise ApiError(422, Reason.MALFORMED.value, "old_size must be <= new_size")
    for size in (old_size, new_size):
        if size != latest.size and store.checkpoint_at(size) is None:
            raise ApiError(404, "NOT_FOUND", f"no signed checkpoint at size {size}")
    return consistency_bundle(store, old_size, new_size)


def _lineage(store: LedgerStore, vkey: str, event_id: str) -> dict[str, object]:
    _published_leaf(store, vkey, None, event_id)
    try:
        return lineage_bundle(store, event_id)
    except ProofError as exc:   # a hop missing or unpublished, or a cycle: nothing to prove
        raise ApiError(404, "NOT_FOUND", f"lineage cannot be proved: {exc}") from exc


def _sizes(store: LedgerStore) -> tuple[int, int | None]:
    latest = store.latest_checkpoint()
    return store.tree_size(), None if latest is None else latest[0]


# -- HTTP metrics and the last line of fail-closed -----------------------------------------


def _error(status: int, reason: str, detail: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"reason": reason, "detail": detail}, status_code=status,
                        headers=headers)


class _ObserveHttp:
    """Pure ASGI middleware: counts and times each request by route template, and turns any
    exception that escaped the handlers into a 500 with no decision in it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, started = time.perf_counter(), 500, False

        async def send_observed(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            _log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            status = 500
            if started:
                raise
            await _error(500, "INTERNAL", "internal error; no decision was made")(
                scope, receive, send)
        finally:
            route = scope.get("route")
            label = route.path if isinstance(route, APIRoute) else "unmatched"
            self.metrics.observe_http(label, status, time.perf_counter() - start)


def error_response(exc: Exception) -> JSONResponse:
    """The ``{"reason", "detail"}`` answer to an error a handler raised."""
    if isinstance(exc, ApiError):
        return _error(exc.status, exc.reason, exc.detail)
    if isinstance(exc, Rejected):
        return _error(rejected_status(exc.reason), exc.reason.value, exc.detail)
    if isinstance(exc, Unavailable):
        return _error(503, Reason.UNAVAILABLE.value, str(exc), {"Retry-After": "1"})
    if isinstance(exc, ProofError):
        _log.error("ledger integrity check failed: %s", exc)
        return _error(500, "INTERNAL", f"ledger integrity check failed: {exc}")
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, Reason.MALFORMED.value, f"{where}: {first.get('msg', 'invalid')}")
    if isinstance(exc, StarletteHTTPException):
        reason = "NOT_FOUND" if exc.status_code == 404 else f"HTTP_{exc.status_code}"
        return _error(exc.status_code, reason, str(exc.detail))
    raise exc


async def _handle(_: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _read_capped(request: Request, cap: int) -> bytes:
    """The raw body, refusing (OVERSIZED) as soon as it passes ``cap`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(Reason.MALFORMED, "invalid Content-Length")
        if int(declared) > cap:
            raise Rejected(Reason.OVERSIZED, f"body of {declared} bytes exceeds {cap}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise Rejected(Reason.OVERSIZED, f"body exceeds {cap} bytes")
    return bytes(body)


# -- the app -------------------------------------------------------------------------------

Hex64 = Annotated[str, PathParam(pattern=HEX64, description="64 lowercase hex digits")]
Index = Annotated[int, PathParam(ge=0, le=MAX_INDEX)]
QueryHex = Annotated[str | None, Query(pattern=HEX64)]
QueryIndex = Annotated[int | None, Query(ge=0, le=MAX_INDEX)]
QuerySize = Annotated[int | None, Query(ge=0, le=MAX_INDEX)]
_ENVELOPE_BODY = {"required": True, "description": "The envelope bytes, sent exactly as signed",
                  "content": {"application/json": {"schema": {
                      k: v for k, v in ENVELOPE_SCHEMA.items() if not k.startswith("$")}}}}


def make_api(backend: ApiBackend, metrics: Metrics | None = None) -> FastAPI:
    """The HTTP app over ``backend``. ``metrics`` (default: a new :class:`Metrics`) is also
    at ``app.state.metrics`` for the service to record decisions and lag in."""
    metrics = metrics or Metrics()
    app = FastAPI(title="govledger", version="1", docs_url=None, redoc_url=None,
                  description="Pre-execution authorization: submit signed events, read "
                  "decisions, fetch checkpoints and offline-verifiable proofs.")
    app.state.metrics, app.state.backend = metrics, backend
    app.add_middleware(_ObserveHttp, metrics=metrics)
    for handled in (ApiError, Rejected, Unavailable, ProofError, RequestValidationError,
                    StarletteHTTPException):
        app.add_exception_handler(handled, _handle)

    readers = _Readers()

    def ledger(read: Callable[[LedgerStore], T]) -> Awaitable[T]:
        return run_in_threadpool(readers.read, backend.ledger_dir(), read)

    @app.post("/v1/events", status_code=202, response_model=SubmittedBody,
              summary="Submit a signed event envelope",
              responses=_errors(400, 413, 415, 422, 503),
              openapi_extra={"requestBody": _ENVELOPE_BODY})
    async def submit_event(request: Request) -> SubmittedBody:
        """Verify the DSSE envelope and produce it to its topic. 202 means *accepted*: the
        decision comes later at GET /v1/decisions/{event_id}. 503 UNAVAILABLE when the broker
        cannot take it (at once when the broker is known to be down)."""
        media = request.headers.get("content-type", "application/json").split(";")[0]
        if not _JSON_TYPES.match(media.strip().lower()):
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json")
        done = await backend.submit(await _read_capped(request, MAX_ENVELOPE_BYTES))
        return SubmittedBody(event_id=done.event_id, kind=done.kind, topic=done.topic)

    @app.get("/v1/decisions/{subject_id}", response_model=DecisionBody,
             summary="Decision for a request id, or verdict for an execution id",
             responses=_errors(404, 422, 500, 503))
    async def get_decision(subject_id: Hex64, wait: Annotated[float, Query(
            ge=0, le=MAX_WAIT_S, description="seconds to wait for it")] = 0.0) -> DecisionBody:
        """The signed decision envelope, waiting up to ``wait`` seconds. 404 PENDING if none
        yet; 503 UNAVAILABLE (never PENDING) when the broker or the decision consumer is down
        or the service is stopping, also in the middle of the wait. ``allow`` is a
        convenience: act only on the envelope after verifying it."""
        try:
            async with asyncio.timeout(wait + DECISION_GRACE_S):
                data = await backend.decision(subject_id, wait)
        except TimeoutError as exc:
            raise Unavailable("the decision lookup timed out") from exc
        if data is None:
            raise ApiError(404, "PENDING", f"no decision for {subject_id} yet")
        return summarize_decision(subject_id, data)

    @app.get("/v1/checkpoint", response_class=PlainTextResponse,
             summary="Latest signed checkpoint (C2SP signed note)",
             responses={**_text("The signed note"), **_errors(500, 503)})
    async def get_checkpoint() -> PlainTextResponse:
        note = await ledger(lambda store: _published(store, backend.vkey())[1])
        return PlainTextResponse(note)

    @app.get("/v1/vkey", response_class=PlainTextResponse, summary="The log's verifier key",
             responses=_text("C2SP vkey, one line"))
    async def get_vkey() -> PlainTextResponse:
        return PlainTextResponse(backend.vkey().strip() + "\n")

    @app.get("/v1/entries/{index}", response_model=EntryBody, summary="Ledger entry by index",
             responses=_errors(404, 422, 503))
    async def get_entry(index: Index) -> EntryBody:
        return await ledger(lambda store: _entry(store, index, None))

    @app.get("/v1/entries", response_model=EntryBody, summary="Ledger entry by event id",
             responses=_errors(404, 422, 503))
    async def find_entry(event_id: Annotated[str, Query(pattern=HEX64)]) -> EntryBody:
        return await ledger(lambda store: _entry(store, None, event_id))

    @app.get("/v1/proofs/inclusion", response_model=None,
             summary="Inclusion proof bundle (by index or event id)",
             responses={200: {"model": InclusionBundle}, **_errors(404, 422, 500, 503)})
    async def prove_inclusion(index: QueryIndex = None,
                              event_id: QueryHex = None) -> JSONResponse:
        """Against the latest signed checkpoint; verify with ``govledger ledger verify``."""
        if (index is None) == (event_id is None):
            raise ApiError(422, Reason.MALFORMED.value, "give exactly one of index, event_id")

        def read(store: LedgerStore) -> dict[str, object]:
            at = _published_leaf(store, backend.vkey(), index, event_id)
            return inclusion_bundle(store, index=at)
        return JSONResponse(await ledger(read))

    @app.get("/v1/proofs/consistency", response_model=None,
             summary="Consistency proof bundle between two signed checkpoints",
             responses={200: {"model": ConsistencyBundle}, **_errors(404, 422, 500, 503)})
    async def prove_consistency(old_size: Annotated[int, Query(ge=0, le=MAX_INDEX)],
                                new_size: QuerySize = None) -> JSONResponse:
        """``new_size`` defaults to the latest checkpoint."""
        return JSONResponse(await ledger(
            lambda store: _consistency(store, backend.vkey(), old_size, new_size)))

    @app.get("/v1/proofs/lineage", response_model=None,
             summary="Lineage evidence bundle: the chain back to the root, each hop proved",
             responses={200: {"model": LineageBundle}, **_errors(404, 422, 500, 503)})
    async def prove_lineage(event_id: Annotated[str, Query(pattern=HEX64)]) -> JSONResponse:
        return JSONResponse(await ledger(lambda store: _lineage(store, backend.vkey(),
                                                                event_id)))

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
             responses=_text("Prometheus text exposition format"))
    async def get_metrics() -> Response:
        try:
            metrics.observe_store(*await ledger(_sizes))
        except (Unavailable, ProofError) as exc:   # metrics are served without ledger numbers
            _log.debug("ledger numbers unavailable for /metrics: %s", exc)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
