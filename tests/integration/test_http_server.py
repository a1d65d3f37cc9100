"""The HTTP server of the service and the MCP gateway (ledger/http_server.py): a port it
cannot bind is an Unavailable from its start, not uvicorn's process exit; it serves and
stops on its loop."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ledger.errors import Unavailable
from ledger.http_server import HttpServer

pytestmark = pytest.mark.integration


def app() -> Starlette:
    async def hello(_: object) -> PlainTextResponse:
        return PlainTextResponse("hello")
    return Starlette(routes=[Route("/", hello)])


def test_a_port_in_use_is_an_unavailable_from_the_start_and_the_loop_goes_on() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def start() -> str:
            server = HttpServer(app(), "127.0.0.1", port)
            try:
                with pytest.raises(Unavailable, match=f"could not listen on 127.0.0.1:{port}"):
                    await server.start()
            finally:
                await server.stop()
            await asyncio.sleep(0)  # the loop still runs: uvicorn's exit did not stop it
            return "survived"
        assert asyncio.run(start()) == "survived"


def test_it_serves_on_a_free_port_and_stops() -> None:
    async def scenario() -> tuple[str, str]:
        server = HttpServer(app(), "127.0.0.1", 0)
        url = await server.start()
        async with httpx.AsyncClient() as http:
            body = (await http.get(url)).text
        watching = asyncio.create_task(server.served())
        await server.stop()
        return body, await asyncio.wait_for(watching, 10)
    assert asyncio.run(scenario()) == ("hello", "the HTTP server stopped")
