"""reboot: only when needed, after approval, the way Ansible's win_reboot does it, all in this file.

Needed when the JRE changed, the installer asked (3010), or Windows reports a pending reboot after
the install. Issued once per run: the host keeps a marker per token, so a crash and resume never
reboots twice. Then: wait for a new boot time (bounded, ``wait_for_reboot``), and re-check the service
and JAVA_HOME. The WinRM transport only runs commands; waiting for a host to come back is done here
(the install step uses it too, when the installer restarted the host itself: exit code 1641).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bot.core.config import Config
from bot.core.gates import REBOOT
from bot.systems.winrm import ExecutorError, HostUnreachable, WinRMExecutor
from steps.base import CheckResult, Step, StepContext, StepFailed, VerifyResult
from steps.common import read_host, read_script, version_tuple
from steps.facts import BootTime, HostFacts, InstallFacts, Java, RebootIssued
from steps.service import healthy

REBOOT_PROBE_MAX_SECONDS = 12.0  # the longest wait between two boot-time probes after a reboot


class RebootTimedOut(ExecutorError):
    def __init__(self, host: str, timeout: float, last: str):
        self.timeout = timeout
        super().__init__(host, f"did not come back from the reboot within {timeout:g} s (last: {last})")


async def read_boot_time(winrm: WinRMExecutor, host: str, deadline: float | None = None) -> datetime:
    result = await winrm.run(host, "boottime", deadline=deadline, retry_safe=True)
    return BootTime.from_script(host, "boottime", result.data).boot_time


async def wait_for_reboot(
    winrm: WinRMExecutor,
    config: Config,
    host: str,
    before_boot_time: datetime,
    timeout: float,
    *,
    max_delay: float | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> datetime:
    """Wait, bounded by ``timeout``, until the host answers with a boot time other than before.

    Like Ansible's win_reboot: a short probe per attempt, the boot time compared (a host that answers
    with the old boot time has not gone down yet), backoff with jitter, capped. The backoff starts at
    winrm.poll_seconds: a host that is back is noticed within one poll (benchmarked: a fixed 2 s first
    wait was most of a fast run's time).
    """
    stop_at = time.monotonic() + timeout
    base = config.winrm.poll_seconds
    # At most two polls (and never over 12 s) between probes: a host that is back is seen soon after.
    cap = max_delay if max_delay is not None else min(REBOOT_PROBE_MAX_SECONDS, 2 * base)
    probe = config.winrm.connect_timeout_seconds * 2
    attempt, last = 0, "no answer yet"
    while (remaining := stop_at - time.monotonic()) > 0:
        try:
            answer = await winrm.probe(host, "boottime", min(probe, remaining))
            booted = BootTime.from_script(host, "boottime", answer.data).boot_time
            if booted != before_boot_time:
                return booted
            last = "the host still reports the old boot time (not restarted yet)"
        except ExecutorError as exc:
            last = str(exc)
        attempt += 1
        delay = min(base * 2 ** (attempt - 1), cap) + random.uniform(0, min(base, 1.0))
        await sleep(min(delay, max(0.0, stop_at - time.monotonic())))
    raise RebootTimedOut(host, timeout, last)


async def wait_for_host(ctx: StepContext, before: datetime) -> datetime:
    """This run's host, back from a restart that began after boot time ``before``."""
    return await wait_for_reboot(ctx.winrm, ctx.config, ctx.host, before, ctx.config.reboot.timeout_seconds)


def reasons_for_reboot(install: InstallFacts | None, now: HostFacts) -> list[str]:
    reasons = []
    if install and install.jre_changed:
        after = install.java_after.version if install.java_after else "?"
        reasons.append(f"the JRE changed ({install.java_before.version} → {after})")
    if install and install.exit_code == 3010:
        reasons.append("the installer exited 3010 (reboot required)")
    if now.pending_reboot.any:
        reasons.append(f"Windows reports a pending reboot ({', '.join(now.pending_reboot.reasons)})")
    return reasons


class Reboot(Step):
    id = "reboot"
    title = "Reboot the server (if needed)"
    gate = REBOOT

    async def check(self, ctx: StepContext) -> CheckResult:
        preflight = HostFacts.stored(ctx.facts.get("preflight"))
        before = preflight.boot_time if preflight else None
        try:
            now = await read_host(ctx)
        except HostUnreachable:
            if not (ctx.resumed_after_apply and before):
                raise
            # The bot stopped after issuing the reboot: the server may be down now. Wait for it, bounded.
            ctx.note("resuming while the server reboots: waiting for it to come back")
            await wait_for_host(ctx, before)
            now = await read_host(ctx)
        facts: dict[str, Any] = {"host": now.dump()}
        if before and now.boot_time != before:
            return CheckResult(False, f"the server already restarted (boot time {now.dump()['boot_time']})", facts)
        reasons = reasons_for_reboot(InstallFacts.stored(ctx.facts.get("install")), now)
        if not reasons:
            return CheckResult(False, "no reboot needed: the JRE did not change and nothing is pending", facts)
        return CheckResult(True, "; ".join(reasons), {**facts, "reasons": reasons})

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        now = HostFacts.model_validate(check.facts["host"])
        return {
            "what_changes": f"restart {ctx.host} now; the connector is unavailable until it is back "
            f"(up to {ctx.config.reboot.timeout_seconds:g} s)",
            "why": check.facts["reasons"],
            "verified_so_far": {
                "connector_version": now.connector.version,
                "service": f"{now.service.state} ({now.service.start_mode})",
                "java_home": now.java.home,
            },
        }

    def when_denied(self, ctx: StepContext) -> str:
        return (
            f"The connector {ctx.config.installer.version} IS INSTALLED but {ctx.host} has NOT been rebooted: "
            "the reboot is still pending and the connector keeps the old JRE until then. "
            "Reboot the server in a maintenance window"
        )

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        config = ctx.config
        params = {
            "DelaySeconds": config.reboot.delay_seconds,
            "Reason": f"idm-upgrade {ctx.run.id}: connector upgrade to {config.installer.version} (approved)",
            "Token": ctx.run.id,
            "MarkerDirectory": config.installer.work_dir,
        }
        try:
            issued = await read_script(ctx, "reboot", RebootIssued, params, ends_connection=True)
        except HostUnreachable:
            # The connection dropping while shutdown runs means it worked (win_reboot counts it so).
            issued = RebootIssued(issued=True, connection_dropped=True)
        before = issued.boot_time or HostFacts.model_validate(ctx.facts["reboot"]["host"]).boot_time
        if issued.already_rebooted:
            return {"reboot": issued.dump()}
        ctx.note(
            "reboot "
            + ("already scheduled by this run; waiting" if issued.already_scheduled else "issued")
            + f"; waiting up to {config.reboot.timeout_seconds:g} s for the server to come back"
        )
        back = await wait_for_host(ctx, before)
        return {"reboot": issued.dump(), "boot_time_before": before.isoformat(), "boot_time_after": back.isoformat()}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        now = await read_host(ctx)
        facts: dict[str, Any] = {"after_reboot": now.dump()}
        if not healthy(now.service):
            raise StepFailed(
                f"after the reboot {ctx.config.connector.service} is {now.service.state} "
                f"({now.service.start_mode}); check connector.log on the host",
                facts,
            )
        install = InstallFacts.stored(ctx.facts.get("install"))
        preflight = HostFacts.stored(ctx.facts.get("preflight"))
        before = install.java_before if install else preflight.java if preflight else Java()
        if not now.java.version:
            raise StepFailed(f"after the reboot JAVA_HOME ({now.java.home}) does not point at a JRE", facts)
        if version_tuple(now.java.version) < version_tuple(before.version):
            raise StepFailed(
                f"after the reboot JAVA_HOME points at JRE {now.java.version}, older than the "
                f"{before.version} the connector used before the upgrade",
                facts,
            )
        changed = now.java.home != before.home
        facts["jre_changed_at_boot"] = changed
        return VerifyResult(
            True,
            f"back up; {ctx.config.connector.service} Running; JAVA_HOME {now.java.home} "
            f"(JRE {now.java.version}{', was ' + str(before.version) if changed else ', unchanged'})",
            facts,
        )
