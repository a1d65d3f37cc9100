"""Resource pattern normalisation, containment and lineage scope narrowing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.core.scope import (
    MAX_PATTERN_LENGTH,
    ScopeSpec,
    ancestors,
    matches,
    normalise_resource,
    resource_contains,
    scope_contains,
)
from ledger.errors import Reason, Rejected

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENV_A = "sha256:" + "a" * 64
ENV_B = "sha256:" + "b" * 64


@pytest.mark.parametrize(("raw", "normal"), [
    ("*", "*"),
    ("db", "db"),
    ("db/*", "db/*"),
    ("db/orders/42", "db/orders/42"),
    ("db/%41", "db/A"),
    ("db/a%2Db", "db/a-b"),
    ("payments/acme:eu/v1.2", "payments/acme:eu/v1.2"),
    ("a/b.c/~x@y+z=w,v", "a/b.c/~x@y+z=w,v"),
])
def test_normalise_accepts_the_grammar(raw: str, normal: str) -> None:
    assert normalise_resource(raw) == normal


@pytest.mark.parametrize("raw", [
    "db/orders/../users", "db/orders/%2e%2e/users", "db/orders/%2E%2e/users",
    "db/./users", "db/%2e/users", "..", "db/..", "db/...", "db/..%2e", "../*",
])
def test_dot_segments_are_widening(raw: str) -> None:
    with pytest.raises(Rejected) as info:
        normalise_resource(raw)
    assert info.value.reason is Reason.SCOPE_WIDENING


@pytest.mark.parametrize("raw", [
    "",                          # empty
    "db//users",                 # empty segment
    "/db",                       # leading slash
    "db/users/",                 # trailing slash
    "db/orders%2fusers",         # encoded separator
    "db/orders%2Fusers",
    "db/orders%5cusers",         # encoded backslash
    "db\\users",                 # backslash
    "db/%2a",                    # encoded wildcard
    "db*",                       # wildcard inside a segment
    "db/*/users",                # wildcard in the middle
    "db/**",
    "*/db",
    "db/*/*",
    "/*",
    "db/%252e%252e",             # double encoding
    "db/%",                      # truncated escape
    "db/%4",
    "db/%zz",
    "db/users\x00",              # NUL
    "db/\x00",
    "db/%00",                    # encoded NUL
    "db/us ers",                 # space
    "db/users\n",                # control character
    "db/%0a",
    "db／users",                 # U+FF0F FULLWIDTH SOLIDUS
    "db/\u2024\u2024/users",     # U+2024 ONE DOT LEADER look-alike of ..
    "db/．．/users",              # U+FF0E FULLWIDTH FULL STOP
    "db/usérs",                  # non-ASCII
    "db/%c3%a9",                 # encoded non-ASCII
    "db/\u202eusers",            # right-to-left override
])
def test_attack_strings_are_malformed(raw: str) -> None:
    with pytest.raises(Rejected) as info:
        normalise_resource(raw)
    assert info.value.reason is Reason.MALFORMED


def test_overlong_pattern_is_oversized() -> None:
    with pytest.raises(Rejected) as info:
        normalise_resource("a" * (MAX_PATTERN_LENGTH + 1))
    assert info.value.reason is Reason.OVERSIZED
    assert normalise_resource("a" * MAX_PATTERN_LENGTH) == "a" * MAX_PATTERN_LENGTH


@pytest.mark.parametrize(("parent", "child", "contained"), [
    ("*", "*", True),
    ("*", "anything/at/all", True),
    ("db/*", "db", True),
    ("db/*", "db/*", True),
    ("db/*", "db/users", True),
    ("db/*", "db/users/*", True),
    ("db/*", "*", False),
    ("db/*", "dbx", False),
    ("db/*", "dbx/users", False),
    ("db/users/*", "db/usersX", False),
    ("db/users/*", "db/users2/x", False),
    ("db/users", "db/users", True),
    ("db/users", "db/users/*", False),
    ("db/users", "db/users/1", False),
    ("db/users", "db", False),
])
def test_resource_contains(parent: str, child: str, contained: bool) -> None:
    assert resource_contains(parent, child) is contained


@pytest.mark.parametrize(("parent", "child"), [
    ("db/orders/*", "db/orders/%2e%2e/users"),
    ("db/orders/*", "db/orders/../users"),
    ("db/orders/*", "db/orders//users"),
    ("db/%2e%2e/*", "db/x"),
])
def test_resource_contains_refuses_invalid_patterns(parent: str, child: str) -> None:
    with pytest.raises(Rejected):
        resource_contains(parent, child)


def test_containment_compares_decoded_segments() -> None:
    assert resource_contains("db/A/*", "db/%41/x")
    assert resource_contains("db/%41/*", "db/A")


def test_matches_requires_a_concrete_resource() -> None:
    assert matches("payments/*", "payments/acme/invoice-7")
    assert matches("payments/acme", "payments/acme")
    assert not matches("payments/acme", "payments/acme/x")
    assert not matches("payments/*", "paymentsx")
    with pytest.raises(Rejected):
        matches("payments/*", "payments/*")
    with pytest.raises(Rejected):
        matches("payments/*", "payments/../secrets")


def test_ancestors_are_the_wider_wildcards() -> None:
    assert ancestors("a/b") == ("a/b/*", "a/*", "*")
    assert ancestors("a/b/*") == ("a/*", "*")
    assert ancestors("a") == ("a/*", "*")
    assert ancestors("*") == ()
    for pattern in ("a/b", "a/b/*", "a"):
        assert all(resource_contains(a, pattern) for a in ancestors(pattern))


def scope(actions: tuple[str, ...] = ("read", "write"), resource: str = "db/*",
          start: int = 0, end: int = 60, envs: tuple[str, ...] = (ENV_A, ENV_B)) -> ScopeSpec:
    return ScopeSpec(frozenset(actions), resource, T0 + timedelta(minutes=start),
                     T0 + timedelta(minutes=end), frozenset(envs))


PARENT = scope()


@pytest.mark.parametrize("child", [
    scope(),
    scope(actions=("read",)),
    scope(resource="db/orders/*"),
    scope(resource="db"),
    scope(start=10, end=50),
    scope(start=0, end=60),            # equal bounds are inside (documented)
    scope(envs=(ENV_A,)),
])
def test_narrowing_child_is_contained(child: ScopeSpec) -> None:
    assert scope_contains(PARENT, child) is None


@pytest.mark.parametrize("child", [
    scope(actions=("read", "delete")),
    scope(resource="*"),
    scope(resource="dbx/*"),
    scope(start=-1, end=30),
    scope(start=10, end=61),
    scope(envs=(ENV_A, "sha256:" + "c" * 64)),
])
def test_widening_child_is_denied(child: ScopeSpec) -> None:
    assert scope_contains(PARENT, child) is Reason.SCOPE_WIDENING


def test_dot_segment_child_is_denied_as_widening() -> None:
    child = scope(resource="db/orders/../../etc")
    assert scope_contains(PARENT, child) is Reason.SCOPE_WIDENING


@pytest.mark.parametrize("child", [
    scope(resource="db//x"),
    scope(actions=()),
    scope(envs=()),
    scope(start=30, end=30),           # empty window
    ScopeSpec(frozenset({"read"}), "db/*", datetime(2025, 1, 1), datetime(2025, 1, 2),
              frozenset({ENV_A})),     # naive datetimes
])
def test_ill_formed_child_is_malformed(child: ScopeSpec) -> None:
    assert scope_contains(PARENT, child) is Reason.MALFORMED


def test_ill_formed_parent_denies_every_child() -> None:
    assert scope_contains(scope(resource="db/%2f"), scope(resource="db/x")) is Reason.MALFORMED
