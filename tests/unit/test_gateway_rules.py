"""The gateway's pure parts: resource templates over tool arguments, digests, the config."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ledger.core.scope import matches
from ledger.errors import ConfigError
from ledger.gateway.config import load_config
from ledger.gateway.rules import (
    CallCode,
    CallRefused,
    arguments_digest,
    parse_template,
    render,
)

DB = parse_template("db/{database}/{table}")
FILES = parse_template("files/{+path}")


def refused(template: str, arguments: dict[str, object]) -> CallCode:
    with pytest.raises(CallRefused) as caught:
        render(parse_template(template), arguments)
    return caught.value.code


def test_a_template_renders_the_concrete_resource_the_scope_matches() -> None:
    resource = render(DB, {"database": "orders", "table": "t1", "extra": [1, 2]})
    assert resource == "db/orders/t1"
    assert matches("db/orders/*", resource)
    assert render(FILES, {"path": "a/b/c.txt"}) == "files/a/b/c.txt"
    assert render(DB, {"database": "orders", "table": 42}) == "db/orders/42"


@pytest.mark.parametrize("arguments", [
    {"database": "orders"},                                  # missing
    {"database": "orders", "table": "a/b"},                  # a separator in one segment
    {"database": "orders", "table": "*"},                    # a wildcard
    {"database": "orders", "table": "t*"},
    {"database": "orders", "table": ".."},                   # a dot segment
    {"database": "orders", "table": "%2e%2e"},               # an escape to decode
    {"database": "orders", "table": ""},
    {"database": "orders", "table": "x" * 257},
    {"database": "orders", "table": True},                   # not a string nor an integer
    {"database": "orders", "table": None},
    {"database": "orders", "table": ["t1"]},
    {"database": "orders", "table": "t 1"},
    {"database": "orders", "table": "t\u0131"},              # non-ASCII look-alike
])
def test_an_argument_that_does_not_fit_one_segment_is_refused(
        arguments: dict[str, object]) -> None:
    assert refused("db/{database}/{table}", arguments) is CallCode.ARGUMENT_MISMATCH


@pytest.mark.parametrize("path", ["a//b", "/etc/passwd", "a/../b", "a/./b", "a/*", "a/", "*"])
def test_a_multi_segment_argument_still_refuses_empty_dot_and_wildcard_segments(
        path: str) -> None:
    assert refused("files/{+path}", {"path": path}) is CallCode.ARGUMENT_MISMATCH


@pytest.mark.parametrize(("template", "problem"), [
    ("db/*", "no wildcard"),
    ("db/{table", "brace"),
    ("db/{a}/{a}", "used twice"),
    ("db/../{a}", "dot segment"),
    ("/db/{a}", "empty segment"),
])
def test_a_bad_template_is_refused_with_its_problem(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_template(template)


def test_the_arguments_digest_is_sha256_of_the_rfc8785_bytes_and_caps_the_size() -> None:
    expected = hashlib.sha256(b'{"a":1,"b":"x"}').hexdigest()
    assert arguments_digest({"b": "x", "a": 1}, 100) == f"sha256:{expected}"
    with pytest.raises(CallRefused) as caught:
        arguments_digest({"blob": "x" * 200}, 100)
    assert caught.value.code is CallCode.OVERSIZED
    with pytest.raises(CallRefused) as malformed:
        arguments_digest({"n": 2**60}, 100)  # beyond 2^53: no canonical form
    assert malformed.value.code is CallCode.MALFORMED


GOOD = """
agent_key = "keys/alice.key"
api = "http://127.0.0.1:8080"
[upstreams.db]
command = "python3"
args = ["db.py"]
[tools.query]
action = "read"
resource = "db/{database}/{table}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_config_loads_with_paths_relative_to_its_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.agent_key == tmp_path / "keys/alice.key"
    assert config.tools["query"].action == "read"
    assert not config.hide_unmapped_tools
    assert config.measured_environment().startswith("sha256:")


@pytest.mark.parametrize(("change", "named"), [
    (lambda t: t.replace('action = "read"', 'action = "Read!"'), "tools.query.action"),
    (lambda t: t.replace("{database}/{table}", "{database}/*"), "tools.query.resource"),
    (lambda t: t.replace('command = "python3"', 'url = "http://x/mcp"\ncommand = "p"'),
     "upstreams.db"),
    (lambda t: t.replace('api = "http://127.0.0.1:8080"\n', ""), "api"),
    (lambda t: t + "grant_ttl_s = -1\n", "grant_ttl_s"),
    (lambda t: t.replace("agent_key", "agent_kee"), "agent_kee"),
    (lambda t: t + '[tools.other]\naction = "read"\nresource = "x"\nupstream = "nope"\n',
     "tools.other.upstream"),
    (lambda t: t.replace("[upstreams.db]", "[upstreams.db]\nurl = 5"), "upstreams.db.url"),
    (lambda t: t + "this is = = not toml", "not valid TOML"),
])
def test_a_bad_config_is_refused_naming_the_field(tmp_path: Path, change, named: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, change(GOOD)))
    assert named in str(caught.value)
