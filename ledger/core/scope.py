"""Resource patterns and scope containment for lineage (DESIGN.md sections 4-5).

Pure: no I/O, no clock. A *resource pattern* names what an authorization covers.

Grammar (after the raw text is checked, see "Normalisation")::

    pattern  = "*" | path | path "/*"
    path     = segment *( "/" segment )
    segment  = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / ":" / "@" / "+" / "=" / "," )
               ; and not made of dots only ("." , "..", "..." ...)

* ``*`` alone covers every resource;
* ``p/*`` covers ``p`` itself and everything below it (``p/x``, ``p/x/y``, ``p/x/*``);
* ``p`` (no wildcard) covers exactly ``p``.

Comparison is segment-wise and case-sensitive: ``db/users/*`` does not cover ``db/usersX``.
There is no other wildcard: ``*`` anywhere else (``db*``, ``db/*/x``, ``db/**``) is MALFORMED.

Normalisation (:func:`normalise_resource`) is *reject, never repair*, so that two spellings can
never disagree about what they cover:

1. the raw text must be at most :data:`MAX_PATTERN_LENGTH` characters of printable ASCII
   (control characters, NUL, spaces and every non-ASCII character, including Unicode
   look-alikes such as U+FF0F FULLWIDTH SOLIDUS or U+2024 ONE DOT LEADER, are MALFORMED);
2. it is split on the literal ``/``; an empty segment (leading ``/``, trailing ``/``, ``//``)
   is MALFORMED;
3. each segment is percent-decoded exactly once (``%XX``, hex in either case; a ``%`` not
   followed by two hex digits is MALFORMED). A decoded byte outside the segment alphabet is
   MALFORMED: this refuses an encoded separator (``%2f``, ``%5c``), an encoded wildcard
   (``%2a``), double encoding (``%252e`` decodes to ``%2e``, and ``%`` is not in the alphabet)
   and encoded non-ASCII;
4. a segment made only of dots after decoding (``.``, ``..``, ``%2e%2e``, ``%2E%2e``) is
   SCOPE_WIDENING: dot segments are *rejected*, not resolved, so ``db/orders/../users`` can
   never name something outside ``db/orders``;
5. the result is the decoded segments joined by ``/`` (so ``db/%41`` normalises to ``db/A``).

Scope containment (:func:`scope_contains`) is what makes a child authorization a narrowing of
its parent: actions a subset (exact names, no wildcards), resource pattern contained after
normalisation, validity window inside the parent's (bounds may be equal: windows are
``[not_before, not_after)`` so equal bounds add nothing), environment digests a subset
(exact strings; the event models keep them lower-case and algorithm-prefixed).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime

from ledger.errors import Reason, Rejected

MAX_PATTERN_LENGTH = 512
WILDCARD = "*"
_SEGMENT = re.compile(r"[A-Za-z0-9._~:@+=,-]+")
_HEX = frozenset(string.hexdigits)


def _malformed(detail: str) -> Rejected:
    return Rejected(Reason.MALFORMED, f"resource pattern: {detail}")


def _decode_segment(raw: str) -> str:
    """Percent-decode one segment once (step 3); raise Rejected on a bad escape."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        code = raw[i + 1:i + 3]
        if len(code) != 2 or not set(code) <= _HEX:
            raise _malformed("'%' must be followed by two hex digits")
        out.append(chr(int(code, 16)))
        i += 3
    return "".join(out)


def _check_segment(segment: str) -> None:
    if "/" in segment or "\\" in segment:
        raise _malformed("encoded separator in a segment")
    if WILDCARD in segment:
        raise _malformed("'*' is only allowed as the whole pattern or a final '/*'")
    if not _SEGMENT.fullmatch(segment):
        raise _malformed("character outside the segment alphabet")
    if not segment.strip("."):
        raise Rejected(Reason.SCOPE_WIDENING, "resource pattern: dot segment")


