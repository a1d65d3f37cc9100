"""A lean HTTP/1.1 client for the service benchmarks: one keep-alive connection, asyncio
streams, no pool, no parsing beyond the status line, Content-Length and chunked bodies.

Why: a general client's connection pool cost more CPU per request than the server it was
measuring (issue 14: 61% of the old benchmark's process was httpx's pool scan). This one
costs ~tens of microseconds per request, reported by the benchmark next to the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class RawHttp:
    """One HTTP/1.1 connection; requests on it go one at a time (keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str, token: str | None = None) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.auth = "" if token is None else f"Authorization: Bearer {token}\r\n"

    @classmethod
    async def connect(cls, url: str, token: str | None = None) -> RawHttp:
        """A connection to ``url``; ``token``: an API bearer token sent with each request
        (reading decisions needs a reader: ``govledger tokens create``)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}", token)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request, return (status, body). Raises ConnectionError on a closed
        connection or a malformed answer."""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode("ascii") + body)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ConnectionError(f"no HTTP answer: {exc}") from exc
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise ConnectionError(f"bad status line {lines[0]!r}") from exc
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return status, await self._chunked()
        return status, await self.reader.readexactly(int(headers.get("content-length", "0")))

    async def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):  # the server closed it first: closed too
            await self.writer.wait_closed()
