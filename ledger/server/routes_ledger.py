"""The ledger routes of the HTTP API: checkpoint, vkey, entries and proof bundles, each read
from the ledger's SQLite file through ``ledger.log.proofs``.

Ledger reads run in worker threads, each with its own read-only SQLite connection (WAL:
readers never block the sequencer, which stays the only writer). Every read first requires
the sequencer's marker that it verified the whole ledger against its signed checkpoint since
it opened it (``LedgerStore.verified``): until then these routes answer 503. Checkpoints,
and the bundles that carry them, are verified under the published vkey before they are
served, with the witnesses' cosignatures the log holds for them (``ledger.log.cosigning``);
``cosigned=K`` asks for the latest checkpoint that K witnesses cosigned.

Entries, inclusion bundles and lineage bundles carry event payloads: they need a reader
(``ledger.server.auth``) and show only the reader's tenant (``ledger.core.tenancy``).
Another tenant's leaf answers exactly as a missing one (``ledger.log.proofs.not_found``),
and the tenant is checked before anything else about the leaf (published or not), so no
status tells the two apart. The checkpoint, the vkey and consistency bundles carry only
hashes and signed notes: public.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Final, Protocol, TypeVar

from fastapi import Depends, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ledger.core.bundles import Bundle
from ledger.core.checkpoint import parse_checkpoint, split_note
from ledger.core.keys import Principal
from ledger.core.tenancy import visible_to
from ledger.errors import ConfigError, Reason, Unavailable
from ledger.log.cosigning import CosignatureStore, attach, attach_to_bundle, witnessed_size
from ledger.log.ledger_dir import DB_NAME
from ledger.log.proofs import (
    consistency_bundle,
    entry,
    inclusion_bundle,
    lineage_bundle,
    not_found,
    published_note,
)
from ledger.log.store import LedgerStore
from ledger.server.auth import Reader
from ledger.server.bodies import (
    ConsistencyBundle,
    EntryBody,
    InclusionBundle,
    LineageBundle,
    errors_doc,
    text_doc,
)
from ledger.server.http_errors import ApiError

T = TypeVar("T")
HEX64: Final = r"^[0-9a-f]{64}$"
MAX_INDEX: Final = 2**63 - 1          # SQLite INTEGER range

Hex64 = Annotated[str, PathParam(pattern=HEX64, description="64 lowercase hex digits")]
Index = Annotated[int, PathParam(ge=0, le=MAX_INDEX)]
QueryHex = Annotated[str | None, Query(pattern=HEX64)]
QueryIndex = Annotated[int | None, Query(ge=0, le=MAX_INDEX)]
QuerySize = Annotated[int | None, Query(ge=0, le=MAX_INDEX)]
Cosigned = Annotated[int | None, Query(ge=1, le=64, description=(
    "Prove against the latest checkpoint that at least this many witnesses cosigned"))]


class LedgerSource(Protocol):
    """What the ledger routes need from the backend (a part of ``api.ApiBackend``)."""

    def ledger_dir(self) -> Path:
        """The data directory holding ledger.db (read-only use)."""

    def vkey(self) -> str:
        """The log's C2SP verifier key text."""


class _Readers(threading.local):
    """One read-only store per worker thread (SQLite connections stay in their thread). In
    WAL mode each statement reads the latest committed state; the sequencer is not blocked."""

    store: LedgerStore | None = None
    cosignatures: CosignatureStore | None = None

    def read_witnessed(self, data_dir: Path,
                       read: Callable[[LedgerStore, CosignatureStore], T]) -> T:
        """:meth:`read` with this thread's reader of the witnesses' cosignatures too."""
        if self.cosignatures is None or self.cosignatures.path.parent != data_dir:
            self.cosignatures = CosignatureStore(data_dir)
        cosignatures = self.cosignatures
        return self.read(data_dir, lambda store: read(store, cosignatures))

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


class LedgerReads:
    """Runs a read of the backend's ledger in a worker thread (module docstring)."""

    def __init__(self, source: LedgerSource) -> None:
        self.source, self._readers = source, _Readers()

    def __call__(self, read: Callable[[LedgerStore], T]) -> Awaitable[T]:
        return run_in_threadpool(self._readers.read, self.source.ledger_dir(), read)

    def witnessed(self, read: Callable[[LedgerStore, CosignatureStore], T]) -> Awaitable[T]:
        """A read that also sees the cosignatures witnesses returned (cosignatures.db)."""
        return run_in_threadpool(self._readers.read_witnessed, self.source.ledger_dir(), read)


def _seen_by(who: Principal, found: Bundle, index: int | None = None,
            event_id: str | None = None) -> Bundle:
    """``found`` (an entry or a hop), if ``who`` may see its leaf; else the NotFound a
    missing ``index``/``event_id`` gets."""
    leaf = found.get("leaf")
    if not (isinstance(leaf, str) and visible_to(who.tenant, base64.b64decode(leaf))):
        raise not_found(index, event_id)
    return found


def _lineage_seen_by(who: Principal, store: LedgerStore, event_id: str, vkey: str,
                     size: int | None = None) -> Bundle:
    _seen_by(who, entry(store, event_id=event_id), event_id=event_id)
    bundle = lineage_bundle(store, event_id, vkey=vkey, size=size)
    hops = bundle.get("hops")
    for hop in hops if isinstance(hops, list) else [{}]:
        _seen_by(who, hop if isinstance(hop, dict) else {}, event_id=event_id)
    return bundle


