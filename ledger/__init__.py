"""govledger's SDK surface: ``from ledger import Client, Gate, verify_bundle, ...``.

Each name is re-exported from the module that holds it and loaded on first use (PEP 562), so
``import ledger`` (which every ``ledger.*`` import runs) stays cheap: it loads no broker
client, no server and no processor. The modules behind the names:

- ``ledger.sdk.client``: Client (async), SyncClient, ProofClient, Decision
- ``ledger.sdk.gate``: Gate, ExecutionRefusedError
- ``ledger.log.proofs``: verify_bundle, VerifiedBundle (offline bundle verification)
- ``ledger.core.events``: the event models, one per kind
- ``ledger.errors``: the typed errors and the Reason codes
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.core.events import (
        Artifact,
        AuthorizationDenied,
        AuthorizationGranted,
        AuthorizationRequested,
        AuthorizationRevoked,
        Event,
        ExecutionAllowed,
        ExecutionCompleted,
        ExecutionFailed,
        ExecutionRefused,
        ExecutionRequested,
        KeyRegistered,
        KeyRevoked,
        Lineage,
        LineageRef,
        PolicyPublished,
        RevocationApplied,
        Scope,
        Window,
    )
    from ledger.errors import (
        BadSignature,
        ConfigError,
        GovLedgerError,
        InvalidEvent,
        LineageError,
        ProofError,
        Reason,
        Rejected,
        Unavailable,
    )
    from ledger.log.proofs import VerifiedBundle, verify_bundle
    from ledger.sdk.client import Client, Decision, ProofClient, SyncClient
    from ledger.sdk.gate import ExecutionRefusedError, Gate

_SDK = ("Client", "SyncClient", "ProofClient", "Decision")
_GATE = ("Gate", "ExecutionRefusedError")
_BUNDLES = ("verify_bundle", "VerifiedBundle")
_EVENTS = (
    "Event", "AuthorizationRequested", "AuthorizationGranted", "AuthorizationDenied",
    "AuthorizationRevoked", "RevocationApplied", "ExecutionRequested", "ExecutionAllowed",
    "ExecutionRefused", "ExecutionCompleted", "ExecutionFailed", "PolicyPublished",
    "KeyRegistered", "KeyRevoked", "Scope", "Window", "Lineage", "LineageRef", "Artifact",
)
_ERRORS = (
    "GovLedgerError", "Rejected", "InvalidEvent", "BadSignature", "LineageError",
    "ProofError", "ConfigError", "Unavailable", "Reason",
)

# verify_bundle moves to ledger.core.bundles (issue 12): change its module here, nowhere else.
_HOME: dict[str, str] = {
    **dict.fromkeys(_SDK, "ledger.sdk.client"),
    **dict.fromkeys(_GATE, "ledger.sdk.gate"),
    **dict.fromkeys(_BUNDLES, "ledger.log.proofs"),
    **dict.fromkeys(_EVENTS, "ledger.core.events"),
    **dict.fromkeys(_ERRORS, "ledger.errors"),
}

__all__ = [  # noqa: RUF022 (grouped as the table above, not sorted)
    "Client", "SyncClient", "ProofClient", "Decision",
    "Gate", "ExecutionRefusedError",
    "verify_bundle", "VerifiedBundle",
    "Event", "AuthorizationRequested", "AuthorizationGranted", "AuthorizationDenied",
    "AuthorizationRevoked", "RevocationApplied", "ExecutionRequested", "ExecutionAllowed",
    "ExecutionRefused", "ExecutionCompleted", "ExecutionFailed", "PolicyPublished",
    "KeyRegistered", "KeyRevoked", "Scope", "Window", "Lineage", "LineageRef", "Artifact",
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
