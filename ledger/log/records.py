"""What goes into the ledger store and what comes out of it (ledger/log/store.py): a
verified event ready to become a leaf, a stored leaf, what one append did, the consumer
offsets stored with it, and the checkpoint signer it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ledger.core.causes import Cause
from ledger.core.merkle import LeafIndex, TreeSize
from ledger.errors import ProofError

Offsets = Mapping[tuple[str, int], int]
CheckpointSigner = Callable[[TreeSize, bytes], str]
"""Signs the checkpoint of (size, root) and returns the signed note text."""


@dataclass(frozen=True, slots=True)
class LeafRecord:
    """A verified event ready to become a leaf. ``event_id`` and ``parent_ref`` are hex."""

    event_id: str
    kind: str
    leaf: bytes
    parent_ref: str | None = None
    causes: tuple[Cause, ...] | None = None  # None: the sequencer reads them from the leaf


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    index: LeafIndex
    event_id: str
    kind: str
    parent_ref: str | None
    leaf: bytes

    @classmethod
    def from_row(cls, row: tuple[object, ...]) -> StoredLeaf:
        """A ``leaves`` row (idx, event_id, kind, parent_ref, leaf), as stored. Raises
        ProofError if its columns have the wrong types."""
        idx, event_id, kind, parent, leaf = row
        if not (isinstance(idx, int) and isinstance(event_id, bytes)
                and isinstance(leaf, bytes)):
            raise ProofError(f"leaf row {idx!r} has the wrong column types")
        return cls(LeafIndex(idx), event_id.hex(), str(kind),
                   parent.hex() if isinstance(parent, bytes) else None, leaf)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one append transaction did."""

    appended: int
    duplicates: int
    tree_size: TreeSize
    checkpoint: str | None
