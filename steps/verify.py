"""verify: Programs & Features (the Uninstall registry keys) shows the target version."""

from __future__ import annotations

from typing import Any

from steps.base import CheckResult, Step, StepContext, VerifyResult
from steps.common import versus_target
from steps.install import installed_version


class Verify(Step):
    id = "verify"
    title = "Verify the installed version"
    read_only = True
    always_run = True

    async def check(self, ctx: StepContext) -> CheckResult:
        return CheckResult(True, f"confirm Programs & Features shows {ctx.config.installer.version}")

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        return {}  # reading only

    async def verify(self, ctx: StepContext) -> VerifyResult:
        product = await installed_version(ctx)
        target = ctx.config.installer.version
        if product.installed and versus_target(product.version, target) == 0:
            return VerifyResult(
                True, f"Programs & Features shows {product.display_name} {product.version}", product.dump()
            )
        return VerifyResult(
            False, f"Programs & Features shows {product.version or 'no connector'}, not {target}", product.dump()
        )
