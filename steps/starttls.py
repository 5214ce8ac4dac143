"""starttls: turn STARTTLS off on every AD-over-IWA directory, after approval, and read it back.

The change is tenant-wide: the second host of a batch finds it already off. Where the API cannot do
it (directory_change = "manual", no tenant URL, or the service rejects the update) a person makes the
change in the console and confirms, and the bot reads it back where it can.
"""

from __future__ import annotations

from typing import Any

from bot.core.config import Config
from bot.core.gates import STARTTLS, STARTTLS_CONSOLE
from bot.core.models import StepRecord, StepState
from bot.systems.workspace_one import Directory, WorkspaceOneClient, WorkspaceOneRejected
from steps.base import CheckResult, PlannedStep, Step, StepContext, StepFailed, VerifyResult

CONSOLE_PATH = (
    "Identity & Access Management > Manage > Directories > select the directory > clear "
    "'This directory requires all connections to use STARTTLS' > Save"
)
ALREADY_OFF = "STARTTLS already off (the KB 77158 hotfix may have done this)"


def workspace_one(ctx: StepContext) -> WorkspaceOneClient | None:
    return ctx.workspace_one


def describe(directories: list[Directory]) -> list[dict[str, Any]]:
    return [{"name": d.name, "id": d.id, "useStartTls": bool(d.document.get("useStartTls"))} for d in directories]


def still_on(directories: list[Directory]) -> list[Directory]:
    return [d for d in directories if d.document.get("useStartTls")]


