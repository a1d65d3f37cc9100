"""The executor gate: nothing runs without a verified artifact and an ExecutionAllowed.

::

    gate = Gate(client, runtime_signer, runtime_principal, keyring, measure=lambda: digest,
                require_logged=http_log_check(api_url, ledger_vkey,
                                              auth=SignedRequests(runtime_signer)))
    # or, to require the checkpoint cosigned by 2 of 3 witnesses (split-view defence):
    #     http_log_check(..., witnesses=WitnessPolicy.of(vkeys, 2))
    async with gate.authorize(grant_envelope, "read", "db/orders/42"):
        ...   # runs only after the processor's signed ExecutionAllowed

Steps (DESIGN.md section 4), each failure raising :class:`ExecutionRefusedError` with a reason
code, and the guarded block never entered:

1. offline: :func:`ledger.core.artifact.check_artifact` (authority signature, window, runtime
   identity, action and resource in scope, the environment digest measured *now*);
2. the artifact's inclusion proof against a signed checkpoint (``require_logged``), waited
   for up to the timeout (a fresh grant is under a checkpoint within the checkpoint
   interval): ARTIFACT_NOT_LOGGED when it cannot be shown. On by default: a gate without
   a log check must be asked for with ``allow_unlogged=True``, which is weaker (a grant
   signed with a stolen authority key and never logged then reaches the processor, the
   last line of defence, and no evidence of the artifact is required before it runs);
3. a signed ExecutionRequested on ``gov.executions``, then the processor's verdict
   (revocation state of every ancestor, single use, lineage) within ``timeout``; a timeout
   or any error refuses (UNAVAILABLE);
4. after the block: a signed ExecutionCompleted, or ExecutionFailed with the error's type;
   both carry the digests the caller put in ``digests`` (an :class:`ExecutionDigests`: of the
   arguments the execution ran with and of its result), when it gives one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from ledger.core.artifact import CheckedArtifact, check_artifact
from ledger.core.bundles import verify_bundle
from ledger.core.cosignature import WitnessPolicy, verify_bundle_witnessed
from ledger.core.execution_events import ExecutionCompleted, ExecutionFailed, ExecutionRequested
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.errors import ConfigError, ProofError, Reason, Rejected, Unavailable
from ledger.sdk.client import Client, Decision

log = logging.getLogger("govledger.gate")

#: Returns True when the artifact (its envelope bytes) is provably in the log.
LogCheck = Callable[[CheckedArtifact], Awaitable[bool]]


class ExecutionRefusedError(Rejected):
    """The gate refused: the guarded code did not run."""


@dataclass(slots=True)
class ExecutionDigests:
    """What the execution report names (``sha256:<hex>`` each): the arguments, known before
    the block runs, and the result, which the guarded block sets before it ends."""

    arguments: str | None = None
    result: str | None = None


class Gate:
    """Gates one runtime identity's executions."""

    def __init__(self, client: Client, runtime: Signer, principal: Principal, keyring: KeyRing,
                 *, measure: Callable[[], str], timeout: float = 10.0,
                 require_logged: LogCheck | None = None, allow_unlogged: bool = False) -> None:
        """Raises ConfigError without ``require_logged`` unless ``allow_unlogged`` (weaker,
        see the module docstring) says so explicitly."""
        if require_logged is None and not allow_unlogged:
            raise ConfigError("the gate proves each artifact is logged before it runs: give "
                              "require_logged=http_log_check(api_url, vkey), or "
                              "allow_unlogged=True to skip that check (weaker)")
        self.client = client
        self.runtime = runtime
        self.principal = principal
        self.keyring = keyring
        self.measure = measure
        self.timeout = timeout
        self.require_logged = require_logged
        self.last_verdict: Decision | None = None

    def check_offline(self, grant: bytes, action: str, resource: str) -> CheckedArtifact:
        """Step 1 only. Raises ExecutionRefusedError."""
        try:
            return check_artifact(grant, self.keyring, self.client.clock(), runtime=self.principal,
                                  action=action, resource=resource, environment=self.measure())
        except Rejected as exc:
            raise ExecutionRefusedError(exc.reason, exc.detail) from exc

    @asynccontextmanager
    async def authorize(self, grant: bytes, action: str, resource: str, *,
                        digests: ExecutionDigests | None = None
                        ) -> AsyncIterator[CheckedArtifact]:
        """Run the guarded block only when every step allows. Raises ExecutionRefusedError.

        ``digests``: reported in ExecutionCompleted / ExecutionFailed as they stand when the
        block ends."""
        checked = self.check_offline(grant, action, resource)
        if self.require_logged is not None and (problem := await self._logged(checked)):
            raise ExecutionRefusedError(Reason.ARTIFACT_NOT_LOGGED, problem)
        art = checked.artifact
        request = ExecutionRequested(
            signer=self.principal.identity, tenant=art.tenant, nonce=_nonce(),
            issued_at=self.client.clock(), artifact_id=checked.artifact_id,
            root=art.lineage.root, action=action, resource=resource,
            environment=self.measure())
        try:
            execution_id = await self.client.send("executions", request, self.runtime)
            verdict = await self.client.decision(execution_id, self.timeout)
        except Unavailable as exc:
            raise ExecutionRefusedError(Reason.UNAVAILABLE, str(exc)) from exc
        self.last_verdict = verdict
        if not verdict.allow:
            reason = Reason(verdict.reasons[0]) if verdict.reasons else Reason.UNAVAILABLE
            raise ExecutionRefusedError(reason, "refused by the processor")
        common = {"signer": self.principal.identity, "tenant": art.tenant,
                  "issued_at": self.client.clock(), "artifact_id": checked.artifact_id,
                  "root": art.lineage.root, "execution_id": execution_id}
        digests = digests if digests is not None else ExecutionDigests()
        try:
            yield checked
        except BaseException as exc:
            failed = ExecutionFailed(nonce=_nonce(), error=type(exc).__name__[:512],
                                     arguments_digest=digests.arguments,
                                     result_digest=digests.result,
                                     **common)  # type: ignore[arg-type]
            await self._report(failed)
            raise
        done = ExecutionCompleted(nonce=_nonce(), arguments_digest=digests.arguments,
                                  result_digest=digests.result,
                                  **common)  # type: ignore[arg-type]
        await self._report(done)

    async def _report(self, event: ExecutionCompleted | ExecutionFailed) -> None:
        try:
            await self.client.send("executions", event, self.runtime)
        except Unavailable as exc:
            # The execution happened and its verdict is logged; the report is best effort.
            log.warning("could not report %s: %s", event.KIND, exc)

    async def _logged(self, checked: CheckedArtifact) -> str:
        """Retry the log check until ``timeout``. Returns "" when the artifact is proven
        logged, else why not (the last error, if the log could not be reached)."""
        assert self.require_logged is not None
        deadline = asyncio.get_running_loop().time() + self.timeout
        problem = "no inclusion proof under a signed checkpoint"
        while True:
            try:
                if await self.require_logged(checked):
                    return ""
            except Unavailable as exc:  # retried until the deadline, then part of the refusal
                problem = f"log unreachable: {exc}"
            if asyncio.get_running_loop().time() >= deadline:
                return problem
            await asyncio.sleep(0.2)


