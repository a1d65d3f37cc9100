"""Strict JSON parsing and RFC 8785 (JCS) canonical bytes.

Signed payloads must arrive already canonical: we never re-serialize what was signed
(STYLE.md section 4). Before any model is built, the bytes are parsed strictly here:

* the input must be valid UTF-8 (RFC 8259 section 8.1) and within ``max_bytes``;
* duplicate object keys, NaN / Infinity, integers outside the I-JSON safe range
  (|n| > 2**53 - 1, RFC 7493 section 2.2), non-finite floats, lone surrogates and U+0000
  anywhere in a string are refused;
* nesting deeper than ``max_depth`` is refused.

Every failure raises :class:`~ledger.errors.InvalidEvent` with reason MALFORMED (or OVERSIZED
for the byte cap). :func:`require_canonical` then compares the received bytes with the JCS
encoding of what was parsed and raises NON_CANONICAL on any difference.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring

import rfc8785

from ledger.errors import InvalidEvent, Reason

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

MAX_SAFE_INTEGER = 2**53 - 1
DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 16


def _refuse_constant(name: str) -> JsonValue:
    raise InvalidEvent(Reason.MALFORMED, f"JSON constant {name} is not allowed")


def _parse_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise InvalidEvent(Reason.MALFORMED, "integer outside +-(2**53-1)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidEvent(Reason.MALFORMED, "number is not finite")
    return value


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise InvalidEvent(Reason.MALFORMED, "U+0000 in a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(Reason.MALFORMED, "lone surrogate in a string") from exc


def _object(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise InvalidEvent(Reason.MALFORMED, f"duplicate key {duplicate[:64]!r}")
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_refuse_constant,
                            parse_int=_parse_int, parse_float=_parse_float)


# A lone surrogate or U+0000 can only enter a decoded string through a \\u escape (raw
# surrogates are invalid UTF-8, raw control characters invalid JSON), so texts without such an
# escape skip the per-string walk.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _walk(value: JsonValue, max_depth: int) -> None:
    """Check depth and every string value without recursion."""
    stack: list[tuple[JsonValue, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidEvent(Reason.MALFORMED, f"nesting deeper than {max_depth}")
            if isinstance(item, dict):
                for key in item:
                    _check_string(key)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def parse_strict(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> JsonValue:
    """Parse ``data`` as strict I-JSON.

    Raises InvalidEvent(OVERSIZED) past ``max_bytes``, InvalidEvent(MALFORMED) otherwise.
    """
    if len(data) > max_bytes:
        raise InvalidEvent(Reason.OVERSIZED, f"{len(data)} bytes > {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(Reason.MALFORMED, "not UTF-8") from exc
    if text.startswith("\ufeff"):
        raise InvalidEvent(Reason.MALFORMED, "byte order mark")
    try:
        value: JsonValue = _DECODER.decode(text)
    except InvalidEvent:
        raise
    except RecursionError as exc:
        raise InvalidEvent(Reason.MALFORMED, "nesting too deep") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidEvent(Reason.MALFORMED, f"invalid JSON: {exc}") from exc
    # Nesting depth is at most the number of opening brackets: walk only when it could matter.
    if _SUSPECT_ESCAPE.search(text) or text.count("{") + text.count("[") > max_depth:
        _walk(value, max_depth)
    return value


class _NeedsReference(Exception):
    """The fast encoder met a value it leaves to the reference implementation."""


def _encode(value: object, out: list[str]) -> None:
    # RFC 8785 section 3.2.2: strings escape only '"', '\\' and U+0000-U+001F (short forms
    # for \b \t \n \f \r, else \u00xx lowercase), exactly json's encode_basestring.
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise _NeedsReference
        out.append(str(value))
    elif isinstance(value, dict):
        keys = list(value)
        if not all(isinstance(k, str) and k.isascii() for k in keys):
            raise _NeedsReference  # section 3.2.3 sorts by UTF-16 code units
        out.append("{")
        for n, key in enumerate(sorted(keys)):
            if n:
                out.append(",")
            out.append(encode_basestring(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for n, item in enumerate(value):
            if n:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise _NeedsReference  # floats (ES6 number form, section 3.2.2.3), unknown types


def canonical_bytes(value: object) -> bytes:
    """RFC 8785 canonical encoding of a JSON-compatible value.

    A fast encoder handles strings, safe integers, booleans, null, arrays and objects with
    ASCII keys; anything else goes to the ``rfc8785`` package. Both are cross-checked in
    tests/property/test_canonical.py. Raises InvalidEvent(MALFORMED) when the value has no
    canonical form (an unsafe integer, NaN, a lone surrogate, a non-JSON type).
    """
    out: list[str] = []
    try:
        _encode(value, out)
        return "".join(out).encode("utf-8")
    except (_NeedsReference, UnicodeEncodeError):
        pass
    try:
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidEvent(Reason.MALFORMED, f"cannot canonicalize: {exc}") from exc


def canonical_bytes_of_safe(value: object) -> bytes:
    """RFC 8785 encoding of a value known to hold no floats, only integers within
    +-(2**53-1) and only ASCII object keys: for these, Python's C JSON encoder with sorted
    keys and ``ensure_ascii=False`` produces exactly the JCS bytes (RFC 8785 sections
    3.2.2-3.2.3). The event models guarantee this shape by their field types; the property
    tests cross-check against the ``rfc8785`` package.
    """
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def require_canonical(data: bytes, value: JsonValue) -> None:
    """Raise InvalidEvent(NON_CANONICAL) unless ``data`` is the JCS encoding of ``value``."""
    if canonical_bytes(value) != data:
        raise InvalidEvent(Reason.NON_CANONICAL, "bytes are not RFC 8785 canonical JSON")


def as_object(value: JsonValue, what: str) -> Mapping[str, JsonValue]:
    """Return ``value`` as a JSON object or raise InvalidEvent(MALFORMED)."""
    if not isinstance(value, dict):
        raise InvalidEvent(Reason.MALFORMED, f"{what} is not a JSON object")
    return value


def as_list(value: JsonValue, what: str) -> Sequence[JsonValue]:
    """Return ``value`` as a JSON array or raise InvalidEvent(MALFORMED)."""
    if not isinstance(value, list):
        raise InvalidEvent(Reason.MALFORMED, f"{what} is not a JSON array")
    return value
