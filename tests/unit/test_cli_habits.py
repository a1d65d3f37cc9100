"""CLI habits (issue 19, item 5): --version, --log-level, shell completion."""

from __future__ import annotations

import logging
from importlib.metadata import version

from typer.testing import CliRunner

from ledger.cli import app
from ledger.cli.options import LogLevel, configure_logging, set_log_level


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"govledger {version('govledger')}"


def test_an_unknown_log_level_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["--log-level", "loud", "init", "--help"])
    assert result.exit_code == 2


def test_the_log_level_chosen_overrides_the_commands_default() -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        root.handlers.clear()
        set_log_level(LogLevel.ERROR)
        configure_logging(LogLevel.INFO)
        assert root.level == logging.ERROR
        assert logging.getLogger("aiokafka").level == logging.ERROR
        root.handlers.clear()
        set_log_level(None)
        configure_logging(LogLevel.INFO)
        assert root.level == logging.INFO
        assert logging.getLogger("aiokafka").level == logging.WARNING
    finally:
        set_log_level(None)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in result.output