def http_log_check(api_url: str, vkey: str, *, timeout: float = 5.0,
                   witnesses: WitnessPolicy | None = None,
                   auth: httpx.Auth | None = None) -> LogCheck:
    """A :data:`LogCheck` over a govledger API: fetch the artifact's inclusion bundle, verify
    it offline against ``vkey`` (checkpoint signature, proof, leaf hash), and require the
    proven leaf to be exactly the artifact's envelope bytes; with ``witnesses`` ("k of these
    witness keys") the proof is against the latest checkpoint k witnesses cosigned and
    needs k valid cosignatures on it. A missing entry (or one not yet witnessed) is False;
    an unreachable API raises Unavailable (the gate retries, then refuses). The bundle
    carries the artifact, so the API wants a reader of its tenant: ``auth`` (e.g.
    ``ledger.sdk.httpsig.SignedRequests(runtime)``); a 401 or 403 refuses at once
    (ExecutionRefusedError ARTIFACT_NOT_LOGGED, saying why)."""
    params = {} if witnesses is None else {"cosigned": str(witnesses.quorum)}

    async def check(checked: CheckedArtifact) -> bool:
        try:
            async with httpx.AsyncClient(base_url=api_url, timeout=timeout,
                                         auth=auth) as http:
                response = await http.get("/v1/proofs/inclusion",
                                          params={"event_id": checked.artifact_id, **params})
        except httpx.HTTPError as exc:
            raise Unavailable(f"log check: {exc}") from exc
        if response.status_code in (401, 403):
            raise ExecutionRefusedError(Reason.ARTIFACT_NOT_LOGGED, (
                f"the API refused the log check ({response.status_code}: "
                f"{response.text[:200]}); give the gate a credential of the artifact's tenant"))
        if response.status_code != 200:
            return False
        try:  # whatever the API answered, only a verified inclusion of these bytes counts
            bundle = response.json()
            if not isinstance(bundle, dict) or "index" not in bundle:
                raise ProofError("the API did not answer with an inclusion bundle")
            verify_bundle(bundle, vkey)
            if witnesses is not None:
                verify_bundle_witnessed(bundle, witnesses, now=int(time.time()))
            leaf = base64.b64decode(bundle["leaf"], validate=True)
        except (ProofError, ConfigError, ValueError, KeyError, TypeError) as exc:
            log.warning("inclusion bundle for %s does not verify: %s",
                        checked.artifact_id[:16], exc)
            return False
        return leaf == checked.envelope
    return check


def _nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode().rstrip("=")
