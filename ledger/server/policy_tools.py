"""The offline policy tools' shell: read the files, load the bundle as the processor does,
and hand everything to the pure rules (processors/core/policy_cases.py, policy_explain.py).

The CLI (ledger/cli/policy_commands.py) calls these; only ``ledger.server`` may import
``processors`` (tests/unit/test_layout.py), so this module is where the two meet.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ledger.core.keys import KeyRing
from ledger.errors import ConfigError
from ledger.keyfiles import load_keyring
from processors.core.checks import Verdict
from processors.core.policy_cases import CaseResult, PolicyCase, PolicyInput, parse_cases, run_cases
from processors.core.policy_explain import Explanation, explain
from processors.policy import PolicyBundle
from processors.policy_rules import BundleInvalid, BundleProblem

__all__ = ["BundleProblem", "BundleReport", "CaseResult", "Explanation", "PolicyCase",
           "PolicyInput", "Verdict", "explain_request", "load_bundle", "read_cases",
           "run_case_file", "validate_bundle"]

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What ``policy validate`` found: the loaded bundle's ids, files and digest, or every
    problem (``problems`` non-empty and the rest empty)."""

    directory: Path
    files: tuple[str, ...]
    policy_ids: tuple[str, ...]
    digest: str
    problems: tuple[BundleProblem, ...]


def load_bundle(directory: Path) -> PolicyBundle:
    """The bundle exactly as the processor loads it (processors/app.py build_engine).
    Raises ConfigError (BundleInvalid lists every problem)."""
    return PolicyBundle.load(directory)


def validate_bundle(directory: Path) -> BundleReport:
    """Load ``directory`` as the processor does and report. Raises ConfigError only when it
    is not a directory; every problem of the bundle itself is in the report."""
    try:
        bundle = PolicyBundle.load(directory)
    except BundleInvalid as exc:
        return BundleReport(directory, (), (), "", exc.problems)
    return BundleReport(directory, tuple(sorted(bundle.files())), bundle.policy_ids,
                        bundle.digest, ())


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def read_cases(path: Path) -> tuple[PolicyCase, ...]:
    """The cases of a ``.toml`` or ``.json`` cases file. Raises ConfigError naming the file
    and, for a bad case, the case and field."""
    data = _read(path, "cases file")
    document: object
    try:
        if path.suffix == ".toml":
            document = tomllib.loads(data.decode("utf-8"))
        elif path.suffix == ".json":
            document = json.loads(data)
        else:
            raise ConfigError(f"{path}: a cases file ends in .toml or .json")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path} does not parse: {exc}") from exc
    if not isinstance(document, Mapping):
        raise ConfigError(f"{path}: a cases document is a table / JSON object")
    try:
        return parse_cases(document)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def run_case_file(directory: Path, cases_path: Path) -> tuple[CaseResult, ...]:
    """Every case of ``cases_path`` decided under the bundle in ``directory``, compared with
    its expectation. Raises ConfigError for an unloadable bundle or a bad cases file."""
    cases = read_cases(cases_path)
    return run_cases(load_bundle(directory), cases)


def explain_request(request_path: Path, directory: Path, *, keyring_path: Path | None = None,
                    roles: frozenset[str] | None = None,
                    depth: int | None = None) -> tuple[Explanation, str]:
    """The verdict on the request in ``request_path`` under the bundle in ``directory``, and
    the bundle's digest. Raises ConfigError (unreadable or ambiguous input, processors/core/
    policy_explain.py)."""
    data = _read(request_path, "request")
    if data.endswith(b"\n"):  # as editors add; not part of a signed envelope's bytes
        data = data[:-1]
    keyring: KeyRing | None = load_keyring(keyring_path) if keyring_path is not None else None
    bundle = load_bundle(directory)
    return explain(bundle, data, keyring=keyring, roles=roles, depth=depth), bundle.digest
