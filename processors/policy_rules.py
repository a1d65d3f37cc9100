"""The rules a Cedar policy bundle must pass to load (processors/policy.py), every problem
reported with its file and policy id: what ``govledger policy validate`` prints and what the
processor refuses a published policy for (POLICY_INVALID)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cedarpy

from ledger.errors import ConfigError
from processors.cedar_json import check_entity_shapes

SCHEMA_FILES = ("schema.cedarschema", "schema.cedarschema.json")
POLICY_SUFFIX = ".cedar"
POLICY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_FILES = 64             # PolicyPublished.files
MAX_POLICIES = 256         # PolicyPublished.policy_ids
MAX_FILE_NAME = 128


@dataclass(frozen=True, slots=True)
class BundleProblem:
    """One reason a bundle does not load. ``file`` is "" for the bundle as a whole;
    ``policy`` is "" when the problem is not about one policy, else its ``@id`` (or Cedar's
    position, ``policy0``, for a policy without a valid one)."""

    file: str
    policy: str
    message: str

    def __str__(self) -> str:
        where = self.file + (f" [{self.policy}]" if self.policy else "")
        return f"{where}: {self.message}" if where else self.message


class BundleInvalid(ConfigError):
    """A bundle that does not load. ``problems`` holds every problem found (at least one),
    so a tool can list them all; the message names the first."""

    def __init__(self, problems: Sequence[BundleProblem]) -> None:
        self.problems = tuple(problems)
        more = len(self.problems) - 1
        super().__init__(f"policy bundle: {self.problems[0]}"
                         + (f" (and {more} more problems)" if more else ""))


def _parse_schema(name: str, text: str, problems: list[BundleProblem]) -> cedarpy.Schema | None:
    try:
        if name.endswith(".json"):
            return cedarpy.Schema.from_json_str(text)
        return cedarpy.Schema.from_str(text)
    except ValueError as exc:
        problems.append(BundleProblem(name, "", f"schema does not parse: {exc}"))
        return None


def _validation_problems(name: str, text: str,
                         schema: cedarpy.Schema) -> list[BundleProblem]:
    """Cedar's strict validation of one file's policies, each error under its ``@id``."""
    result = cedarpy.validate_policies(text, schema)
    if result.validation_passed:
        return []
    ids = result.id_annotations_by_policy_id
    found = set()
    for error in result.errors:
        label = ids.get(error.policy_id, error.policy_id)
        message = str(error.error).replace(f"`{error.policy_id}`", f"`{label}`")
        found.add(BundleProblem(name, label, f"fails schema validation: {message}"))
    if not found:
        found.add(BundleProblem(name, "", "fails schema validation"))
    return sorted(found, key=lambda p: (p.policy, p.message))


def _static_policies(name: str, text: str, schema: cedarpy.Schema | None,
                     problems: list[BundleProblem]) -> dict[str, object]:
    """Parse one policy file and validate it against ``schema`` (skipped when the schema
    itself failed); return its well-named policies by ``@id``, adding every problem found
    to ``problems``."""
    try:
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        problems.append(BundleProblem(name, "", f"does not parse: {exc}"))
        return {}
    if est.get("templates") or est.get("templateLinks"):
        problems.append(BundleProblem(name, "", "has templates (not supported)"))
        return {}
    if schema is not None:
        problems.extend(_validation_problems(name, text, schema))
    policies: dict[str, object] = {}
    for position, policy in est.get("staticPolicies", {}).items():
        policy_id = policy.get("annotations", {}).get("id")
        if not isinstance(policy_id, str) or not POLICY_ID.match(policy_id):
            problems.append(BundleProblem(name, position, f'needs an @id("...") matching '
                                          f"{POLICY_ID.pattern}, got {policy_id!r}"))
        elif policy_id in policies:
            problems.append(BundleProblem(name, policy_id,
                                          f"duplicate policy id {policy_id!r}"))
        else:
            policies[policy_id] = policy
    return policies


def _file_name_problem(name: str) -> BundleProblem | None:
    if (len(name) > MAX_FILE_NAME or "/" in name or "\\" in name
            or not (name.endswith(POLICY_SUFFIX) or name in SCHEMA_FILES)
            or name.startswith(".")):
        return BundleProblem("", "", f"unexpected file name {name!r}")
    return None


def check_bundle(files: Mapping[str, str], problems: list[BundleProblem],
                 ) -> tuple[cedarpy.Schema | None, dict[str, object]]:
    """Every rule of the module docstring over ``files`` (name -> text): the parsed schema
    and the policies by ``@id``, adding every problem found to ``problems`` (the bundle
    loads only if there is none)."""
    if len(files) > MAX_FILES:
        problems.append(BundleProblem("", "", f"more than {MAX_FILES} files"))
    named = {}
    for name, text in files.items():
        if (problem := _file_name_problem(name)) is not None:
            problems.append(problem)
        else:
            named[name] = text
    schemas = [n for n in SCHEMA_FILES if n in named]
    schema = None
    if len(schemas) != 1:
        problems.append(BundleProblem("", "", f"need exactly one of {SCHEMA_FILES}, "
                                      f"found {schemas}"))
    else:
        schema = _parse_schema(schemas[0], named[schemas[0]], problems)
    if schema is not None:
        try:  # the resource shape the engine adds unvalidated (processors/cedar_json.py)
            check_entity_shapes(schema)
        except ConfigError as exc:
            problems.append(BundleProblem(schemas[0], "", str(exc).removeprefix(
                "policy bundle: ")))
    combined: dict[str, object] = {}
    for name in sorted(n for n in named if n.endswith(POLICY_SUFFIX)):
        for policy_id, policy in _static_policies(name, named[name], schema, problems).items():
            if policy_id in combined:
                problems.append(BundleProblem(name, policy_id,
                                              f"duplicate policy id {policy_id!r}"))
            else:
                combined[policy_id] = policy
    if not combined and not any(p.file.endswith(POLICY_SUFFIX) for p in problems):
        problems.append(BundleProblem("", "", "no policies"))
    if len(combined) > MAX_POLICIES:
        problems.append(BundleProblem("", "", f"more than {MAX_POLICIES} policies"))
    return schema, combined