class StartTls(Step):
    id = "starttls"
    title = "Turn STARTTLS off on AD-over-IWA directories"
    gate = STARTTLS

    async def check(self, ctx: StepContext) -> CheckResult:
        client = workspace_one(ctx)
        if client is None:
            return CheckResult(
                True,
                "Workspace ONE Access is not configured (workspace_one.url, WS1_CLIENT_ID/SECRET): "
                "a person checks STARTTLS in the console",
                {"manual": True},
            )
        directories = await client.iwa_directories()
        on = still_on(directories)
        facts = {"iwa_directories": describe(directories)}
        if not on:
            return CheckResult(
                False, self._already_off(ctx) if directories else "no AD-over-IWA directory in this tenant", facts
            )
        names = ", ".join(f"{d.name} ({d.id})" for d in on)
        return CheckResult(True, f"STARTTLS is on for {names}", {**facts, "to_change": describe(on)})

    async def plan(self, ctx: StepContext) -> PlannedStep:
        check = await self.check(ctx)  # reads the directories (GET only)
        if not check.needed:
            return PlannedStep(False, check.reason)
        if check.facts.get("manual"):
            changes = ["every AD-over-IWA directory: STARTTLS off, by a person in the console (" + CONSOLE_PATH + ")"]
        else:
            changes = [f"{d['name']} ({d['id']}): useStartTls true → false" for d in check.facts["to_change"]]
            if ctx.config.workspace_one.directory_change == "manual":
                changes.append("by a person in the console (workspace_one.directory_change = manual), then confirmed")
        return PlannedStep(True, f"{check.reason}; tenant-wide (every connector)", changes, STARTTLS.name)

    @staticmethod
    def _already_off(ctx: StepContext) -> str:
        # Tenant-wide: after the batch's first host turned it off, the next ones find it off. Say which run did,
        # rather than guess at the hotfix.
        if by := ctx.done_earlier.get("starttls"):
            return f"STARTTLS already off: turned off by {by} earlier in this batch (tenant-wide)"
        return ALREADY_OFF

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        if check.facts.get("manual"):
            return {"what_changes": "STARTTLS off on every AD-over-IWA directory, by a person in the console"}
        return {
            "what_changes": "useStartTls: true → false on these directories, nothing else in their configuration; "
            "the change is tenant-wide (every connector)",
            "directories": [f"{d['name']} ({d['id']})" for d in check.facts["to_change"]],
            "why": "after the upgrade, AD over IWA does not work with STARTTLS (vendor procedure)",
        }

    def change(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        if check.facts.get("manual"):
            return {"tenant": "console", "set": {"useStartTls": False}, "directories": "every AD-over-IWA directory"}
        # The directories shown, by id and name, in a stable order: a new one, or a renamed one, is
        # another change.
        shown = sorted(({"id": d["id"], "name": d["name"]} for d in check.facts["to_change"]), key=lambda d: d["id"])
        return {"tenant": ctx.config.workspace_one.url, "set": {"useStartTls": False}, "directories": shown}

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        client = workspace_one(ctx)
        if client is None or ctx.config.workspace_one.directory_change == "manual":
            await self._by_hand(ctx, "directory_change = manual" if client else "no API access")
            return {"changed_by": "a person in the console"}
        # Only the directories the approvers saw: one that appeared since is not theirs to change (the
        # engine asks again when it sees one before apply; this holds if one appears in between).
        granted = {d["id"] for d in (ctx.approved or {}).get("directories", [])}
        changed: list[dict[str, str]] = []
        rejected = None
        for directory in still_on(await client.iwa_directories()):
            if directory.id not in granted:
                ctx.note(f"not changed: {directory.name} ({directory.id}) was not in the approved request")
                continue
            try:
                await client.update_directory(directory, {"useStartTls": False})
                changed.append({"name": directory.name, "id": directory.id})
            except WorkspaceOneRejected as exc:
                rejected = exc
                break
        if rejected is not None:
            ctx.note(f"the service rejected the update ({rejected}); asking a person to use the console")
            await self._by_hand(ctx, f"the API rejected the update (HTTP {rejected.status})")
            return {"changed_by_api": changed, "changed_by": "a person in the console", "api_rejected": str(rejected)}
        return {"changed_by_api": changed}

    def changed(self, record: StepRecord) -> str | None:
        if not record.applied or record.state is not StepState.succeeded:
            return None
        by_api = [d["name"] for d in record.facts.get("changed_by_api", [])]
        how = f"on {', '.join(by_api)}" if by_api else ""
        if record.facts.get("changed_by"):
            how = f"{how} and by a person in the console" if how else "by a person in the console"
        # Tenant-wide, and outside the VM: reverting the VM to its snapshot does not turn it back on.
        return f"STARTTLS turned off tenant-wide {how} (every connector of the tenant; a VM revert does not undo it)"

    def unchanged(self, record: StepRecord) -> str | None:
        if record.applied or record.state in (StepState.succeeded, StepState.skipped, StepState.unavailable):
            return None
        refused = (record.facts.get("denied") or {}).get("directories")
        on = [d["name"] for d in (refused if isinstance(refused, list) else record.facts.get("to_change", []))]
        return f"STARTTLS (still on for {', '.join(on)})" if on else "STARTTLS (not touched)"

    async def _by_hand(self, ctx: StepContext, why: str) -> None:
        if ctx.confirm is None:
            raise StepFailed(f"STARTTLS must be turned off by hand ({why}), and nobody can be asked here")
        granted = (ctx.approved or {}).get("directories")
        which = (
            "for these directories: " + ", ".join(f"{d['name']} ({d['id']})" for d in granted)
            if isinstance(granted, list)
            else "for every AD-over-IWA directory"
        )
        await ctx.confirm(
            STARTTLS_CONSOLE,
            f"turn STARTTLS off by hand ({why}): {CONSOLE_PATH}, {which}; then confirm",
            {"what_to_do": f"{CONSOLE_PATH}, {which}", "why": why},
        )

    async def verify(self, ctx: StepContext) -> VerifyResult:
        client = workspace_one(ctx)
        if client is None:
            return VerifyResult(True, "confirmed by a person (not read back: no API access)")
        directories = await client.iwa_directories()
        on = still_on(directories)
        if on:
            raise StepFailed(
                "STARTTLS is still on for "
                + ", ".join(f"{d.name} ({d.id})" for d in on)
                + f"; turn it off in the console ({CONSOLE_PATH}) and run again",
                {"iwa_directories": describe(directories)},
            )
        return VerifyResult(
            True,
            "STARTTLS is off on every AD-over-IWA directory (read back)",
            {"iwa_directories": describe(directories)},
        )


class PostCheck(Step):
    id = "postcheck"
    title = "STARTTLS stays off"
    read_only = True
    always_run = True

    def unavailable(self, config: Config) -> str | None:
        if not config.workspace_one.url:
            return "workspace_one.url is not set; by hand: confirm STARTTLS is still off on every AD-over-IWA directory"
        return None

    async def check(self, ctx: StepContext) -> CheckResult:
        return CheckResult(True, "read the AD-over-IWA directories again")

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        return {}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        client = workspace_one(ctx)
        if client is None:
            raise StepFailed("Workspace ONE Access credentials are missing (WS1_CLIENT_ID / WS1_CLIENT_SECRET)")
        directories = await client.iwa_directories()
        on = still_on(directories)
        facts = {"iwa_directories": describe(directories)}
        if on:
            names = ", ".join(f"{d.name} ({d.id})" for d in on)
            turned_off = (ctx.facts.get("starttls") or {}).get("changed_by_api") or (
                ctx.facts.get("starttls") or {}
            ).get("changed_by")
            if turned_off:
                raise StepFailed(
                    f"STARTTLS is back ON for {names}: AD over IWA does not work with STARTTLS on the upgraded "
                    f"connector. Turn it off again: {CONSOLE_PATH}",
                    facts,
                )
            # This run did not turn it off (the connector was already current, say): tell what to do, not "back".
            raise StepFailed(
                f"STARTTLS is on for {names}, and AD over IWA does not work with STARTTLS on connector "
                f"{ctx.config.installer.version}; this run did not change it. Turn it off in the console: "
                f"{CONSOLE_PATH}; then run again to check",
                facts,
            )
        return VerifyResult(
            True,
            "STARTTLS is off on every AD-over-IWA directory. Reminder: do not enable STARTTLS for these "
            "directories again; AD over IWA does not work with it",
            facts,
        )
