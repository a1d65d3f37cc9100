"""Scope containment agrees with an independent, enumerating oracle; widening is denied.

The oracle knows nothing of ledger.core.scope: it decodes with urllib, reads a pattern as a
string predicate over concrete resources, and decides containment by set inclusion over a
finite universe of concrete resources. The universe has one segment (``z``) that no pattern
uses and is one level deeper than any pattern, so a wider child always has a witness in it.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.core.scope import ScopeSpec, resource_contains, scope_contains
from ledger.errors import Reason

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
SEGMENTS = ("a", "b", "ab")
MAX_DEPTH = 3
UNIVERSE = tuple("/".join(p) for n in range(1, MAX_DEPTH + 2)
                 for p in itertools.product((*SEGMENTS, "z"), repeat=n))
ACTIONS = ("read", "write", "delete")
ENVS = tuple(f"sha256:{c * 64}" for c in "abc")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def oracle_covers(pattern: str, concrete: str) -> bool:
    pattern = unquote(pattern)
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        prefix = pattern[:-2]
        return concrete == prefix or concrete.startswith(prefix + "/")
    return concrete == pattern


def oracle_contains(parent: str, child: str) -> bool:
    return all(oracle_covers(parent, c) for c in UNIVERSE if oracle_covers(child, c))


def encode_some(text: str, data: st.DataObject) -> str:
    """Percent-encode some letters (never '/' or '*'), in either hex case."""
    out = []
    for char in text:
        if char.isalpha() and data.draw(st.booleans()):
            code = f"%{ord(char):02x}"
            out.append(code.upper() if data.draw(st.booleans()) else code)
        else:
            out.append(char)
    return "".join(out)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=MAX_DEPTH))
    if not segments:
        return "*"
    path = "/".join(segments)
    return path + "/*" if draw(st.booleans()) else path


@st.composite
def scopes(draw: st.DrawFn) -> tuple[ScopeSpec, tuple[int, int]]:
    actions = draw(st.frozensets(st.sampled_from(ACTIONS), min_size=1))
    envs = draw(st.frozensets(st.sampled_from(ENVS), min_size=1))
    start = draw(st.integers(0, 6))
    end = draw(st.integers(start + 1, 8))
    spec = ScopeSpec(actions, draw(patterns()), T0 + timedelta(hours=start),
                     T0 + timedelta(hours=end), envs)
    return spec, (start, end)


@SETTINGS
@given(parent=patterns(), child=patterns(), data=st.data())
def test_resource_containment_agrees_with_the_oracle(parent: str, child: str,
                                                     data: st.DataObject) -> None:
    encoded_parent, encoded_child = encode_some(parent, data), encode_some(child, data)
    assert resource_contains(encoded_parent, encoded_child) is oracle_contains(parent, child)


@SETTINGS
@given(parent=scopes(), child=scopes())
def test_scope_containment_agrees_with_the_oracle(
        parent: tuple[ScopeSpec, tuple[int, int]],
        child: tuple[ScopeSpec, tuple[int, int]]) -> None:
    (p, (p_start, p_end)), (c, (c_start, c_end)) = parent, child
    expected = (c.actions <= p.actions and c.environments <= p.environments
                and p_start <= c_start and c_end <= p_end
                and oracle_contains(p.resource, c.resource))
    result = scope_contains(p, c)
    assert result in (None, Reason.SCOPE_WIDENING)
    assert (result is None) is expected


def widen(pattern: str) -> str:
    """A strictly wider pattern: ``x`` -> ``x/*``, ``x/y/*`` -> ``x/*``, ``x/*`` -> ``*``."""
    if not pattern.endswith("/*"):
        return pattern + "/*"
    prefix = pattern[:-2]
    return prefix.rsplit("/", 1)[0] + "/*" if "/" in prefix else "*"


@SETTINGS
@given(parent=scopes(), how=st.sampled_from(["action", "env", "early", "late", "resource"]))
def test_a_child_that_widens_is_always_denied(parent: tuple[ScopeSpec, tuple[int, int]],
                                              how: str) -> None:
    p, _ = parent
    if how == "resource" and p.resource == "*":
        how = "action"                      # nothing is wider than "*"
    child = {
        "action": replace(p, actions=p.actions | {"transfer"}),
        "env": replace(p, environments=p.environments | {"sha256:" + "f" * 64}),
        "early": replace(p, not_before=p.not_before - timedelta(microseconds=1)),
        "late": replace(p, not_after=p.not_after + timedelta(microseconds=1)),
        "resource": replace(p, resource=widen(p.resource)),
    }[how]
    assert scope_contains(p, child) is Reason.SCOPE_WIDENING


@SETTINGS
@given(parent=patterns(), tail=st.lists(st.sampled_from(SEGMENTS), max_size=2),
       dots=st.sampled_from(["..", "%2e%2e", "%2E%2e", ".", "%2e"]))
def test_dot_segments_never_yield_containment(parent: str, tail: list[str], dots: str) -> None:
    prefix = parent.removesuffix("/*").removesuffix("*")
    child = "/".join(s for s in (prefix, dots, *tail) if s)
    spec = ScopeSpec(frozenset({"read"}), parent, T0, T0 + timedelta(hours=1),
                     frozenset({ENVS[0]}))
    child_spec = ScopeSpec(frozenset({"read"}), child, T0, T0 + timedelta(hours=1),
                           frozenset({ENVS[0]}))
    assert scope_contains(spec, child_spec) is Reason.SCOPE_WIDENING
