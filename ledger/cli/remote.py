"""Reading a govledger API over HTTP for the ledger commands: proof bundles (``ledger prove
--api``, ``ledger verify URL``) and tlog-tiles paths (``ledger mirror``).

Errors are translated here, at the boundary: no answer, a 5xx or a body over the cap is
Unavailable (retry later; nothing is accepted), a 404 is NotFound, any other status a
ProofError carrying the API's ``{"reason", "detail"}`` (the server refused what was asked).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import httpx

from ledger.errors import ConfigError, NotFound, ProofError, Unavailable

MAX_BODY_BYTES: Final = 64 << 20      # a lineage bundle of 64 hops is far below this
TIMEOUT_S: Final = 30.0


def _detail(body: bytes) -> str:
    try:
        parsed = json.loads(body)
        return f"{parsed['reason']}: {parsed['detail']}"
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", errors="replace")


class RemoteLog:
    """GETs under one base URL with one connection pool. Use as a context manager. Raises
    ConfigError for a base that is not an http(s) URL."""

    def __init__(self, base: str, timeout: float = TIMEOUT_S) -> None:
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"the API must be an http:// or https:// URL, not {base[:80]!r}")
        self.base = base.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def __enter__(self) -> RemoteLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> bytes:
        """The body of ``GET base/path``. Raises Unavailable, NotFound or ProofError."""
        url = f"{self.base}/{path.lstrip('/')}" if path else self.base
        try:
            with self._http.stream("GET", url, params=params) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise Unavailable(f"{url}: answer larger than {MAX_BODY_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.base}: {exc}") from exc
        status = response.status_code
        if status == 200:
            return bytes(body)
        if status == 404:
            raise NotFound(f"{url}: {_detail(bytes(body))}")
        if status >= 500:
            raise Unavailable(f"{url}: {status} {_detail(bytes(body))}")
        raise ProofError(f"{url}: {status} {_detail(bytes(body))}")


def fetch_url(url: str) -> bytes:
    """The body of one URL (``ledger verify https://...``). Raises as :meth:`RemoteLog.get`."""
    with RemoteLog(url) as remote:
        return remote.get("")
