"""The gateway asks the log check once per artifact: a proof of inclusion stays a proof."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from ledger.gateway.run import remember_logged


def test_a_proven_artifact_is_not_proven_again_and_a_failed_check_is_asked_again() -> None:
    asked: list[str] = []
    answers = {"a": [True], "b": [False, True]}

    async def check(checked: Any) -> bool:
        asked.append(checked.artifact_id)
        return answers[checked.artifact_id].pop(0)

    remembered = remember_logged(check, limit=1)

    async def scenario() -> list[bool]:
        a, b = SimpleNamespace(artifact_id="a"), SimpleNamespace(artifact_id="b")
        return [await remembered(a), await remembered(a),      # type: ignore[arg-type]
                await remembered(b), await remembered(b)]      # type: ignore[arg-type]

    assert asyncio.run(scenario()) == [True, True, False, True]
    assert asked == ["a", "b", "b"]
