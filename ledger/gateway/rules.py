"""From an MCP tool call to what is authorized: an action and a concrete resource. Pure.

A resource template is literal text with placeholders over the call's arguments::

    db/{database}/{table}      {name}   one path segment: the argument, a string (or an
                                        integer), must not contain "/" nor "*"
    files/{+path}              {+name}  one or more segments: "/" allowed between them,
                                        "*" never

Each argument value must be made of the segment alphabet of :mod:`ledger.core.scope`, and
the rendered resource must already be in normal form (no percent-escapes to decode, no dot
segments): an argument that does not fit is refused, never repaired, so what is authorized
is exactly what the tool receives. A missing argument, one of another type, one that is too
long, or a template placeholder the call does not fill is refused too (ARGUMENT_MISMATCH).

The arguments digest is ``sha256:`` of their RFC 8785 bytes (the same canonical JSON every
signed payload uses), so anyone holding the arguments can recompute it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ledger.core.canonical import canonical_bytes
from ledger.core.scope import normalise_resource
from ledger.errors import Rejected

_PLACEHOLDER = re.compile(r"\{(\+?)([A-Za-z_][A-Za-z0-9_]{0,63})\}")
_SEGMENT = re.compile(r"[A-Za-z0-9._~:@+=,-]+")
MAX_VALUE_LENGTH = 256


class CallCode(StrEnum):
    """The gateway's own refusal codes (the ledger's reason codes come from the decision)."""

    TOOL_NOT_MAPPED = "TOOL_NOT_MAPPED"
    ARGUMENT_MISMATCH = "ARGUMENT_MISMATCH"
    OVERSIZED = "OVERSIZED"
    MALFORMED = "MALFORMED"


class CallRefused(Exception):
    """The call does not reach the ledger nor the upstream: ``code`` says why."""

    def __init__(self, code: CallCode, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code.value}: {detail}")


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal parts and placeholders, alternating, literal first."""

    literals: tuple[str, ...]
    names: tuple[tuple[str, bool], ...]  # (argument name, may span segments)


def parse_template(text: str) -> Template:
    """Raises ValueError naming what is wrong (for the config's error message)."""
    literals: list[str] = []
    names: list[tuple[str, bool]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(text):
        literals.append(text[last:match.start()])
        names.append((match.group(2), match.group(1) == "+"))
        last = match.end()
    literals.append(text[last:])
    for literal in literals:
        if "{" in literal or "}" in literal:
            raise ValueError(f"resource template {text!r}: a brace that is not a placeholder "
                             "({name} or {+name})")
        if "*" in literal:
            raise ValueError(f"resource template {text!r}: no wildcard; a call names one "
                             "concrete resource")
    if len({name for name, _ in names}) != len(names):
        raise ValueError(f"resource template {text!r}: an argument used twice")
    template = Template(tuple(literals), tuple(names))
    sample = {name: "x" for name, _ in names}
    try:
        render(template, sample)
    except CallRefused as exc:
        raise ValueError(f"resource template {text!r}: {exc.detail}") from exc
    return template


def _value(name: str, value: object, spans: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CallRefused(CallCode.ARGUMENT_MISMATCH,
                          f"argument {name!r} must be a string or an integer")
    text = str(value)
    if not text or len(text) > MAX_VALUE_LENGTH:
        raise CallRefused(CallCode.ARGUMENT_MISMATCH,
                          f"argument {name!r} must be 1-{MAX_VALUE_LENGTH} characters")
    segments = text.split("/") if spans else [text]
    if "/" in text and not spans:
        raise CallRefused(CallCode.ARGUMENT_MISMATCH, f"argument {name!r} may not contain '/'")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or set(segment) == {"."}:
            raise CallRefused(CallCode.ARGUMENT_MISMATCH,
                              f"argument {name!r} has a character or segment a resource "
                              "may not hold (allowed: A-Z a-z 0-9 . _ ~ : @ + = , -, "
                              "no '*', no empty or dot-only segment)")
    return text


def render(template: Template, arguments: Mapping[str, object]) -> str:
    """The concrete resource for these arguments. Raises CallRefused (ARGUMENT_MISMATCH)."""
    parts = [template.literals[0]]
    for (name, spans), literal in zip(template.names, template.literals[1:], strict=True):
        if name not in arguments:
            raise CallRefused(CallCode.ARGUMENT_MISMATCH, f"argument {name!r} is missing")
        parts += [_value(name, arguments[name], spans), literal]
    resource = "".join(parts)
    try:
        normal = normalise_resource(resource)
    except Rejected as exc:
        raise CallRefused(CallCode.ARGUMENT_MISMATCH, exc.detail) from exc
    if normal != resource or resource.endswith("/*"):
        raise CallRefused(CallCode.ARGUMENT_MISMATCH,
                          f"resource {resource[:100]!r} is not in normal form")
    return resource


def arguments_digest(arguments: Mapping[str, object], max_bytes: int) -> str:
    """``sha256:`` of the RFC 8785 bytes. Raises CallRefused: OVERSIZED above ``max_bytes``,
    MALFORMED when the arguments have no canonical form (NaN, a lone surrogate, ...)."""
    data = _canonical(dict(arguments), "arguments")
    if len(data) > max_bytes:
        raise CallRefused(CallCode.OVERSIZED,
                          f"arguments are {len(data)} bytes, more than {max_bytes}")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def result_digest(result: object) -> str:
    """``sha256:`` of the RFC 8785 bytes of a JSON-shaped result. Raises CallRefused
    (MALFORMED) when it has no canonical form."""
    return "sha256:" + hashlib.sha256(_canonical(result, "the result")).hexdigest()


def _canonical(value: object, what: str) -> bytes:
    try:
        return canonical_bytes(value)
    except Rejected as exc:
        raise CallRefused(CallCode.MALFORMED, f"{what} have no canonical JSON: {exc.detail}"
                          ) from exc
