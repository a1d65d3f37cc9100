"""One ``tools/call`` through the gateway, in order; the first step that fails ends it:

1. the tool has a rule (unmapped tools are denied: TOOL_NOT_MAPPED) and an upstream that
   lists it, connected (UPSTREAM_UNAVAILABLE before anything is asked of the ledger);
2. the arguments fit: canonical JSON within ``max_argument_bytes`` (OVERSIZED, MALFORMED),
   and the rule's resource template renders (ARGUMENT_MISMATCH);
3. an artifact for the agent (:mod:`ledger.gateway.grants`): a denial carries the
   processor's reason code, no decision in time is UNAVAILABLE, a request that waits for
   people past ``approval_wait_s`` is APPROVAL_PENDING (retry);
4. the executor gate (:class:`ledger.sdk.gate.Gate`): the artifact verified offline, proven
   logged, then the processor's signed ExecutionAllowed;
5. only now the upstream is called (within ``call_timeout_s``);
6. the gate reports ExecutionCompleted, or ExecutionFailed (the upstream crashed, timed out,
   or its result says ``isError``), each with the digest of the arguments and of the result.

Nothing before step 5 reaches the upstream. :meth:`CallPipeline.call` raises
:class:`CallRefused` (steps 1-2), :class:`~ledger.errors.Rejected` (3-4),
:class:`~ledger.errors.Unavailable` (3-4), :class:`~ledger.gateway.grants.ApprovalPending`
(3) or :class:`UpstreamError` (1, 5).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mcp_types as types

from ledger.gateway.config import GatewayConfig
from ledger.gateway.grants import SPENT, Grants
from ledger.gateway.rules import (
    CallCode,
    CallRefused,
    arguments_digest,
    render,
    result_digest,
)
from ledger.gateway.upstreams import UpstreamError, UpstreamLink
from ledger.sdk.gate import ExecutionDigests, ExecutionRefusedError, Gate

log = logging.getLogger("govledger.gateway")


class ToolReportedError(Exception):
    """The upstream ran the tool and its result says ``isError``: the execution failed (the
    result still goes back to the agent, as MCP intends for tool errors)."""

    def __init__(self, result: types.CallToolResult) -> None:
        self.result = result
        super().__init__("the tool reported an error")


class CallPipeline:
    """Authorizes and forwards tool calls. ``routes``: tool name -> upstream, from listings."""

    def __init__(self, config: GatewayConfig, links: Mapping[str, UpstreamLink],
                 grants: Grants, gate: Gate) -> None:
        self.config = config
        self.links = links
        self.grants = grants
        self.gate = gate
        self.routes: dict[str, str] = {}

    async def list_tools(self) -> list[types.Tool]:
        """The tools of every upstream, minus the unmapped ones if the config hides them.
        Raises UpstreamError when no upstream answers."""
        found: list[types.Tool] = []
        errors: list[UpstreamError] = []
        routes: dict[str, str] = {}
        for name, link in self.links.items():
            try:
                tools = await link.list_tools()
            except UpstreamError as exc:
                errors.append(exc)
                continue
            for tool in tools:
                rule = self.config.tools.get(tool.name)
                if rule is not None and rule.upstream not in (None, name):
                    continue  # the rule sends this name to another upstream
                if tool.name in routes:
                    log.warning("tool %s is listed by %s and %s; calls go to %s (pin it with "
                                "tools.%s.upstream)", tool.name, routes[tool.name], name,
                                routes[tool.name], tool.name)
                    continue
                routes[tool.name] = name
                if self.config.hide_unmapped_tools and rule is None:
                    continue
                found.append(tool)
        if errors and not routes:
            raise errors[0]
        for error in errors:
            log.warning("tools/list without an upstream: %s", error)
        self.routes.update(routes)
        return found

    async def _route(self, tool: str) -> UpstreamLink:
        rule = self.config.tools[tool]
        if rule.upstream is not None:
            return self.links[rule.upstream]
        if len(self.links) == 1:
            return next(iter(self.links.values()))
        if tool not in self.routes:
            await self.list_tools()
        if tool not in self.routes:
            raise CallRefused(CallCode.TOOL_NOT_MAPPED, f"no upstream lists tool {tool!r}")
        return self.links[self.routes[tool]]

    async def call(self, tool: str, arguments: dict[str, Any],
                   meta: Mapping[str, object] | None) -> types.CallToolResult:
        """Steps 1-6 of the module docstring."""
        rule = self.config.tools.get(tool)
        if rule is None:                                                             # 1
            raise CallRefused(CallCode.TOOL_NOT_MAPPED,
                              f"tool {tool!r} has no rule in the gateway's config")
        link = await self._route(tool)
        await link.session()  # an upstream that cannot be reached: refused before the ledger
        digests = ExecutionDigests(                                                  # 2
            arguments=arguments_digest(arguments, self.config.max_argument_bytes))
        resource = render(rule.template, arguments)
        grant = await self.grants.obtain(rule.action, resource, meta)                # 3
        try:
            async with self.gate.authorize(grant, rule.action, resource,             # 4
                                           digests=digests):
                result = await link.call(tool, arguments, self.config.call_timeout_s)  # 5
                digests.result = result_digest(                                     # 6
                    result.model_dump(mode="json", by_alias=True, exclude_none=True))
                if result.is_error:
                    raise ToolReportedError(result)
        except ExecutionRefusedError as exc:
            if exc.reason in SPENT:
                self.grants.forget(grant)
            raise
        except ToolReportedError as exc:
            return exc.result
        return result
