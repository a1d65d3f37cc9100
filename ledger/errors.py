"""Typed errors, sorted by whose fault it is.

::

    GovLedgerError
    |-- Rejected            the input is at fault: record a signed denial and move on
    |   |-- InvalidEvent    bad bytes, non-canonical JSON, schema error, unknown kind/version
    |   |-- BadSignature    unknown/revoked/weak key, signature mismatch
    |   `-- LineageError    unknown/revoked parent, widening, cycle, depth
    |-- ProofError          a proof or checkpoint does not verify (carries expected/calculated)
    |   |-- NotFound        no proof to give: no such leaf, event, checkpoint size or lineage
    |   |-- NotPublished    sequenced, not yet under a signed checkpoint: retry shortly
    |   `-- InvalidRange    a consistency proof asked from a larger size to a smaller one
    |-- ConfigError         the operator is at fault: bad settings, key file, keyring, policy
    `-- Unavailable         the system is at fault: retry or crash; never grant, never drop

Every ``Rejected`` carries exactly one :class:`Reason` code from DESIGN.md section 3, so a
denial can always be signed and recorded. Third-party errors are translated at the boundary
with ``raise ... from exc``. This module is pure: the functional core imports it.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Reason codes, in the order the checks run (DESIGN.md section 3)."""

    MALFORMED = "MALFORMED"
    NON_CANONICAL = "NON_CANONICAL"
    OVERSIZED = "OVERSIZED"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    SIGNATURE_MISSING = "SIGNATURE_MISSING"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    KEY_UNKNOWN = "KEY_UNKNOWN"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_WEAK = "KEY_WEAK"
    IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
    TENANT_MISMATCH = "TENANT_MISMATCH"
    REPLAY = "REPLAY"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    TTL_TOO_LONG = "TTL_TOO_LONG"
    ENV_MISMATCH = "ENV_MISMATCH"
    PARENT_UNKNOWN = "PARENT_UNKNOWN"
    PARENT_REVOKED = "PARENT_REVOKED"
    PARENT_EXPIRED = "PARENT_EXPIRED"
    SCOPE_WIDENING = "SCOPE_WIDENING"
    LINEAGE_CYCLE = "LINEAGE_CYCLE"
    DEPTH_EXCEEDED = "DEPTH_EXCEEDED"
    POLICY_DENY = "POLICY_DENY"
    RATE_LIMITED = "RATE_LIMITED"
    # Executor gate and execution verdicts (DESIGN.md section 4).
    ARTIFACT_INVALID = "ARTIFACT_INVALID"
    ARTIFACT_REVOKED = "ARTIFACT_REVOKED"
    ARTIFACT_CONSUMED = "ARTIFACT_CONSUMED"
    ARTIFACT_NOT_LOGGED = "ARTIFACT_NOT_LOGGED"
    SCOPE_MISMATCH = "SCOPE_MISMATCH"
    # Governance (ledger.core.governance): suspensions deny requests and refuse executions;
    # the rest refuse a governance event.
    PRINCIPAL_SUSPENDED = "PRINCIPAL_SUSPENDED"
    TENANT_SUSPENDED = "TENANT_SUSPENDED"
    NOT_ADMIN = "NOT_ADMIN"
    QUORUM_EXPIRED = "QUORUM_EXPIRED"
    APPROVAL_INVALID = "APPROVAL_INVALID"
    LAST_ADMIN = "LAST_ADMIN"
    AUTHORITY_ROTATION = "AUTHORITY_ROTATION"
    POLICY_INVALID = "POLICY_INVALID"
    GOVERNANCE_CONFLICT = "GOVERNANCE_CONFLICT"
    # Human approval (processors/core/approvals.py): the first two end a pending request,
    # the rest refuse an approval that cannot count.
    APPROVAL_REFUSED = "APPROVAL_REFUSED"
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    NOT_APPROVER = "NOT_APPROVER"
    SELF_APPROVAL = "SELF_APPROVAL"
    APPROVAL_DUPLICATE = "APPROVAL_DUPLICATE"
    NOT_PENDING = "NOT_PENDING"
    # The system, not the input, is at fault. Never a grant.
    UNAVAILABLE = "UNAVAILABLE"


class GovLedgerError(Exception):
    """Base of every error govledger raises on purpose."""


class Rejected(GovLedgerError):
    """The input is at fault. Carries the reason code for the signed denial."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class InvalidEvent(Rejected):
    """Bad bytes, non-canonical JSON, schema error, unknown kind or version."""


class BadSignature(Rejected):
    """Unknown, revoked or weak key, or a signature that does not verify."""


class LineageError(Rejected):
    """Unknown, revoked or expired parent, scope widening, cycle, depth."""


class ProofError(GovLedgerError):
    """A proof, checkpoint or stored tree does not verify.

    ``expected`` and ``calculated`` hold the two values that disagreed, when there are two.
    """

    def __init__(self, message: str, *, expected: str | None = None,
                 calculated: str | None = None) -> None:
        self.expected = expected
        self.calculated = calculated
        if expected is not None or calculated is not None:
            message = f"{message} (expected {expected}, calculated {calculated})"
        super().__init__(message)


class NotFound(ProofError):
    """No proof to give: no such leaf, event or signed checkpoint size, or a lineage that
    cannot be followed back to its root (a hop missing, unpublished, or a cycle)."""


class NotPublished(ProofError):
    """The leaf is sequenced but not yet under a signed checkpoint: retry shortly."""


class InvalidRange(ProofError):
    """A consistency proof asked from a larger tree size to a smaller one."""


class ConfigError(GovLedgerError):
    """The operator is at fault: a setting, key file, keyring or policy is unusable."""


class Unavailable(GovLedgerError):
    """The system is at fault (broker, ledger, key store, policy load). Retry; never grant."""


# Exit statuses, by whose fault (the CLI, and the children of `govledger up`, which the
# service reads back with :func:`error_for_exit`): 1 the input or a check (a rejected event,
# a proof or ledger that does not verify), 2 the operator (configuration), 3 the system
# (a dependency down, or an error no component expects: retry; never grant).
EXIT_INVALID, EXIT_CONFIG, EXIT_UNAVAILABLE = 1, 2, 3


def exit_status(exc: GovLedgerError) -> int:
    """The exit status of a command or process that failed with ``exc``."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    return EXIT_INVALID


def error_for_exit(status: int, message: str) -> GovLedgerError:
    """The error a process that exited with ``status`` failed with (:func:`exit_status`
    read back): ProofError for 1 (a failed check), ConfigError for 2, else Unavailable."""
    if status == EXIT_INVALID:
        return ProofError(message)
    if status == EXIT_CONFIG:
        return ConfigError(message)
    return Unavailable(message)
