"""SyncClient: a blocking facade over :class:`ledger.sdk.client.Client` for scripts."""

from __future__ import annotations

import asyncio

import httpx

from ledger.config import Settings
from ledger.core.events import AuthorizationRequested, AuthorizationRevoked
from ledger.core.keys import KeyRing, Signer
from ledger.sdk.client import Client
from ledger.sdk.decisions import Decision

__all__ = ["SyncClient"]


class SyncClient:
    """A blocking facade over :class:`Client` for scripts: one private event loop.

    ::

        with SyncClient(settings, bootstrap, keyring) as client:
            decision = client.request(event, signer, timeout=10)
    """

    def __init__(self, settings: Settings | None = None, bootstrap: str = "",
                 authority: KeyRing | None = None, *, api: str | None = None,
                 api_auth: httpx.Auth | None = None) -> None:
        self._client = Client(settings, bootstrap, authority, api=api,  # ConfigError first
                              api_auth=api_auth)
        self._loop = asyncio.new_event_loop()

    def __enter__(self) -> SyncClient:
        self._loop.run_until_complete(self._client.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.stop())
            self._loop.close()

    def submit(self, request: AuthorizationRequested, signer: Signer) -> str:
        return self._loop.run_until_complete(self._client.submit(request, signer))

    def decision(self, subject_id: str, timeout: float = 10.0) -> Decision:
        return self._loop.run_until_complete(self._client.decision(subject_id, timeout))

    def request(self, request: AuthorizationRequested, signer: Signer,
                timeout: float = 10.0) -> Decision:
        """Submit and wait for the verified decision. Raises Unavailable on timeout."""
        return self._loop.run_until_complete(self._client.request(request, signer, timeout))

    def revoke(self, revocation: AuthorizationRevoked, signer: Signer,
               timeout: float = 10.0) -> Decision:
        """Submit a revocation and wait for RevocationApplied (or its denial)."""
        return self.decision(self._loop.run_until_complete(
            self._client.revoke(revocation, signer)), timeout)