def add_ledger_routes(app: FastAPI, source: LedgerSource, ledger: LedgerReads,
                      reader: Reader) -> None:
    signed_in = Depends(reader)
    """GET /v1/checkpoint, /v1/vkey, /v1/entries and /v1/proofs/* on ``app``; ``reader``
    is the dependency that authenticates a reader (module docstring)."""
    signed_in = Depends(reader)  # a default value, not an annotation: resolved at def time

    @app.get("/v1/checkpoint", response_class=PlainTextResponse,
             summary="Latest signed checkpoint (C2SP signed note)",
             responses={**text_doc("The signed note"), **_json_errors(404, 422, 500, 503)})
    async def get_checkpoint(cosigned: Cosigned = None) -> PlainTextResponse:
        """With the witnesses' cosignatures it has; ``cosigned=K``: the latest checkpoint
        that K witnesses cosigned (404 if none yet)."""
        def read(store: LedgerStore, cosignatures: CosignatureStore) -> str:
            size = None if cosigned is None else witnessed_size(cosignatures, cosigned)
            note = published_note(store, source.vkey(), size)
            return attach(note, parse_checkpoint(split_note(note)[0]).size, cosignatures)
        return PlainTextResponse(await ledger.witnessed(read))

    @app.get("/v1/vkey", response_class=PlainTextResponse, summary="The log's verifier key",
             responses=text_doc("C2SP vkey, one line"))
    async def get_vkey() -> PlainTextResponse:
        return PlainTextResponse(source.vkey().strip() + "\n")

    @app.get("/v1/entries/{index}", response_model=EntryBody, summary="Ledger entry by index",
             responses=errors_doc(401, 403, 404, 422, 503))
    async def get_entry(index: Index, who: Principal = signed_in) -> EntryBody:
        return EntryBody.model_validate(await ledger(
            lambda store: _seen_by(who, entry(store, index=index), index=index)))

    @app.get("/v1/entries", response_model=EntryBody, summary="Ledger entry by event id",
             responses=errors_doc(401, 403, 404, 422, 503))
    async def find_entry(event_id: Annotated[str, Query(pattern=HEX64)],
                         who: Principal = signed_in) -> EntryBody:
        return EntryBody.model_validate(await ledger(
            lambda store: _seen_by(who, entry(store, event_id=event_id), event_id=event_id)))

    _add_proof_routes(app, source, ledger, reader)


def _add_proof_routes(app: FastAPI, source: LedgerSource, ledger: LedgerReads,
                      reader: Reader) -> None:
    signed_in = Depends(reader)

    @app.get("/v1/proofs/inclusion", response_model=None,
             summary="Inclusion proof bundle (by index or event id)",
             responses={200: {"model": InclusionBundle},
                        **errors_doc(401, 403, 404, 422, 500, 503)})
    async def prove_inclusion(who: Principal = signed_in, index: QueryIndex = None,
                              event_id: QueryHex = None,
                              cosigned: Cosigned = None) -> JSONResponse:
        """Against the latest signed checkpoint (``cosigned=K``: the latest that K witnesses
        cosigned), with its cosignatures; verify with ``govledger ledger verify``. The bundle
        carries the leaf (the event): the caller's tenant only."""
        if (index is None) == (event_id is None):
            raise ApiError(422, Reason.MALFORMED.value, "give exactly one of index, event_id")

        def read(store: LedgerStore, cosignatures: CosignatureStore) -> Bundle:
            _seen_by(who, entry(store, index=index, event_id=event_id), index, event_id)
            return attach_to_bundle(inclusion_bundle(
                store, index=index, event_id=event_id, vkey=source.vkey(),
                size=_size(cosignatures, cosigned)), cosignatures)
        return JSONResponse(await ledger.witnessed(read))

    @app.get("/v1/proofs/consistency", response_model=None,
             summary="Consistency proof bundle between two signed checkpoints",
             responses={200: {"model": ConsistencyBundle}, **errors_doc(404, 422, 500, 503)})
    async def prove_consistency(old_size: Annotated[int, Query(ge=0, le=MAX_INDEX)],
                                new_size: QuerySize = None,
                                cosigned: Cosigned = None) -> JSONResponse:
        """``new_size`` defaults to the latest checkpoint (``cosigned=K``: the latest that K
        witnesses cosigned)."""
        return JSONResponse(await ledger.witnessed(lambda store, cosignatures: attach_to_bundle(
            consistency_bundle(store, old_size, new_size if new_size is not None else
                               _size(cosignatures, cosigned), vkey=source.vkey()),
            cosignatures)))

    @app.get("/v1/proofs/lineage", response_model=None,
             summary="Lineage evidence bundle: the chain back to the root, each hop proved",
             responses={200: {"model": LineageBundle},
                        **errors_doc(401, 403, 404, 422, 500, 503)})
    async def prove_lineage(event_id: Annotated[str, Query(pattern=HEX64)],
                            who: Principal = signed_in,
                            cosigned: Cosigned = None) -> JSONResponse:
        """Every hop carries its event: the caller's tenant only (``cosigned=K``: against
        the latest checkpoint K witnesses cosigned)."""
        def read(store: LedgerStore, cosignatures: CosignatureStore) -> Bundle:
            return attach_to_bundle(_lineage_seen_by(
                who, store, event_id, source.vkey(), _size(cosignatures, cosigned)),
                cosignatures)
        return JSONResponse(await ledger.witnessed(read))


def _json_errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    """errors_doc for a text/plain route: its errors are JSON ErrorBody all the same."""
    return {status: {**doc, "content": {"application/json": {}}}
            for status, doc in errors_doc(*statuses).items()}


def _size(cosignatures: CosignatureStore, cosigned: int | None) -> int | None:
    return None if cosigned is None else witnessed_size(cosignatures, cosigned)
