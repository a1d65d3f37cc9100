"""Cedar policy bundles (cedarpy): load, validate, evaluate; any error is a denial.

DESIGN.md section 3, POLICY_DENY: no permit, a forbid, **or any evaluation error** denies.
Cedar itself skips a policy whose evaluation errors and decides with the rest, so an erroring
forbid next to a matching permit would *allow*. :meth:`PolicyBundle.evaluate` therefore
denies whenever Cedar reports any error, returns no decision, or cedarpy raises.

A bundle is a directory of ``*.cedar`` policy files plus exactly one schema,
``schema.cedarschema`` (Cedar schema syntax) or ``schema.cedarschema.json`` (Cedar JSON
schema). Loading (:meth:`PolicyBundle.load`) refuses, with BundleInvalid (a ConfigError)
listing every problem (file, policy id, Cedar's text), not just the first: a missing or
ambiguous schema, a schema or policy that does not parse, a policy that fails strict schema
validation, a policy without an ``@id("...")`` annotation or with an id outside
``[A-Za-z0-9][A-Za-z0-9._:-]{0,127}``, a duplicate id, a template, and an empty set
(:func:`check_bundle`; ``govledger policy validate`` prints the list). The ``@id`` values
become Cedar's own policy ids, so decisions report them directly.

Parsed once: the policies become one pre-parsed ``cedarpy.PolicySet`` and the schema one
``cedarpy.Schema`` handle; evaluation never re-parses them (cedarpy re-parses a policy
*string* on every call: measured ~580 us per call versus ~110 us with the handles).

Entity model (docs/policy.md): principal ``Agent::"<identity>"`` with ``tenant`` and
``roles``; action ``Action::"<name>"``; resource ``Resource::"<normalised pattern>"`` with
``path``, ``wildcard`` and, as parents, every wider wildcard pattern covering it
(:func:`ledger.core.scope.ancestors`), so ``resource in Resource::"db/*"`` is exactly
:func:`ledger.core.scope.resource_contains`. Every request is checked against the schema: an
undeclared or mistyped attribute, or an undeclared action, is a denial. That check runs once
per (action, context shape) and is remembered (:meth:`PolicyBundle._shape_valid`); each
principal entity is validated once; the resource entity, whose shape the load checks against
the schema, is never re-validated. No per-request JSON parse on our side: the context is
serialised once, the principal's parsed entity set is reused and the resource added to it.

Digest (:func:`bundle_digest`): ``"sha256:" + hex(SHA-256(E))`` where ``E`` is
``b"govledger/policy-bundle/v1\\n"`` followed, for each file in byte order of its UTF-8 name,
by ``u64be(len(name)) || name || u64be(len(content)) || content`` (UTF-8 bytes; the files
are read as bytes and must be UTF-8, so the content bytes are the file's exact bytes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cedarpy

from ledger.core.scope import normalise_resource
from ledger.errors import ConfigError
from processors.cedar_json import (
    NO_ENTITIES,
    NO_POLICIES,
    blank_shape,
    bounded_put,
    build_principal,
    build_resource,
    cedar_value,
    shape_key,
)
from processors.core.approvals import ApprovalRule, parse_rule
from processors.policy_rules import (
    POLICY_SUFFIX,
    SCHEMA_FILES,
    BundleInvalid,
    BundleProblem,
    check_bundle,
)

DIGEST_DOMAIN = b"govledger/policy-bundle/v1\n"


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


def _approval_rules(policies: Mapping[str, object],
                    problems: list[BundleProblem]) -> dict[str, ApprovalRule]:
    """The ``@approval("role=R,k=K,ttl=S")`` annotations by policy id; a problem for one
    that does not parse or sits on a forbid (only a grant can wait for approvers)."""
    rules: dict[str, ApprovalRule] = {}
    for policy_id, policy in policies.items():
        assert isinstance(policy, dict)
        text = policy.get("annotations", {}).get("approval")
        if text is None:
            continue
        if policy.get("effect") != "permit":
            problems.append(BundleProblem("", policy_id, "@approval on a forbid policy"))
            continue
        try:
            rules[policy_id] = parse_rule(text)
        except ValueError as exc:
            problems.append(BundleProblem("", policy_id, str(exc)))
    return rules


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
        self._principal_cache: dict[str, cedarpy.Entities] = {}
        self._valid_shapes: dict[tuple[str, object], bool] = {}
        self.policy_ids = policy_ids
        self.digest = bundle_digest(files)

    @classmethod
    def load(cls, directory: Path, *, validate_requests: bool = True) -> PolicyBundle:
        """Load ``*.cedar`` and the schema from ``directory`` (not recursive; other files are
        ignored and not part of the digest). Raises ConfigError if ``directory`` is not a
        directory, else BundleInvalid (a ConfigError) listing every problem (module
        docstring).

        ``validate_requests=False`` skips checking each request's context against the schema
        (measured 40-100 us per decision, docs/policy.md); entities are still validated, and an
        ill-typed context still denies when a policy trips over it.
        """
        if not directory.is_dir():
            raise ConfigError(f"policy bundle: {directory} is not a directory")
        files: dict[str, str] = {}
        unreadable: list[BundleProblem] = []
        for path in sorted(directory.iterdir()):
            if path.name.endswith(POLICY_SUFFIX) or path.name in SCHEMA_FILES:
                try:
                    if not path.is_file():
                        raise OSError("not a regular file")
                    files[path.name] = path.read_bytes().decode("utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    unreadable.append(BundleProblem(path.name, "", f"cannot read {path}: {exc}"))
        return cls._build(files, unreadable, validate_requests)

    @classmethod
    def from_files(cls, files: Mapping[str, str], *,
                   validate_requests: bool = True) -> PolicyBundle:
        """Build a bundle from name -> text, e.g. the ``files`` of a PolicyPublished event.

        Raises BundleInvalid (a ConfigError) listing every problem (module docstring).
        """
        return cls._build(files, [], validate_requests)

    @classmethod
    def _build(cls, files: Mapping[str, str], problems: list[BundleProblem],
               validate_requests: bool) -> PolicyBundle:
        schema, combined = check_bundle(files, problems)
        rules = _approval_rules(combined, problems)
        if problems or schema is None:
            raise BundleInvalid(problems or [BundleProblem("", "", "no usable schema")])
        est = {"staticPolicies": combined, "templates": {}, "templateLinks": []}
        try:
            policies = cedarpy.PolicySet.from_json_str(json.dumps(est))
        except ValueError as exc:
            raise BundleInvalid([BundleProblem("", "", f"cannot build the policy set: {exc}")]
                                ) from exc
        return cls(files, policies, schema, tuple(sorted(combined)), validate_requests, rules)

    def files(self) -> Mapping[str, str]:
        """The bundle's files, name -> exact text (read-only), for a PolicyPublished event."""
        return self._files

    def _request(self, principal: str, action: str, resource: str,
                 context: Mapping[str, object], entities: Sequence[Mapping[str, object]],
                 principal_attrs: Mapping[str, object] | None,
                 ) -> tuple[dict[str, object], str]:
        """Build the Cedar request and entities (JSON) for the path with caller-supplied
        entities. Raises Rejected, ValueError, KeyError."""
        path = normalise_resource(resource)
        cedar_context = cedar_value(context)
        assert isinstance(cedar_context, dict)
        principal_entity = build_principal(principal, context, principal_attrs)
        resource_entity = build_resource(path)
        cedar_entities = [principal_entity, resource_entity,
                          *(cedar_value(e) for e in entities)]
        request: dict[str, object] = {
            "principal": principal_entity["uid"], "action": {"type": "Action", "id": action},
            "resource": resource_entity["uid"], "context": cedar_context}
        return request, json.dumps(cedar_entities)

    def _entities(self, entities_json: str) -> cedarpy.Entities:
        """Parse (and schema-validate) an entity set once; reuse it for the identical JSON.

        The key is the exact JSON text, so a hit is the same entities; the cache is bounded
        (oldest entry dropped first). Raises ValueError if Cedar refuses the entities.
        """
        cached = self._entity_cache.get(entities_json)
        if cached is None:
            cached = cedarpy.Entities.from_json_str(entities_json, self._schema)
            bounded_put(self._entity_cache, entities_json, cached)
        return cached

    def _shape_valid(self, action: str, cedar_context: object) -> bool:
        """Whether requests for ``action`` with a context of this shape pass the schema.

        Cedar's request validation (and its schema-directed reading of the context) depends
        on the action and on the context's *shape*: its keys and the JSON type of each value,
        never on a string's or number's content, except where the schema declares an entity
        or extension type (``ipaddr``, ``decimal`` ...), which Cedar reads from a string. The
        shape is therefore the context with every string made ``""``, every number 0 and
        every bool false: ``""`` is neither an entity nor any extension value, so a shape
        with a string at such a position fails here and is validated on every call. A shape
        that passes once is remembered (bounded); such contexts then read the same with or
        without the schema. Raises ValueError from Cedar.
        """
        key = (action, shape_key(cedar_context))
        if key in self._valid_shapes:
            return True
        shape = blank_shape(cedar_context)
        probe = {"principal": {"type": "Agent", "id": ""},
                 "action": {"type": "Action", "id": action},
                 "resource": {"type": "Resource", "id": ""}, "context": shape}
        result = cedarpy.is_authorized(probe, NO_POLICIES, NO_ENTITIES, schema=self._schema)
        valid = result.decision == cedarpy.Decision.Deny and not result.diagnostics.errors
        if valid:
            bounded_put(self._valid_shapes, key, True)
        return valid

    def _principal_base(self, entity: Mapping[str, object]) -> cedarpy.Entities:
        """The principal's entity set, parsed and schema-validated once per distinct
        principal entity (bounded cache). Raises ValueError if Cedar refuses it."""
        entity_json = json.dumps([entity])
        cached = self._principal_cache.get(entity_json)
        if cached is None:
            cached = cedarpy.Entities.from_json_str(entity_json, self._schema)
            bounded_put(self._principal_cache, entity_json, cached)
        return cached

    def _evaluate_fast(self, principal: str, actions: Sequence[str], resource: str,
                       context: Mapping[str, object],
                       principal_attrs: Mapping[str, object] | None,
                       ) -> list[cedarpy.AuthzResult]:
        """Cedar's results without per-call schema work where it cannot change them.

        The principal's entity is validated once (cached); the resource entity, whose shape
        :meth:`from_files` checked against the schema, is added unvalidated; the context is
        validated once per (action, shape) (:meth:`_shape_valid`), else on this call.
        Raises Rejected, ValueError, KeyError.
        """
        path = normalise_resource(resource)
        cedar_context = cedar_value(context)
        principal_entity = build_principal(principal, context, principal_attrs)
        resource_entity = build_resource(path)
        cedar_entities = self._principal_base(principal_entity).with_added_json_str(
            json.dumps([resource_entity]))
        context_json = json.dumps(cedar_context)
        requests = [{"principal": principal_entity["uid"],
                     "action": {"type": "Action", "id": a},
                     "resource": resource_entity["uid"], "context": context_json}
                    for a in actions]
        checked = not self.validate_requests or all(
            self._shape_valid(a, cedar_context) for a in actions)
        return cedarpy.is_authorized_batch(requests, self._policies, cedar_entities,
                                           schema=None if checked else self._schema)

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
            if entities:
                request, entities_json = self._request(principal, actions[0], resource,
                                                       context, entities, principal_attrs)
                cedar_entities = self._entities(entities_json)
                requests = [{**request, "action": {"type": "Action", "id": a}}
                            for a in actions]
                results = cedarpy.is_authorized_batch(
                    requests, self._policies, cedar_entities,
                    schema=self._schema if self.validate_requests else None)
            else:
                results = self._evaluate_fast(principal, actions, resource, context,
                                              principal_attrs)
            if len(results) != len(actions):
                raise ValueError("cedarpy returned a wrong number of results")
            return tuple(self._decision(r) for r in results)
        except Exception as exc:  # any engine or input failure (Rejected included) denies
            denial = PolicyDecision(False, (), (f"policy engine: {type(exc).__name__}: {exc}",))
            return tuple(denial for _ in actions)
