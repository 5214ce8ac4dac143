"""Steps of the procedure this build cannot do yet: shown as "not available" with what a person must do."""

from __future__ import annotations

from typing import Any

from bot.config import Config
from steps.base import CheckResult, Step, StepContext, VerifyResult


class NotAvailable(Step):
    def __init__(self, step_id: str, title: str, by_hand: str):
        self.id, self.title, self.by_hand = step_id, title, by_hand

    def unavailable(self, config: Config) -> str | None:
        return f"not automated in this version; by hand: {self.by_hand}"

    async def check(self, ctx: StepContext) -> CheckResult:  # never called: unavailable() says so first
        raise NotImplementedError(self.id)

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        raise NotImplementedError(self.id)

    async def verify(self, ctx: StepContext) -> VerifyResult:
        raise NotImplementedError(self.id)
