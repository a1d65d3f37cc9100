"""Cedar policy bundles (cedarpy): load, validate, evaluate; any error is a denial.

DESIGN.md section 3, POLICY_DENY: no permit, a forbid, **or any evaluation error** denies.
Cedar itself skips a policy whose evaluation errors and decides with the rest, so an erroring
forbid next to a matching permit would *allow*. :meth:`PolicyBundle.evaluate` therefore
denies whenever Cedar reports any error, returns no decision, or cedarpy raises.

A bundle is a directory of ``*.cedar`` policy files plus exactly one schema,
``schema.cedarschema`` (Cedar schema syntax) or ``schema.cedarschema.json`` (Cedar JSON
schema). Loading (:meth:`PolicyBundle.load`) refuses, with ConfigError carrying Cedar's text:
a missing or ambiguous schema, a schema or policy that does not parse, a policy that fails
strict schema validation, a policy without an ``@id("...")`` annotation or with an id outside
``[A-Za-z0-9][A-Za-z0-9._:-]{0,127}``, a duplicate id, a template, and an empty set.
The ``@id`` values become Cedar's own policy ids, so decisions report them directly.

Parsed once: the policies become one pre-parsed ``cedarpy.PolicySet`` and the schema one
``cedarpy.Schema`` handle; evaluation never re-parses them (cedarpy re-parses a policy
*string* on every call: measured ~580 us per call versus ~110 us with the handles).

Entity model (docs/policy.md): principal ``Agent::"<identity>"`` with ``tenant`` and
``roles``; action ``Action::"<name>"``; resource ``Resource::"<normalised pattern>"`` with
``path``, ``wildcard`` and, as parents, every wider wildcard pattern covering it
(:func:`ledger.core.scope.ancestors`), so ``resource in Resource::"db/*"`` is exactly
:func:`ledger.core.scope.resource_contains`. The request context is validated against the
schema on every call: an undeclared or mistyped attribute is a denial.

Digest (:func:`bundle_digest`): ``"sha256:" + hex(SHA-256(E))`` where ``E`` is
``b"govledger/policy-bundle/v1\\n"`` followed, for each file in byte order of its UTF-8 name,
by ``u64be(len(name)) || name || u64be(len(content)) || content`` (UTF-8 bytes; the files
are read as bytes and must be UTF-8, so the content bytes are the file's exact bytes).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cedarpy

from ledger.core.scope import WILDCARD, ancestors, normalise_resource
from ledger.errors import ConfigError
from processors.core.approvals import ApprovalRule, parse_rule

SCHEMA_FILES = ("schema.cedarschema", "schema.cedarschema.json")
POLICY_SUFFIX = ".cedar"
DIGEST_DOMAIN = b"govledger/policy-bundle/v1\n"
POLICY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_FILES = 64             # PolicyPublished.files
MAX_POLICIES = 256         # PolicyPublished.policy_ids
MAX_FILE_NAME = 128
ENTITY_CACHE_SIZE = 4096  # parsed entity sets kept per bundle (principal + resource pairs)
_SCALARS = frozenset({str, int, bool})


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """One Cedar decision. ``allow`` is True only for a permit with no forbid and no error.

    ``determining`` holds the ``@id`` of the policies Cedar names as the reason (the permits
    on allow, the forbids on a forbid-denial; empty when nothing permitted).
    """

    allow: bool
    determining: tuple[str, ...]
    errors: tuple[str, ...]


def bundle_digest(files: Mapping[str, str]) -> str:
    """The bundle digest over ``files`` (name -> text), as in the module docstring."""
    digest = hashlib.sha256(DIGEST_DOMAIN)
    for name in sorted(files, key=lambda n: n.encode("utf-8")):
        for part in (name.encode("utf-8"), files[name].encode("utf-8")):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return "sha256:" + digest.hexdigest()


def _parse_schema(name: str, text: str) -> cedarpy.Schema:
    try:
        if name.endswith(".json"):
            return cedarpy.Schema.from_json_str(text)
        return cedarpy.Schema.from_str(text)
    except ValueError as exc:
        raise ConfigError(f"policy bundle: schema {name} does not parse: {exc}") from exc


def _static_policies(name: str, text: str, schema: cedarpy.Schema) -> dict[str, object]:
    """Parse and validate one policy file; return its policies keyed by their ``@id``."""
    try:
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise ConfigError(f"policy bundle: {name} does not parse: {exc}") from exc
    if est.get("templates") or est.get("templateLinks"):
        raise ConfigError(f"policy bundle: {name} has templates (not supported)")
    result = cedarpy.validate_policies(text, schema)
    if not result.validation_passed:
        ids = result.id_annotations_by_policy_id
        problems = "; ".join(f"[{ids.get(e.policy_id, e.policy_id)}] {e.error}"
                             for e in result.errors)
        raise ConfigError(f"policy bundle: {name} fails schema validation: {problems}")
    policies: dict[str, object] = {}
    for position, policy in est.get("staticPolicies", {}).items():
        policy_id = policy.get("annotations", {}).get("id")
        if not isinstance(policy_id, str) or not POLICY_ID.match(policy_id):
            raise ConfigError(f"policy bundle: {name}: policy {position} needs an "
                              f'@id("...") matching {POLICY_ID.pattern}, got {policy_id!r}')
        if policy_id in policies:
            raise ConfigError(f"policy bundle: duplicate policy id {policy_id!r} in {name}")
        policies[policy_id] = policy
    return policies


def _approval_rules(policies: Mapping[str, object]) -> dict[str, ApprovalRule]:
    """The ``@approval("role=R,k=K,ttl=S")`` annotations by policy id. Raises ConfigError for
    one that does not parse or sits on a forbid (only a grant can wait for approvers)."""
    rules: dict[str, ApprovalRule] = {}
    for policy_id, policy in policies.items():
        assert isinstance(policy, dict)
        text = policy.get("annotations", {}).get("approval")
        if text is None:
            continue
        if policy.get("effect") != "permit":
            raise ConfigError(f"policy bundle: {policy_id}: @approval on a forbid policy")
        try:
            rules[policy_id] = parse_rule(text)
        except ValueError as exc:
            raise ConfigError(f"policy bundle: {policy_id}: {exc}") from exc
    return rules


def _cedar_value(value: object, depth: int = 0) -> object:
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
            out[key] = _cedar_value(item, depth + 1)
        return out
    if isinstance(value, set | frozenset):
        return sorted((_cedar_value(v, depth + 1) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_cedar_value(v, depth + 1) for v in value]
    raise ValueError(f"context value of type {type(value).__name__} not allowed")


class PolicyBundle:
    """A loaded, validated, pre-parsed Cedar policy bundle.

    Immutable apart from a cache of parsed entity sets, which only saves time: a race on it
    between threads can at worst raise inside :meth:`evaluate_actions`, which is a denial.
    """

    def __init__(self, files: Mapping[str, str], policies: cedarpy.PolicySet,
                 schema: cedarpy.Schema, policy_ids: tuple[str, ...],
                 validate_requests: bool = True,
                 approval_rules: Mapping[str, ApprovalRule] | None = None) -> None:
        """Use :meth:`load` or :meth:`from_files`."""
        # The permits annotated @approval(...): a grant they determine waits for approvers
        # (processors/core/approvals.py, docs/approvals.md).
        self.approval_rules: Mapping[str, ApprovalRule] = MappingProxyType(
            dict(approval_rules or {}))
        self.validate_requests = validate_requests
        self._files = MappingProxyType(dict(files))
        self._policies = policies
        self._schema = schema
        self._ids = frozenset(policy_ids)
        self._entity_cache: dict[str, cedarpy.Entities] = {}
        self.policy_ids = policy_ids
        self.digest = bundle_digest(files)

    @classmethod
    def load(cls, directory: Path, *, validate_requests: bool = True) -> PolicyBundle:
        """Load ``*.cedar`` and the schema from ``directory`` (not recursive; other files are
        ignored and not part of the digest). Raises ConfigError (module docstring).

        ``validate_requests=False`` skips checking each request's context against the schema
        (measured 40-100 us per decision, docs/policy.md); entities are still validated, and an
        ill-typed context still denies when a policy trips over it.
        """
        if not directory.is_dir():
            raise ConfigError(f"policy bundle: {directory} is not a directory")
        files: dict[str, str] = {}
        for path in sorted(directory.iterdir()):
            if path.name.endswith(POLICY_SUFFIX) or path.name in SCHEMA_FILES:
                if not path.is_file():
                    raise ConfigError(f"policy bundle: {path} is not a regular file")
                try:
                    files[path.name] = path.read_bytes().decode("utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError(f"policy bundle: cannot read {path}: {exc}") from exc
        return cls.from_files(files, validate_requests=validate_requests)

    @classmethod
    def from_files(cls, files: Mapping[str, str], *,
                   validate_requests: bool = True) -> PolicyBundle:
        """Build a bundle from name -> text, e.g. the ``files`` of a PolicyPublished event.

        Raises ConfigError (module docstring).
        """
        if len(files) > MAX_FILES:
            raise ConfigError(f"policy bundle: more than {MAX_FILES} files")
        for name in files:
            if (len(name) > MAX_FILE_NAME or "/" in name or "\\" in name
                    or not (name.endswith(POLICY_SUFFIX) or name in SCHEMA_FILES)
                    or name.startswith(".")):
                raise ConfigError(f"policy bundle: unexpected file name {name!r}")
        schemas = [n for n in SCHEMA_FILES if n in files]
        if len(schemas) != 1:
            raise ConfigError(f"policy bundle: need exactly one of {SCHEMA_FILES}, "
                              f"found {schemas}")
        schema = _parse_schema(schemas[0], files[schemas[0]])
        combined: dict[str, object] = {}
        for name in sorted(n for n in files if n.endswith(POLICY_SUFFIX)):
            for policy_id, policy in _static_policies(name, files[name], schema).items():
                if policy_id in combined:
                    raise ConfigError(f"policy bundle: duplicate policy id {policy_id!r} "
                                      f"in {name}")
                combined[policy_id] = policy
        if not combined:
            raise ConfigError("policy bundle: no policies")
        if len(combined) > MAX_POLICIES:
            raise ConfigError(f"policy bundle: more than {MAX_POLICIES} policies")
        est = {"staticPolicies": combined, "templates": {}, "templateLinks": []}
        try:
            policies = cedarpy.PolicySet.from_json_str(json.dumps(est))
        except ValueError as exc:
            raise ConfigError(f"policy bundle: cannot build the policy set: {exc}") from exc
        return cls(files, policies, schema, tuple(sorted(combined)), validate_requests,
                   _approval_rules(combined))

    def files(self) -> Mapping[str, str]:
        """The bundle's files, name -> exact text (read-only), for a PolicyPublished event."""
        return self._files

    def _request(self, principal: str, action: str, resource: str,
                 context: Mapping[str, object], entities: Sequence[Mapping[str, object]],
                 principal_attrs: Mapping[str, object] | None,
                 ) -> tuple[dict[str, object], str]:
        """Build the Cedar request and entities (JSON). Raises Rejected, ValueError, KeyError."""
        path = normalise_resource(resource)
        cedar_context = _cedar_value(context)
        assert isinstance(cedar_context, dict)
        attrs = principal_attrs if principal_attrs is not None else {
            "tenant": context["tenant"], "roles": context["roles"]}
        principal_uid: dict[str, object] = {"type": "Agent", "id": principal}
        resource_uid: dict[str, object] = {"type": "Resource", "id": path}
        cedar_entities: list[object] = [
            {"uid": principal_uid, "attrs": _cedar_value(attrs), "parents": []},
            {"uid": resource_uid,
             "attrs": {"path": path, "wildcard": path == WILDCARD or path.endswith("/*")},
             "parents": [{"type": "Resource", "id": a} for a in ancestors(path)]},
            *(_cedar_value(e) for e in entities),
        ]
        request: dict[str, object] = {
            "principal": principal_uid, "action": {"type": "Action", "id": action},
            "resource": resource_uid, "context": cedar_context}
        return request, json.dumps(cedar_entities)

    def _entities(self, entities_json: str) -> cedarpy.Entities:
        """Parse (and schema-validate) an entity set once; reuse it for the identical JSON.

        The key is the exact JSON text, so a hit is the same entities; the cache is bounded
        (oldest entry dropped first). Raises ValueError if Cedar refuses the entities.
        """
        cached = self._entity_cache.get(entities_json)
        if cached is None:
            cached = cedarpy.Entities.from_json_str(entities_json, self._schema)
            if len(self._entity_cache) >= ENTITY_CACHE_SIZE:
                self._entity_cache.pop(next(iter(self._entity_cache)))
            self._entity_cache[entities_json] = cached
        return cached

    def _decision(self, result: cedarpy.AuthzResult) -> PolicyDecision:
        diagnostics = result.diagnostics
        errors = [str(e) for e in diagnostics.errors]
        reasons = tuple(sorted(str(r) for r in diagnostics.reasons))
        unknown = [r for r in reasons if r not in self._ids]
        if unknown:
            errors.append(f"unknown determining policy ids {unknown}")
        decision = result.decision
        if decision not in (cedarpy.Decision.Allow, cedarpy.Decision.Deny) and not errors:
            errors.append(f"no decision ({decision.value})")
        allow = decision == cedarpy.Decision.Allow and bool(reasons) and not errors
        return PolicyDecision(allow, reasons, tuple(errors))

    def evaluate(self, principal: str, action: str, resource: str,
                 context: Mapping[str, object],
                 entities: Sequence[Mapping[str, object]] = (), *,
                 principal_attrs: Mapping[str, object] | None = None) -> PolicyDecision:
        """Decide one (principal, action, resource) in ``context``. Never raises.

        ``resource`` is a resource pattern (normalised here; invalid is a denial).
        ``principal_attrs`` defaults to ``{"tenant": context["tenant"], "roles":
        context["roles"]}``. ``entities`` are extra Cedar JSON entities. Any Cedar error,
        missing decision or exception gives ``allow=False`` with the text in ``errors``.
        """
        return self.evaluate_actions(principal, (action,), resource, context, entities,
                                     principal_attrs=principal_attrs)[0]

    def evaluate_actions(self, principal: str, actions: Sequence[str], resource: str,
                         context: Mapping[str, object],
                         entities: Sequence[Mapping[str, object]] = (), *,
                         principal_attrs: Mapping[str, object] | None = None,
                         ) -> tuple[PolicyDecision, ...]:
        """:meth:`evaluate` for several actions on one resource in one Cedar batch call.

        Returns one decision per action, in order. Never raises.
        """
        if not actions:
            return ()
        try:
            request, entities_json = self._request(principal, actions[0], resource, context,
                                                   entities, principal_attrs)
            cedar_entities = self._entities(entities_json)
            requests = [{**request, "action": {"type": "Action", "id": a}} for a in actions]
            results = cedarpy.is_authorized_batch(
                requests, self._policies, cedar_entities,
                schema=self._schema if self.validate_requests else None)
            if len(results) != len(actions):
                raise ValueError("cedarpy returned a wrong number of results")
            return tuple(self._decision(r) for r in results)
        except Exception as exc:  # any engine or input failure (Rejected included) denies
            denial = PolicyDecision(False, (), (f"policy engine: {type(exc).__name__}: {exc}",))
            return tuple(denial for _ in actions)
