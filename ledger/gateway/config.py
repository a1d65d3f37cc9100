"""The gateway's one configuration file (TOML), validated with pydantic at start.

::

    agent_key = "keys/alice.key"
    api = "http://127.0.0.1:8080"
    [upstreams.db]
    command = "python3"
    args = ["db_server.py"]
    [tools.query]
    action = "read"
    resource = "db/{database}/{table}"

Every problem is a :class:`~ledger.errors.ConfigError` naming the field (``tools.query.
resource: ...``), raised before anything starts. Paths are relative to the file's directory.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ledger.core.events import ActionName, Digest
from ledger.errors import ConfigError
from ledger.gateway.rules import Template, parse_template

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
ToolName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Upstream(_Strict):
    """One upstream MCP server: a stdio ``command`` (with ``args``, ``env``, ``cwd``) or a
    streamable HTTP ``url``, exactly one of them."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    url: HttpUrl | None = None

    @model_validator(mode="after")
    def _one_transport(self) -> Upstream:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (stdio) or url (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd is not None):
            raise ValueError("args, env and cwd are for a stdio command, not a url")
        return self


class ToolRule(_Strict):
    """How one tool's call maps to an authorization: an action and a resource template over
    the call's arguments (:mod:`ledger.gateway.rules`). ``upstream``: which server holds the
    tool, when more than one lists it."""

    action: ActionName
    resource: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    upstream: Name | None = None

    @property
    def template(self) -> Template:
        return parse_template(self.resource)

    @field_validator("resource")
    @classmethod
    def _template_parses(cls, resource: str) -> str:
        parse_template(resource)  # ValueError names the problem
        return resource


class GatewayConfig(_Strict):
    """The whole file. Timeouts in seconds; sizes in bytes."""

    agent_key: Path
    runtime_key: Path | None = None
    data: Path | None = None
    kafka: str | None = None
    api: HttpUrl | None = None
    allow_unlogged: bool = False
    environment: Digest | None = None
    parent_artifact: Path | None = None
    hide_unmapped_tools: bool = False
    grant_ttl_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    decision_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    approval_wait_s: Annotated[float, Field(ge=0, le=3_600)] = 20.0
    call_timeout_s: Annotated[float, Field(gt=0, le=3_600)] = 30.0
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 20.0
    max_argument_bytes: Annotated[int, Field(ge=64, le=16 * 1024 * 1024)] = 64 * 1024
    upstreams: Annotated[dict[Name, Upstream], Field(min_length=1)]
    tools: dict[ToolName, ToolRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rules_name_upstreams(self) -> GatewayConfig:
        for name, rule in self.tools.items():
            if rule.upstream is not None and rule.upstream not in self.upstreams:
                raise ValueError(f"tools.{name}.upstream: no upstream named {rule.upstream!r}")
        if self.api is None and not self.allow_unlogged:
            raise ValueError("api: the gate proves each artifact is logged through the "
                             "govledger API; give api, or allow_unlogged = true (weaker)")
        return self

    def measured_environment(self) -> str:
        """The environment digest the gateway runs in: ``environment`` if set, else the
        SHA-256 of the upstream definitions (what the gateway will run or call), so an
        artifact is bound to these servers."""
        if self.environment is not None:
            return self.environment
        described = {name: up.model_dump(mode="json") for name, up in self.upstreams.items()}
        text = json.dumps(described, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def load_config(path: Path) -> GatewayConfig:
    """Read and validate ``path``. Relative paths in it are made relative to its directory.

    Raises ConfigError naming the file and the field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + describe(exc)) from exc
    return _relative_to(config, path.parent)


def describe(exc: ValidationError) -> str:
    """Each error as ``field.path: message``, joined by ``; ``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = re.sub(r"^Value error, ", "", error["msg"])
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _relative_to(config: GatewayConfig, base: Path) -> GatewayConfig:
    def fix(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else base / path

    upstreams = {name: up.model_copy(update={"cwd": fix(up.cwd)})
                 for name, up in config.upstreams.items()}
    return config.model_copy(update={
        "agent_key": fix(config.agent_key), "runtime_key": fix(config.runtime_key),
        "data": fix(config.data), "parent_artifact": fix(config.parent_artifact),
        "upstreams": upstreams})
