"""Who may read what over the API: read roles and tenant visibility (pure).

* A principal reads the HTTP API only with one of :data:`READ_ROLES`. ``requester``,
  ``executor`` and ``revoker`` read the outcomes of what they sign (decisions, verdicts,
  revocations, the inclusion proof a gate asks for); ``reader`` and ``auditor`` read without
  signing anything; ``admin`` reads the answers to the governance events it signs. The
  service keys (``authority``, ``ledger``) never read: a deployment keeps them inside the
  processes that sign (issue 19 item 2), not in API clients.
* A principal of tenant ``*`` (the operator's) sees every tenant; any other principal sees
  only events whose payload names its own tenant. An event whose tenant cannot be read, or
  whose tenant is ``*`` (e.g. ``PolicyPublished``), is visible to ``*`` principals only:
  fail closed.
"""

from __future__ import annotations

from typing import Final

from ledger.core.envelope import read_stored
from ledger.core.keys import Principal

ALL_TENANTS: Final = "*"
READ_ROLES: Final = frozenset({"reader", "auditor", "requester", "executor", "revoker",
                               "admin"})


def may_read_api(principal: Principal) -> bool:
    """Whether ``principal`` holds one of :data:`READ_ROLES`."""
    return not READ_ROLES.isdisjoint(principal.roles)


def stored_tenant(envelope: bytes) -> str | None:
    """The ``tenant`` named by stored envelope bytes (a ledger leaf or a decision this system
    signed); None when there is none to read. Never use on unverified outside input."""
    stored = read_stored(envelope)
    if stored is None:
        return None
    tenant = stored.fields.get("tenant")
    return tenant if isinstance(tenant, str) else None


def visible_to(reader_tenant: str, envelope: bytes) -> bool:
    """Whether a principal of ``reader_tenant`` may see the event in ``envelope``."""
    if reader_tenant == ALL_TENANTS:
        return True
    tenant = stored_tenant(envelope)
    return tenant is not None and tenant != ALL_TENANTS and tenant == reader_tenant
