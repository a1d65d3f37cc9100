"""How an error becomes an HTTP answer: :class:`ApiError`, the one table from the typed errors
(``ledger.errors``) to a status and reason code, and the middleware that answers 500 to
anything else.

Every error body is ``{"reason": CODE, "detail": text}`` (docs/api.md "Errors"). CODE is a
:class:`~ledger.errors.Reason` for input the backend rejected, or one of the API codes
``PENDING``, ``NOT_FOUND``, ``NOT_PUBLISHED``, ``UNSUPPORTED_MEDIA_TYPE``, ``INTERNAL``,
``UNAUTHENTICATED`` (401, with ``WWW-Authenticate``), ``FORBIDDEN`` (403).
Status of a :class:`~ledger.errors.Rejected`: 413 for OVERSIZED; 400 when the bytes are not a
well-formed v1 envelope (MALFORMED, NON_CANONICAL, UNSUPPORTED_VERSION, SIGNATURE_MISSING);
422 for every later check (signature, key, identity, ...). ``Unavailable`` is 503 with
``Retry-After: 1``; a ``ProofError`` that is not one of the lookups below is a failed
integrity check: 500, logged. Fail closed (DESIGN.md section 3): any other exception is a
500 carrying no decision.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Final
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.errors import (
    GovLedgerError,
    InvalidRange,
    NotFound,
    NotPublished,
    ProofError,
    Reason,
    Rejected,
    Unavailable,
)
from ledger.server.metrics import Metrics

_log = logging.getLogger("govledger.api")

_BAD_BYTES = frozenset({Reason.MALFORMED, Reason.NON_CANONICAL, Reason.UNSUPPORTED_VERSION,
                        Reason.SIGNATURE_MISSING})

# The one table: status and reason code of each typed error a route lets through, the most
# specific class first (Rejected's status depends on its reason: rejected_status).
STATUS_OF: Final[tuple[tuple[type[GovLedgerError], int, str], ...]] = (
    (NotFound, 404, "NOT_FOUND"),
    (NotPublished, 404, "NOT_PUBLISHED"),
    (InvalidRange, 422, Reason.MALFORMED.value),
    (ProofError, 500, "INTERNAL"),
    (Unavailable, 503, Reason.UNAVAILABLE.value),
)


class ApiError(Exception):
    """An HTTP-level answer other than a typed error: 404 PENDING, 500 INTERNAL, ..."""

    def __init__(self, status: int, reason: str, detail: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail
        self.headers = headers


# What the app hands to error_response; anything else (ConfigError, a bug) reaches ObserveHttp.
HANDLED: Final = (ApiError, Rejected, *(kind for kind, _, _ in STATUS_OF),
                  RequestValidationError, StarletteHTTPException)


def rejected_status(reason: Reason) -> int:
    """HTTP status of a rejected input (module docstring)."""
    if reason is Reason.OVERSIZED:
        return 413
    if reason is Reason.UNAVAILABLE:
        return 503
    return 400 if reason in _BAD_BYTES else 422


def error(status: int, reason: str, detail: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"reason": reason, "detail": detail}, status_code=status,
                        headers=headers)


def error_response(exc: Exception) -> JSONResponse:
    """The ``{"reason", "detail"}`` answer to an error a handler raised."""
    if isinstance(exc, ApiError):
        return error(exc.status, exc.reason, exc.detail, exc.headers)
    if isinstance(exc, Rejected):
        return error(rejected_status(exc.reason), exc.reason.value, exc.detail)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(422, Reason.MALFORMED.value, f"{where}: {first.get('msg', 'invalid')}")
    if isinstance(exc, StarletteHTTPException):
        reason = "NOT_FOUND" if exc.status_code == 404 else f"HTTP_{exc.status_code}"
        return error(exc.status_code, reason, str(exc.detail))
    for kind, status, code in STATUS_OF:
        if isinstance(exc, kind):
            return _typed(exc, status, code)
    raise exc  # not ours to answer: the middleware makes it a 500


def _typed(exc: Exception, status: int, code: str) -> JSONResponse:
    """A 503 says when to retry; a 500 from a typed error is a failed integrity check."""
    if status == 503:
        return error(status, code, str(exc), {"Retry-After": "1"})
    if status == 500:
        _log.error("ledger integrity check failed: %s", exc)
        return error(status, code, f"ledger integrity check failed: {exc}")
    return error(status, code, str(exc))


async def handle(_: Request, exc: Exception) -> Response:
    """The exception handler of every class in HANDLED."""
    return error_response(exc)


class SingleQueryValues:
    """Pure ASGI middleware: a query parameter given twice is refused (422 MALFORMED). Every
    parameter of this API is a single value, and a framework that quietly keeps one of the
    copies would check one value while a proxy, a log or a signature saw another."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            counts = Counter(name for name, _ in parse_qsl(
                scope["query_string"].decode("latin-1"), keep_blank_values=True))
            repeated = sorted(name for name, n in counts.items() if n > 1)
            if repeated:
                await error(422, Reason.MALFORMED.value, "query parameter given more than "
                            f"once: {', '.join(repeated)[:200]}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ObserveHttp:
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
            await error(500, "INTERNAL", "internal error; no decision was made")(
                scope, receive, send)
        finally:
            route = scope.get("route")
            label = route.path if isinstance(route, APIRoute) else "unmatched"
            self.metrics.observe_http(label, status, time.perf_counter() - start)