def _split(pattern: str) -> tuple[tuple[str, ...], bool]:
    """Validate and split into (decoded segments, wildcard). Raises Rejected."""
    if not isinstance(pattern, str) or not pattern:
        raise _malformed("empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise Rejected(Reason.OVERSIZED, f"resource pattern longer than {MAX_PATTERN_LENGTH}")
    if not (pattern.isascii() and pattern.isprintable()) or " " in pattern:
        raise _malformed("control, space or non-ASCII character")
    if pattern == WILDCARD:
        return (), True
    raw_segments = pattern.split("/")
    wildcard = raw_segments[-1] == WILDCARD
    if wildcard:
        raw_segments = raw_segments[:-1]
    segments = []
    for raw in raw_segments:
        if not raw:
            raise _malformed("empty segment")
        segment = _decode_segment(raw) if "%" in raw else raw
        _check_segment(segment)
        segments.append(segment)
    return tuple(segments), wildcard


def _join(segments: tuple[str, ...], wildcard: bool) -> str:
    if not segments:
        return WILDCARD
    return "/".join(segments) + ("/*" if wildcard else "")


def normalise_resource(pattern: str) -> str:
    """The canonical spelling of a resource pattern (module docstring, steps 1-5).

    Raises Rejected: MALFORMED for anything outside the grammar, SCOPE_WIDENING for a dot
    segment, OVERSIZED beyond MAX_PATTERN_LENGTH characters.
    """
    return _join(*_split(pattern))


def resource_contains(parent_pattern: str, child_pattern: str) -> bool:
    """True when every resource ``child_pattern`` covers is covered by ``parent_pattern``.

    Both are normalised first. Raises Rejected (as :func:`normalise_resource`) if either is
    invalid.
    """
    parent, parent_wild = _split(parent_pattern)
    child, child_wild = _split(child_pattern)
    if not parent_wild:
        return not child_wild and child == parent
    return child[:len(parent)] == parent


def matches(pattern: str, concrete_resource: str) -> bool:
    """True when the concrete resource (a pattern without wildcard) is covered by ``pattern``.

    Raises Rejected if either is invalid, or MALFORMED if ``concrete_resource`` has a wildcard:
    an execution names one resource, never a set.
    """
    _, wild = _split(concrete_resource)
    if wild:
        raise _malformed("a concrete resource has no wildcard")
    return resource_contains(pattern, concrete_resource)


def ancestors(pattern: str) -> tuple[str, ...]:
    """Every wildcard pattern strictly wider than ``pattern`` that covers it, narrowest first.

    ``a/b`` gives ``("a/b/*", "a/*", "*")``; ``a/b/*`` gives ``("a/*", "*")``; ``*`` gives
    ``()``. Used as the Cedar entity hierarchy, so ``resource in Resource::"a/*"`` means
    exactly ``resource_contains("a/*", resource)``. Raises Rejected if invalid.
    """
    segments, wildcard = _split(pattern)
    cut = len(segments) - 1 if wildcard else len(segments)
    return tuple(_join(segments[:n], True) for n in range(cut, -1, -1))


@dataclass(frozen=True, slots=True)
class ScopeSpec:
    """What an authorization covers, in plain values (the event models convert to this).

    ``not_before``/``not_after`` are timezone-aware; the window is ``[not_before, not_after)``.
    """

    actions: frozenset[str]
    resource: str
    not_before: datetime
    not_after: datetime
    environments: frozenset[str]


Scope = ScopeSpec  # the name used in the brief; ScopeSpec avoids a clash with events.Scope


def _well_formed(scope: ScopeSpec) -> bool:
    aware = (scope.not_before.utcoffset() is not None
             and scope.not_after.utcoffset() is not None)
    return (aware and scope.not_before < scope.not_after and bool(scope.actions)
            and bool(scope.environments))


def scope_contains(parent: ScopeSpec, child: ScopeSpec) -> Reason | None:
    """None when ``child`` is a narrowing of ``parent`` (DESIGN.md section 5), else a reason.

    Returns SCOPE_WIDENING when the child has an action, resource, time or environment the
    parent lacks; MALFORMED (or the pattern's own reason) when either scope is not well formed:
    an invalid resource pattern, naive datetimes, an empty window, no actions or no
    environments. Never raises for bad input: any doubt is a denial.
    """
    if not (_well_formed(parent) and _well_formed(child)):
        return Reason.MALFORMED
    try:
        contained = resource_contains(parent.resource, child.resource)
    except Rejected as exc:
        return exc.reason
    if not (contained and child.actions <= parent.actions
            and child.environments <= parent.environments
            and parent.not_before <= child.not_before
            and child.not_after <= parent.not_after):
        return Reason.SCOPE_WIDENING
    return None
