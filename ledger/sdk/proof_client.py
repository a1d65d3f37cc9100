"""ProofClient: checkpoints, proof and evidence bundles fetched from a govledger API and
verified offline (log key, leaf signers, witnesses) before they are returned."""

from __future__ import annotations

import httpx

from ledger.clock import utc_now
from ledger.core.bundles import verify_bundle
from ledger.core.checkpoint import parse_vkey, verify_checkpoint
from ledger.core.cosignature import WitnessPolicy, verify_bundle_witnessed, verify_witnessed
from ledger.core.signers import SignerKeys
from ledger.errors import ConfigError, ProofError, Unavailable

__all__ = ["ProofClient"]


class ProofClient:
    """Fetch checkpoints, proof and evidence bundles from a govledger API and verify them
    offline against the log's vkey and ``signers`` (who must have signed each leaf: the
    authority key at least) before returning them. With ``witnesses`` (a
    :class:`~ledger.core.cosignature.WitnessPolicy`, "k of these witness keys") it asks for
    proofs against the latest checkpoint k witnesses cosigned and requires k valid
    cosignatures by distinct policy keys on it. A bundle that does not verify, or is
    witnessed by fewer than k, raises ProofError; :meth:`lineage` without ``signers`` raises
    ConfigError; an unreachable API raises Unavailable.

    Inclusion and lineage bundles carry events, so the API answers them only to a reader
    of their tenant: ``auth`` signs each request (``SignedRequests(signer)`` from
    ``ledger.sdk.httpsig``, or ``bearer(token)``). Without it, or refused (401/403), they
    raise ConfigError; checkpoints and consistency bundles need none."""

    def __init__(self, api_url: str, vkey: str, *, signers: SignerKeys | None = None,
                 witnesses: WitnessPolicy | None = None, timeout: float = 10.0,
                 auth: httpx.Auth | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.vkey = vkey
        self.signers = signers
        self.witnesses = witnesses
        self.timeout = timeout
        self.auth = auth

    @property
    def _cosigned(self) -> int | None:
        return None if self.witnesses is None else self.witnesses.quorum

    async def _get(self, path: str, **params: str | int | None) -> httpx.Response:
        try:
            async with httpx.AsyncClient(base_url=self.api_url, timeout=self.timeout,
                                         auth=self.auth) as http:
                response = await http.get(path, params={k: v for k, v in params.items()
                                                        if v is not None})
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.api_url}: {exc}") from exc
        if response.status_code == 503:
            raise Unavailable(f"{path}: service unavailable")
        if response.status_code in (401, 403):
            raise ConfigError(f"{path}: the API refused the credential "
                              f"({response.status_code} {response.text[:200]})")
        if response.status_code != 200:
            raise ProofError(f"{path}: {response.status_code} {response.text[:200]}")
        return response

    def _verified(self, bundle: dict[str, object]) -> dict[str, object]:
        verify_bundle(bundle, self.vkey, self.signers)
        if self.witnesses is not None:
            verify_bundle_witnessed(bundle, self.witnesses, now=int(utc_now().timestamp()))
        return bundle

    async def checkpoint(self) -> str:
        """The latest signed checkpoint note (with ``witnesses``: the latest that k of them
        cosigned), verified against the vkey and the witness policy."""
        note = (await self._get("/v1/checkpoint", cosigned=self._cosigned)).text
        verify_checkpoint(note, parse_vkey(self.vkey))
        if self.witnesses is not None:
            verify_witnessed(note, self.witnesses, now=int(utc_now().timestamp()))
        return note

    async def inclusion(self, *, event_id: str | None = None, index: int | None = None
                        ) -> dict[str, object]:
        return self._verified((await self._get(
            "/v1/proofs/inclusion", event_id=event_id, index=index,
            cosigned=self._cosigned)).json())

    async def consistency(self, old_size: int, new_size: int | None = None
                          ) -> dict[str, object]:
        return self._verified((await self._get(
            "/v1/proofs/consistency", old_size=old_size, new_size=new_size,
            cosigned=self._cosigned)).json())

    async def lineage(self, event_id: str) -> dict[str, object]:
        """The evidence bundle of ``event_id`` back to its lineage root, verified."""
        return self._verified((await self._get("/v1/proofs/lineage", event_id=event_id,
                                                cosigned=self._cosigned)).json())
