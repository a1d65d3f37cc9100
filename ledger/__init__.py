"""govledger's SDK surface: ``from ledger import Client, Gate, verify_bundle, ...``.

Each name is re-exported from the module that holds it and loaded on first use (PEP 562), so
``import ledger`` (which every ``ledger.*`` import runs) stays cheap: it loads no broker
client, no server and no processor. The modules behind the names:

- ``ledger.sdk.client``: Client (async), ProofClient, Decision; ``ledger.sdk.sync_client``:
  SyncClient
- ``ledger.sdk.gate``: Gate, ExecutionRefusedError
- ``ledger.sdk.httpsig``: SignedRequests (sign API requests with a keyring key, RFC 9421)
- ``ledger.core.bundles``: verify_bundle, VerifiedBundle (offline bundle verification)
- ``ledger.core.cosignature``: WitnessPolicy, verify_witnessed (k of these witness keys)
- ``ledger.core.events``: the event models, one per kind
- ``ledger.errors``: the typed errors and the Reason codes
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: at run time __getattr__ below loads each name
    from ledger.core.bundles import VerifiedBundle as VerifiedBundle
    from ledger.core.bundles import verify_bundle as verify_bundle
    from ledger.core.cosignature import WitnessPolicy as WitnessPolicy
    from ledger.core.cosignature import verify_witnessed as verify_witnessed
    from ledger.core.events import Artifact as Artifact
    from ledger.core.events import AuthorizationDenied as AuthorizationDenied
    from ledger.core.events import AuthorizationGranted as AuthorizationGranted
    from ledger.core.events import AuthorizationRequested as AuthorizationRequested
    from ledger.core.events import AuthorizationRevoked as AuthorizationRevoked
    from ledger.core.events import Event as Event
    from ledger.core.events import Lineage as Lineage
    from ledger.core.events import LineageRef as LineageRef
    from ledger.core.events import RevocationApplied as RevocationApplied
    from ledger.core.events import Scope as Scope
    from ledger.core.events import Window as Window
    from ledger.core.execution_events import ExecutionAllowed as ExecutionAllowed
    from ledger.core.execution_events import ExecutionCompleted as ExecutionCompleted
    from ledger.core.execution_events import ExecutionFailed as ExecutionFailed
    from ledger.core.execution_events import ExecutionRefused as ExecutionRefused
    from ledger.core.execution_events import ExecutionRequested as ExecutionRequested
    from ledger.core.governance_events import GovernanceApplied as GovernanceApplied
    from ledger.core.governance_events import GovernanceApproved as GovernanceApproved
    from ledger.core.governance_events import GovernanceConfigured as GovernanceConfigured
    from ledger.core.governance_events import PolicyPromoted as PolicyPromoted
    from ledger.core.governance_events import PolicyPublished as PolicyPublished
    from ledger.core.governance_events import PrincipalRegistered as PrincipalRegistered
    from ledger.core.governance_events import PrincipalResumed as PrincipalResumed
    from ledger.core.governance_events import PrincipalRevoked as PrincipalRevoked
    from ledger.core.governance_events import PrincipalSuspended as PrincipalSuspended
    from ledger.core.governance_events import TenantResumed as TenantResumed
    from ledger.core.governance_events import TenantSuspended as TenantSuspended
    from ledger.errors import BadSignature as BadSignature
    from ledger.errors import ConfigError as ConfigError
    from ledger.errors import GovLedgerError as GovLedgerError
    from ledger.errors import InvalidEvent as InvalidEvent
    from ledger.errors import LineageError as LineageError
    from ledger.errors import ProofError as ProofError
    from ledger.errors import Reason as Reason
    from ledger.errors import Rejected as Rejected
    from ledger.errors import Unavailable as Unavailable
    from ledger.sdk.client import Client as Client
    from ledger.sdk.client import Decision as Decision
    from ledger.sdk.client import ProofClient as ProofClient
    from ledger.sdk.gate import ExecutionRefusedError as ExecutionRefusedError
    from ledger.sdk.gate import Gate as Gate
    from ledger.sdk.httpsig import SignedRequests as SignedRequests
    from ledger.sdk.sync_client import SyncClient as SyncClient

_SDK = ("Client", "ProofClient", "Decision")
_GATE = ("Gate", "ExecutionRefusedError")
_HTTPSIG = ("SignedRequests",)
_BUNDLES = ("verify_bundle", "VerifiedBundle")
_WITNESSES = ("WitnessPolicy", "verify_witnessed")
_EVENTS = (
    "Event", "AuthorizationRequested", "AuthorizationGranted", "AuthorizationDenied",
    "AuthorizationRevoked", "RevocationApplied", "Scope", "Window", "Lineage", "LineageRef",
    "Artifact",
)
_EXECUTION_EVENTS = ("ExecutionRequested", "ExecutionAllowed", "ExecutionRefused",
                     "ExecutionCompleted", "ExecutionFailed")
_GOVERNANCE = (
    "PrincipalRegistered", "PrincipalRevoked", "PrincipalSuspended", "PrincipalResumed",
    "TenantSuspended", "TenantResumed", "PolicyPublished", "PolicyPromoted",
    "GovernanceConfigured", "GovernanceApproved", "GovernanceApplied",
)
_ERRORS = (
    "GovLedgerError", "Rejected", "InvalidEvent", "BadSignature", "LineageError",
    "ProofError", "ConfigError", "Unavailable", "Reason",
)

_HOME: dict[str, str] = {
    **dict.fromkeys(_SDK, "ledger.sdk.client"),
    "SyncClient": "ledger.sdk.sync_client",
    **dict.fromkeys(_GATE, "ledger.sdk.gate"),
    **dict.fromkeys(_HTTPSIG, "ledger.sdk.httpsig"),
    **dict.fromkeys(_BUNDLES, "ledger.core.bundles"),
    **dict.fromkeys(_WITNESSES, "ledger.core.cosignature"),
    **dict.fromkeys(_EVENTS, "ledger.core.events"),
    **dict.fromkeys(_EXECUTION_EVENTS, "ledger.core.execution_events"),
    **dict.fromkeys(_GOVERNANCE, "ledger.core.governance_events"),
    **dict.fromkeys(_ERRORS, "ledger.errors"),
}

__all__ = [  # noqa: RUF022 (grouped as the table above, not sorted)
    "Client", "SyncClient", "ProofClient", "Decision",
    "Gate", "ExecutionRefusedError", "SignedRequests",
    "verify_bundle", "VerifiedBundle",
    "WitnessPolicy", "verify_witnessed",
    "Event", "AuthorizationRequested", "AuthorizationGranted", "AuthorizationDenied",
    "AuthorizationRevoked", "RevocationApplied", "ExecutionRequested", "ExecutionAllowed",
    "ExecutionRefused", "ExecutionCompleted", "ExecutionFailed", "Scope", "Window",
    "Lineage", "LineageRef", "Artifact",
    "PrincipalRegistered", "PrincipalRevoked", "PrincipalSuspended", "PrincipalResumed",
    "TenantSuspended", "TenantResumed", "PolicyPublished", "PolicyPromoted",
    "GovernanceConfigured", "GovernanceApproved", "GovernanceApplied",
    "GovLedgerError", "Rejected", "InvalidEvent", "BadSignature", "LineageError",
    "ProofError", "ConfigError", "Unavailable", "Reason",
]


def __getattr__(name: str) -> object:
    """Load an SDK name from its module on first use (then it is a plain module attribute)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
