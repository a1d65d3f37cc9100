"""A small MCP server for the gateway's tests, built with the SDK's MCPServer (the 2.x name
of FastMCP). Every call that reaches it is appended to the file named by
``MCP_UPSTREAM_CALLS`` (one JSON line, written and fsynced before the tool answers), so a
test can tell whether a call got through.

    python tests/mcp_upstream.py            # stdio
    python tests/mcp_upstream.py http PORT  # streamable HTTP at /mcp
"""

from __future__ import annotations

import json
import os
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("govledger-test-upstream")


def record(tool: str, **arguments: object) -> None:
    path = os.environ.get("MCP_UPSTREAM_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")
            out.flush()
            os.fsync(out.fileno())


@server.tool()
def query(database: str, table: str) -> str:
    """Read rows of a table."""
    record("query", database=database, table=table)
    return f"rows of {database}/{table}"


@server.tool()
def write_row(database: str, table: str, row: str) -> str:
    """Write a row."""
    record("write_row", database=database, table=table, row=row)
    return "written"


@server.tool()
def drop_table(database: str, table: str) -> str:
    """Drop a table (the gateway's policy sends it to an approver first)."""
    record("drop_table", database=database, table=table)
    return f"dropped {database}/{table}"


@server.tool()
def unmapped() -> str:
    """A tool the gateway has no rule for."""
    record("unmapped")
    return "should never run"


@server.tool()
def crash(database: str) -> str:
    """Exit the server process mid-call."""
    record("crash", database=database)
    os._exit(3)


@server.tool()
def hang(database: str, seconds: float = 3600) -> str:
    """Answer only after ``seconds`` (a hung upstream)."""
    record("hang", database=database, seconds=seconds)
    time.sleep(seconds)
    return "late"


@server.tool()
def fail(database: str) -> str:
    """A tool error (the result says isError)."""
    record("fail", database=database)
    raise ToolError("the table is locked")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        import uvicorn
        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[2]),
                    log_level="warning")
    else:
        server.run("stdio")
