"""Builders for the tlog-tiles tests: a ledger of many leaves appended fast, and the API
served by uvicorn on a loopback port.

The leaves are shaped like stored envelopes (the start-up check reads event id, kind and
parent from them) but carry no real signature: they are appended as pre-verified records,
as the ledger benchmark does, so a 70,000-leaf ledger takes seconds, not minutes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from ledger.core.envelope import payload_type
from ledger.errors import Reason, Rejected
from ledger.log.ledger_dir import open_ledger, read_vkey
from ledger.log.recompute import leaf_columns
from ledger.log.records import LeafRecord
from ledger.server.api import make_api
from tests.http_support import served
from tests.ledger_support import make_ledger
from tests.unit.test_api import AUDIT_TOKEN, FakeBackend, api_auth

_TYPE = payload_type("PolicyPublished").encode()


def fake_leaf(i: int, tag: str = "") -> bytes:
    """Leaf ``i``: an envelope-shaped byte string (unsigned), distinct per (i, tag)."""
    payload = b'{"n":"%012d","tag":"%s"}' % (i, tag.encode())
    return (b'{"payload":"' + base64.b64encode(payload) + b'","payloadType":"' + _TYPE
            + b'","signatures":[{"keyid":"test","sig":"AAAA"}]}')


def _refuse(data: bytes) -> LeafRecord:
    raise Rejected(Reason.KEY_UNKNOWN, "the tiles tests append pre-verified records only")


def grow(data_dir: Path, start: int, stop: int, tag: str = "", batch: int = 5000) -> None:
    """Append fake leaves ``start..stop`` (a signed checkpoint after each batch)."""
    seq = open_ledger(data_dir, _refuse)
    try:
        for lo in range(start, stop, batch):
            records = []
            for i in range(lo, min(stop, lo + batch)):
                leaf = fake_leaf(i, tag)
                columns = leaf_columns(leaf)
                assert columns is not None
                records.append(LeafRecord(columns[0].hex(), columns[1], leaf))
            seq.append_records(records)
    finally:
        seq.close()


def tiles_ledger(root: Path, sizes: list[int], tag: str = "") -> Path:
    """A ledger grown to each of ``sizes`` in turn (a checkpoint at each)."""
    data_dir = make_ledger(root)
    done = 0
    for size in sizes:
        grow(data_dir, done, size, tag, batch=size - done)
        done = size
    return data_dir


@contextmanager
def serve(data_dir: Path) -> Iterator[str]:
    """The API over ``data_dir`` (a fake backend, the real ledger routes, the test readers
    of ``tests.unit.test_api.api_auth``) in a uvicorn thread on a free loopback port;
    yields the base URL."""
    backend = FakeBackend(data_dir, read_vkey(data_dir))
    with served(make_api(backend, auth=api_auth())) as url:
        yield url


def fetch_all(base: str, paths: Sequence[str]) -> dict[str, bytes]:
    """GET each path under ``base`` as the test auditor (tenant *: entry bundles need it), 8
    at a time (each loopback round trip here costs ~40 ms of delayed ACK, not CPU); every
    answer must be 200."""
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}) as http, \
            ThreadPoolExecutor(8) as pool:
        def one(path: str) -> bytes:
            answer = http.get(f"{base}/{path}")
            assert answer.status_code == 200, (path, answer.text[:200])
            return answer.content
        return dict(zip(paths, pool.map(one, paths), strict=True))
