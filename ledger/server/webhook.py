"""The approval webhook (``GOVLEDGER_APPROVAL_WEBHOOK``, docs/approvals.md): each request
that starts waiting for human approval is POSTed to a URL, so people hear of it.

The body is the authority-signed ``ApprovalRequired`` envelope itself (content type
``application/json``; header ``X-Govledger-Event-Id``: its request id): the receiver verifies
it with the authority's public key (``keys/authority.pub``) before trusting any of it, as
the URL can be sent anything. Delivery is at least once: a non-2xx answer or a network error
is retried with a doubling delay, ``ATTEMPTS`` times; after that the miss is logged as an
error (the request still waits and is listed by ``GET /v1/approvals``; a notification never
decides anything). The API's decision consumer reads the decisions topic from its beginning
at each start, so a restart notifies again the requests still waiting then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import httpx

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import VerifiedEvent

log = logging.getLogger("govledger.webhook")
ATTEMPTS = 5
FIRST_DELAY_S = 0.5
TIMEOUT_S = 5.0
MAX_QUEUED = 10_000


class ApprovalWebhook:
    """Posts each new pending request's ApprovalRequired to ``url`` (module docstring)."""

    def __init__(self, url: str, clock: Callable[[], datetime], *,
                 first_delay_s: float = FIRST_DELAY_S) -> None:
        self.url, self.clock, self.first_delay_s = url, clock, first_delay_s
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MAX_QUEUED)
        self.sent: set[str] = set()
        self.delivered = 0

    def notify(self, verified: VerifiedEvent) -> None:
        """Queue a verified ApprovalRequired, once per request, while its deadline is ahead."""
        event = verified.event
        if not isinstance(event, ApprovalRequired) or event.request_id in self.sent:
            return
        if self.clock() >= event.deadline:
            return  # nobody can approve it any more
        try:
            self.queue.put_nowait((event.request_id, verified.envelope))
        except asyncio.QueueFull:
            log.error("approval webhook: %d notifications queued, dropping the one for "
                      "request %s (it is listed by GET /v1/approvals)", MAX_QUEUED,
                      event.request_id)
            return
        self.sent.add(event.request_id)

    async def run(self) -> str:
        """Deliver queued notifications until cancelled."""
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
            while True:
                request_id, body = await self.queue.get()
                await self._deliver(http, request_id, body)

    async def _deliver(self, http: httpx.AsyncClient, request_id: str, body: bytes) -> None:
        delay = self.first_delay_s
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = await http.post(self.url, content=body, headers={
                    "content-type": "application/json", "x-govledger-event-id": request_id})
                if 200 <= answer.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < ATTEMPTS:
                log.warning("approval webhook: attempt %d for request %s failed (%s); "
                            "retrying in %.1f s", attempt, request_id[:16], problem, delay)
                await asyncio.sleep(delay)
                delay *= 2
        log.error("approval webhook: request %s not delivered after %d attempts (%s)",
                  request_id, ATTEMPTS, problem)
