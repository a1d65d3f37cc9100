"""Request data as Cedar JSON, and the blanked "shapes" the schema is checked on once.

Helpers of processors/policy.py (docs/policy.md, "Entity model"): the principal and resource
entities govledger builds, the context converted to Cedar JSON (refusing Cedar's escapes),
and the shape of a context: the same value with every string ``""``, every number 0 and
every bool false, which is what Cedar's schema validation of a request depends on
(:meth:`processors.policy.PolicyBundle._shape_valid` says why).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypeVar

import cedarpy

from ledger.core.scope import WILDCARD, ancestors
from ledger.errors import ConfigError

ENTITY_CACHE_SIZE = 4096  # parsed entity sets, principals, shapes kept per bundle
_SCALARS = frozenset({str, int, bool})
_T = TypeVar("_T")
_K = TypeVar("_K")
# Request validation probes (PolicyBundle._shape_valid): no policy, no entity.
NO_POLICIES = cedarpy.PolicySet.from_str("")
NO_ENTITIES = cedarpy.Entities.from_json_str("[]")


def cedar_value(value: object, depth: int = 0) -> object:
    """Convert a context value to Cedar JSON: sets and tuples become lists.

    Raises ValueError for anything else, for keys starting ``__`` (Cedar's ``__entity`` /
    ``__extn`` escapes: request data must never name an entity) and beyond depth 8.
    """
    if type(value) in _SCALARS:   # the common case first: exact str, int, bool
        return value
    if depth > 8:
        raise ValueError("context nested too deeply")
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("__"):
                raise ValueError(f"context key {key!r} not allowed")
            out[key] = cedar_value(item, depth + 1)
        return out
    if isinstance(value, set | frozenset):
        return sorted((cedar_value(v, depth + 1) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [cedar_value(v, depth + 1) for v in value]
    raise ValueError(f"context value of type {type(value).__name__} not allowed")


def bounded_put(cache: dict[_K, _T], key: _K, value: _T) -> None:
    """Insert into a bounded cache; the oldest entry goes first."""
    if len(cache) >= ENTITY_CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = value


def shape_key(value: object) -> object:
    """A hashable key that is equal for two values only if their :func:`blank_shape` is."""
    kind = type(value)
    if kind is dict:
        assert isinstance(value, dict)
        return tuple([(k, shape_key(v)) for k, v in value.items()])
    if kind is list:
        assert isinstance(value, list)
        return (list, frozenset([shape_key(v) for v in value]))
    return kind


def blank_shape(value: object) -> object:
    """A Cedar JSON value with its content blanked (see the module docstring)."""
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0
    if isinstance(value, dict):
        return {k: blank_shape(v) for k, v in value.items()}
    if isinstance(value, list):   # a Cedar set: one element per distinct element shape
        shapes = {json.dumps(s, sort_keys=True): s for s in map(blank_shape, value)}
        return [shapes[k] for k in sorted(shapes)]
    raise ValueError(f"context value of type {type(value).__name__} not allowed")


def build_principal(principal: str, context: Mapping[str, object],
                      principal_attrs: Mapping[str, object] | None) -> dict[str, object]:
    """``Agent::"<principal>"`` with ``tenant`` and ``roles``. Raises ValueError, KeyError."""
    attrs = principal_attrs if principal_attrs is not None else {
        "tenant": context["tenant"], "roles": context["roles"]}
    return {"uid": {"type": "Agent", "id": principal}, "attrs": cedar_value(attrs),
            "parents": []}


def build_resource(path: str) -> dict[str, object]:
    """``Resource::"<path>"``; its parents are the wider wildcards covering it."""
    return {"uid": {"type": "Resource", "id": path},
            "attrs": {"path": path, "wildcard": path == WILDCARD or path.endswith("/*")},
            "parents": [{"type": "Resource", "id": a} for a in ancestors(path)]}


def check_entity_shapes(schema: cedarpy.Schema) -> None:
    """Refuse a schema that does not accept the resource entities this module builds.

    Resource entities are added to each request unvalidated
    (processors.policy.PolicyBundle._evaluate_fast): their shape is fixed by
    :func:`build_resource` (string ``path``, bool ``wildcard``, Resource parents), so
    checking one of them once, with blank strings (not readable as any entity or extension
    value), checks them all. (Principals are validated, once each.)
    Raises ConfigError.
    """
    sample = [{"uid": {"type": "Resource", "id": ""}, "attrs": {"path": "", "wildcard": False},
               "parents": [{"type": "Resource", "id": "*"}]}]
    try:
        cedarpy.Entities.from_json_str(json.dumps(sample), schema)
    except ValueError as exc:
        raise ConfigError("policy bundle: the schema must declare Resource in [Resource] "
                          "{path: String, wildcard: Bool} (docs/policy.md): " + str(exc)) from exc
