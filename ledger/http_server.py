"""An HTTP server inside a govledger process (the service's API, the MCP gateway): uvicorn
on the process's own event loop, with httptools as its HTTP/1.1 parser (issue 14: the parser
was a measurable part of the API's CPU per request), and without uvicorn's signal handling
(the process owns SIGINT/SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from ledger.errors import Unavailable


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """``app`` served at ``host:port`` (0: a free port) on the running loop; ``what`` names
    it in errors; ``lifespan`` as uvicorn's (the MCP gateway's app needs its lifespan)."""

    def __init__(self, app: ASGIApp, host: str, port: int, *, what: str = "the HTTP API",
                 lifespan: Literal["auto", "on", "off"] = "off") -> None:
        self.what = what
        self._server = _QuietServer(uvicorn.Config(
            app, host=host, port=port, http="httptools", log_level="warning",
            lifespan=lifespan, access_log=False))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Listen; returns the base URL. Raises Unavailable when it cannot (uvicorn exits
        the process on a port it cannot bind: that is turned into the error here)."""
        self._task = task = asyncio.create_task(self._serve(), name=self.what)
        while not self._server.started:
            if task.done():
                task.result()
                raise Unavailable(f"{self.what} did not start")
            await asyncio.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def _serve(self) -> None:
        config = self._server.config
        try:
            await self._server.serve()
        except SystemExit as exc:  # uvicorn's answer to a failed bind or start
            raise Unavailable(f"{self.what} could not listen on {config.host}:{config.port} "
                              f"(uvicorn exited with {exc.code})") from exc

    async def stop(self) -> None:
        """Stop accepting, finish what is in flight."""
        self._server.should_exit = True
        if self._task is not None:  # what failed it was raised by start() or served()
            await asyncio.wait({self._task})

    async def served(self) -> str:
        """Waits until the server stops; raises what stopped it, if anything did."""
        if self._task is None:
            raise Unavailable("the HTTP server was never started")
        await asyncio.shield(self._task)
        return "the HTTP server stopped"
