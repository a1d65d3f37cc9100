"""The upstream MCP servers the gateway fronts, each through the SDK's ``ClientSession``
over its transport (a stdio command the gateway starts, or a streamable HTTP URL).

A link connects on first use and again after its server crashed or hung up: a call that
finds the connection closed fails (UPSTREAM_UNAVAILABLE) and the next one reconnects. The
transport's contexts are entered and left in one task per connection (anyio requires it),
which waits until the link is closed or found broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TextIO

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from ledger.gateway.config import Upstream

log = logging.getLogger("govledger.gateway")


class UpstreamError(Exception):
    """The upstream did not answer the call. ``code`` names why in the MCP error; the class
    name is what ExecutionFailed records."""

    code = "UPSTREAM_ERROR"  # it answered with a protocol error, or an answer we refuse

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.code}: {detail}")


class UpstreamUnavailableError(UpstreamError):
    """Cannot connect, or it crashed or hung up mid-call."""

    code = "UPSTREAM_UNAVAILABLE"


class UpstreamTimeoutError(UpstreamError):
    """No answer within the call timeout."""

    code = "UPSTREAM_TIMEOUT"


class UpstreamLink:
    """One upstream server. Safe to share between concurrent calls."""

    def __init__(self, name: str, spec: Upstream, *, connect_timeout: float,
                 errlog: TextIO = sys.stderr) -> None:
        self.name = name
        self.spec = spec
        self.connect_timeout = connect_timeout
        self.errlog = errlog
        self._session: ClientSession | None = None
        self._stop: asyncio.Event | None = None
        self._holder: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _transport(self) -> AbstractAsyncContextManager[Any]:
        if self.spec.url is not None:
            return streamable_http_client(str(self.spec.url))
        assert self.spec.command is not None
        return stdio_client(StdioServerParameters(
            command=self.spec.command, args=list(self.spec.args), env=self.spec.env or None,
            cwd=self.spec.cwd), errlog=self.errlog)

    async def _hold(self, ready: asyncio.Future[ClientSession], stop: asyncio.Event) -> None:
        try:
            async with AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                await session.initialize()
                ready.set_result(session)
                await stop.wait()
        except Exception as exc:  # reported to the caller waiting on ready, or logged
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("upstream %s closed: %s", self.name, exc)

    async def session(self) -> ClientSession:
        """A connected, initialized session. Raises UpstreamUnavailableError."""
        async with self._lock:
            if self._session is not None and self._holder is not None \
                    and not self._holder.done():
                return self._session
            await self._drop()
            ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()
            self._holder = asyncio.create_task(self._hold(ready, self._stop),
                                               name=f"govledger-upstream-{self.name}")
            try:
                self._session = await asyncio.wait_for(asyncio.shield(ready),
                                                       self.connect_timeout)
            except Exception as exc:  # whatever the transport raised: it is not connected
                await self._drop()
                raise UpstreamUnavailableError(f"cannot connect to upstream {self.name}: "
                                    f"{type(exc).__name__}: {exc}") from exc
            return self._session

    async def _drop(self) -> None:
        self._session = None
        if self._stop is not None:
            self._stop.set()
        if self._holder is not None:
            holder, self._holder = self._holder, None
            try:
                await asyncio.wait_for(holder, 5.0)
            except TimeoutError:  # a transport that does not close: cancel it
                holder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await holder

    async def list_tools(self) -> list[types.Tool]:
        """Every tool the server lists (all pages). Raises UpstreamError."""
        session = await self.session()
        tools: list[types.Tool] = []
        cursor: str | None = None
        try:
            while True:
                page = await session.list_tools(
                    params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                tools += page.tools
                cursor = page.next_cursor
                if not cursor:
                    return tools
        except MCPError as exc:
            raise await self._failed(exc) from exc

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float
                   ) -> types.CallToolResult:
        """The upstream's result. Raises UpstreamError."""
        session = await self.session()
        try:
            return await session.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except MCPError as exc:
            raise await self._failed(exc) from exc
        except (RuntimeError, ValueError) as exc:  # an answer the SDK refuses (bad shape)
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc

    async def _failed(self, exc: MCPError) -> UpstreamError:
        if exc.code == CONNECTION_CLOSED:
            async with self._lock:
                await self._drop()  # the next call reconnects
            return UpstreamUnavailableError(f"upstream {self.name} closed the connection")
        if exc.code == REQUEST_TIMEOUT:
            return UpstreamTimeoutError(f"upstream {self.name}: {exc.message}")
        return UpstreamError(f"upstream {self.name} answered error {exc.code}: {exc.message}")

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


@contextlib.asynccontextmanager
async def links(specs: dict[str, Upstream], *, connect_timeout: float
                ) -> AsyncIterator[dict[str, UpstreamLink]]:
    """A link per upstream, closed (servers stopped, sessions ended) when the block ends."""
    opened = {name: UpstreamLink(name, spec, connect_timeout=connect_timeout)
              for name, spec in specs.items()}
    try:
        yield opened
    finally:
        for link in opened.values():
            await link.close()
