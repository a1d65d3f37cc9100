"""The wall clock, for the shell (SDK, processor worker): the functional core never reads it,
it takes ``now`` as an argument (STYLE.md section 3)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
