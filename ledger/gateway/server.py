"""The gateway as an MCP server (the SDK's low-level ``Server``), over stdio or streamable
HTTP: ``tools/list`` and ``tools/call`` of the upstreams, each call through
:class:`~ledger.gateway.calls.CallPipeline`.

Every failure is an MCP error whose message starts with a reason code and whose ``data`` is
``{"reason": CODE, "detail": ...}``:

==========  ======================================================  =====================
JSON-RPC    reasons                                                 the upstream was called
==========  ======================================================  =====================
-32602      ARGUMENT_MISMATCH, OVERSIZED, MALFORMED (the arguments) no
-32010      TOOL_NOT_MAPPED, a denial's or the gate's reason code   no
-32011      UNAVAILABLE (no decision or verdict in time)            no
-32012      UPSTREAM_UNAVAILABLE, UPSTREAM_TIMEOUT, UPSTREAM_ERROR  yes: ExecutionFailed
-32013      APPROVAL_PENDING (people have not decided yet: retry)   no
==========  ======================================================  =====================

APPROVAL_PENDING's ``data`` also holds ``request_id``, ``root`` (what ``govledger approvals
approve`` needs), ``role``, ``k``, ``deadline`` and ``retry: true``: the same call, retried,
waits for that request again (:mod:`ledger.gateway.grants`).

A call runs in a task of its own, shielded from the client: a client that disconnects or
cancels mid-call does not cut the call short between the upstream and the ledger, so every
call that reached an upstream has its ExecutionCompleted or ExecutionFailed. On shutdown the
gateway waits for the calls in flight (up to ``call_timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from ledger.errors import Rejected, Unavailable
from ledger.gateway.calls import CallPipeline
from ledger.gateway.grants import ApprovalPending
from ledger.gateway.rules import CallCode, CallRefused
from ledger.gateway.upstreams import UpstreamError
from ledger.http_server import HttpServer

log = logging.getLogger("govledger.gateway")

DENIED, UNAVAILABLE, UPSTREAM, PENDING = -32010, -32011, -32012, -32013


def mcp_error(exc: Exception) -> MCPError:
    """The MCP error for a failed call (the table in the module docstring)."""
    if isinstance(exc, CallRefused):
        code = DENIED if exc.code is CallCode.TOOL_NOT_MAPPED else INVALID_PARAMS
        return _error(code, exc.code.value, exc.detail)
    if isinstance(exc, Rejected):
        return _error(DENIED, exc.reason.value, exc.detail)
    if isinstance(exc, Unavailable):
        return _error(UNAVAILABLE, "UNAVAILABLE", str(exc))
    if isinstance(exc, UpstreamError):
        return _error(UPSTREAM, exc.code, exc.detail)
    if isinstance(exc, ApprovalPending):
        asked = exc.asked
        return _error(PENDING, "APPROVAL_PENDING", exc.detail, request_id=exc.request_id,
                      root=exc.root, role=asked.role, k=asked.k,
                      deadline=asked.deadline.isoformat(), retry=True)
    raise TypeError(f"not a call failure: {exc!r}")


def _error(code: int, reason: str, detail: str, **more: object) -> MCPError:
    return MCPError(code, f"{reason}: {detail}" if detail else reason,
                    {"reason": reason, "detail": detail, **more})


class GatewayServer:
    """The MCP face of a :class:`CallPipeline`."""

    def __init__(self, pipeline: CallPipeline, *, name: str = "govledger-gateway") -> None:
        self.pipeline = pipeline
        self.inflight: set[asyncio.Task[types.CallToolResult]] = set()
        self.server: Server[Any] = Server(name, on_list_tools=self._list_tools,
                                          on_call_tool=self._call_tool)

    async def _list_tools(self, ctx: ServerRequestContext[Any],
                          params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        try:
            return types.ListToolsResult(tools=await self.pipeline.list_tools())
        except UpstreamError as exc:
            raise mcp_error(exc) from exc

    async def _call_tool(self, ctx: ServerRequestContext[Any],
                         params: types.CallToolRequestParams) -> types.CallToolResult:
        task = asyncio.create_task(
            self.pipeline.call(params.name, dict(params.arguments or {}), params.meta),
            name=f"govledger-call-{params.name[:32]}")
        self.inflight.add(task)
        task.add_done_callback(self._finished)
        try:
            return await asyncio.shield(task)
        except (CallRefused, Rejected, Unavailable, UpstreamError, ApprovalPending) as exc:
            raise mcp_error(exc) from exc

    def _finished(self, task: asyncio.Task[types.CallToolResult]) -> None:
        self.inflight.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Also seen by the handler unless the client went away first.
            log.info("call %s ended: %s", task.get_name(), exc)

    async def drain(self, timeout: float) -> None:
        """Wait for the calls in flight to finish and report (at most ``timeout`` s)."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=timeout)

    async def serve_stdio(self) -> None:
        """Serve one client on this process's stdin/stdout until it closes them."""
        async with stdio_server() as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())

    async def serve_http(self, host: str, port: int, stop: asyncio.Event) -> None:
        """Serve streamable HTTP on ``host:port`` (0: a free port) at ``/mcp`` until ``stop``;
        prints ``govledger: mcp <url>`` to stderr once listening."""
        app = self.server.streamable_http_app(host=host)
        server = HttpServer(app, host, port, what="the gateway's HTTP server",
                            lifespan="auto")
        url = await server.start()
        print(f"govledger: mcp {url}/mcp", file=sys.stderr, flush=True)
        served = asyncio.create_task(server.served())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({served, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            await server.stop()
        await served  # raises what stopped the server, if anything did
