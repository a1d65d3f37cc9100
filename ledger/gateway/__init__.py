"""The MCP gateway: an MCP server in front of MCP servers that authorizes every tool call
with govledger before it reaches the upstream (docs/gateway.md)."""
