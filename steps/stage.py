"""stage: the host downloads the installer from installer.url and proves its SHA-256.

The installer never travels through the WinRM channel: the host fetches it from the internal artifact
store or file share itself. An identical file already there is reused; a mismatching one is deleted.
The URL itself goes to the host only as a script parameter: every reason and fact shows ``public_url``.
"""

from __future__ import annotations

from typing import Any

from bot.core.models import StepRecord, StepState
from bot.core.redact import public_url, scrub_url
from bot.systems.winrm import ScriptFailed
from steps.base import CheckResult, PlannedStep, Step, StepContext, StepFailed, VerifyResult
from steps.common import installer_file_name, read_script, run_script, work_path
from steps.facts import FileHash, Staged

SHA_MISMATCH, DOWNLOAD_FAILED = 3, 2


def installer_path(ctx: StepContext) -> str:
    return work_path(ctx, installer_file_name(ctx.config.installer.url))


class Stage(Step):
    id = "stage"
    title = "Download the installer on the host"

    async def _hash(self, ctx: StepContext) -> FileHash:
        return await read_script(ctx, "filehash", FileHash, {"Path": installer_path(ctx)}, retry_safe=True)

    async def check(self, ctx: StepContext) -> CheckResult:
        found = await self._hash(ctx)
        expected = ctx.config.installer.sha256
        if found.exists and found.sha256 == expected:
            return CheckResult(
                False, f"{found.path} is already there with the expected SHA-256", {"file": found.dump()}
            )
        if found.exists:
            reason = f"{found.path} has another SHA-256 ({(found.sha256 or '')[:12]}…): it will be replaced"
        else:
            reason = f"download {installer_file_name(ctx.config.installer.url)} to {ctx.config.installer.work_dir}"
        return CheckResult(True, reason, {"file": found.dump()})

    async def plan(self, ctx: StepContext) -> PlannedStep:
        check = await self.check(ctx)  # hashes the file if it is there
        if not check.needed:
            return PlannedStep(False, check.reason)
        return PlannedStep(True, check.reason, [f"{installer_path(ctx)}: written (SHA-256 checked)"])

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        installer = ctx.config.installer
        params = {
            "Url": installer.url,
            "Sha256": installer.sha256,
            "Directory": installer.work_dir,
            "FileName": installer_file_name(installer.url),
        }
        try:
            result = await run_script(ctx, "stage", params)
        except ScriptFailed as failed:
            # the host's error names the URL it fetched: with a pre-signed query string, a credential
            stderr = scrub_url(failed.stderr, installer.url)
            if failed.exit_code == SHA_MISMATCH:
                raise StepFailed(
                    f"{stderr}. Check that installer.url and installer.sha256 describe the same file "
                    "(the artifact store may hold a damaged or different build)",
                    {"exit_code": failed.exit_code},
                ) from None
            if failed.exit_code == DOWNLOAD_FAILED:
                raise StepFailed(
                    f"{stderr}. Check that {public_url(installer.url)} is reachable from {ctx.host} "
                    "(proxy, firewall, the web server's access rules)",
                    {"exit_code": failed.exit_code},
                ) from None
            raise ScriptFailed(ctx.host, "stage", failed.exit_code, stderr, failed.output) from None
        staged = Staged.from_script(ctx.host, "stage", result.data)
        return {"staged": staged.dump(), "seconds": round(result.seconds, 1)}

    def changed(self, record: StepRecord) -> str | None:
        if not record.applied or record.state is not StepState.succeeded:
            return None
        return f"installer downloaded to {(record.facts.get('file') or {}).get('path', 'the host')}"

    async def verify(self, ctx: StepContext) -> VerifyResult:
        found = await self._hash(ctx)
        if found.exists and found.sha256 == ctx.config.installer.sha256:
            return VerifyResult(
                True, f"{found.path} ({found.bytes} bytes) matches installer.sha256", {"file": found.dump()}
            )
        return VerifyResult(
            False, f"{found.path} is missing or does not match installer.sha256", {"file": found.dump()}
        )
