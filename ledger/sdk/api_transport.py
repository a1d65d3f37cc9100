"""The HTTP API as the SDK's transport: ``Client(api=URL)`` (ledger.sdk.client).

Two calls of the API (docs/api.md): ``POST /v1/events?wait=S`` (submit, and the decision in
the same round trip when it comes within ``S``) and ``GET /v1/decisions/{id}?wait=S``. One
HTTP/1.1 connection pool per client. This module moves bytes only: the client verifies every
decision it returns (``ledger.sdk.decisions.verify_decision``), exactly as over Kafka, so
the API is trusted for nothing but delivery.

Errors: 503 and any transport failure raise Unavailable; an answer naming a reason code
(400/413/415/422) raises Rejected with it; anything else unexpected raises Unavailable.
"""

from __future__ import annotations

from typing import Final

import httpx

from ledger.errors import Reason, Rejected, Unavailable

MAX_WAIT_S: Final = 30.0   # the API's cap on ``wait``
WAIT_GRACE_S: Final = 10.0  # the HTTP timeout on top of a wait


class ApiTransport:
    """Submit envelopes and fetch decision envelopes over a govledger HTTP API."""

    def __init__(self, url: str, timeout: float = 10.0, auth: httpx.Auth | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.auth = auth
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(base_url=self.url, timeout=self.timeout, auth=self.auth)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def submit(self, envelope: bytes, wait_s: float) -> tuple[str, bytes | None]:
        """POST the envelope; its event id and, if it came within ``wait_s``, the decision
        envelope (unverified). Raises Rejected, Unavailable."""
        wait = min(max(wait_s, 0.0), MAX_WAIT_S)
        response = await self._call("POST", "/v1/events", wait, envelope)
        if response.status_code not in (200, 202):
            _raise_for(response)
        body = response.json()
        event_id = str(body["event_id"])
        if response.status_code == 202:
            return event_id, None
        return event_id, str(body["decision"]["envelope"]).encode("utf-8")

    async def decision(self, subject_id: str, wait_s: float) -> bytes | None:
        """The decision envelope about ``subject_id`` (unverified), None if none within
        ``wait_s``. Raises Rejected, Unavailable."""
        if not (len(subject_id) == 64 and all(c in "0123456789abcdef" for c in subject_id)):
            raise Rejected(Reason.MALFORMED, "an event id is 64 lowercase hex digits")
        wait = min(max(wait_s, 0.0), MAX_WAIT_S)
        response = await self._call("GET", f"/v1/decisions/{subject_id}", wait)
        if response.status_code == 404 and _reason(response) == "PENDING":
            return None
        if response.status_code != 200:
            _raise_for(response)
        return str(response.json()["envelope"]).encode("utf-8")

    async def _call(self, method: str, path: str, wait: float, body: bytes | None = None
                    ) -> httpx.Response:
        if self._http is None:
            raise Unavailable("client not started")
        headers = {} if body is None else {"content-type": "application/json"}
        try:
            return await self._http.request(
                method, path, params={"wait": f"{wait:.3f}"}, content=body, headers=headers,
                timeout=self.timeout + wait + WAIT_GRACE_S)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from exc


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason", ""))
    except ValueError:
        return ""


def _raise_for(response: httpx.Response) -> None:
    """Raise what an error answer means. Raises Rejected or Unavailable, always."""
    reason = _reason(response)
    detail = response.text[:300]
    if response.status_code != 503 and reason in Reason.__members__ and (
            400 <= response.status_code < 500):
        raise Rejected(Reason(reason), f"the API refused it ({response.status_code}): {detail}")
    raise Unavailable(f"the API answered {response.status_code}: {detail}")


