"""reboot: only when needed, after approval, the way Ansible's win_reboot does it, all in this file.

Needed when the JRE changed, the installer asked (3010), or Windows reports a pending reboot after
the install. Issued once per run: the host keeps a marker per token, so a crash and resume never
reboots twice. Then: wait for a new boot time (bounded, ``wait_for_reboot``), wait for the service
to be Running (a real server answers WinRM while it is still Start Pending), and re-check JAVA_HOME.
The WinRM transport only runs commands; waiting for a host to come back is done here (the install
step uses it too, when the installer restarted the host itself: exit code 1641).

A boot time that differs is not yet a reboot: VM time sync steps the clock (after a snapshot, a
vMotion), and LastBootUpTime, being "now minus uptime", moves with it. A reboot counts when the new
boot time is later than the moment it was requested, on the host's clock (reboot.ps1's marker).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from bot.core.config import Config
from bot.core.gates import REBOOT
from bot.core.models import StepRecord, StepState
from bot.systems.winrm import ExecutorError, HostUnreachable, WinRMExecutor
from steps.base import CheckResult, PlannedStep, Step, StepContext, StepFailed, VerifyResult
from steps.common import read_host, read_script, version_tuple
from steps.facts import BootTime, HostFacts, InstallFacts, Java, RebootIssued
from steps.service import wait_for_running

REBOOT_PROBE_MAX_SECONDS = 12.0  # the longest wait between two boot-time probes after a reboot
# A new boot time counts as the reboot only when it is later than the request minus this margin. LastBootUpTime
# moves with every clock step (VM time sync), so "it differs" is not enough; no real reboot, with shutdown
# /t >= 2 and a restart taking tens of seconds, boots anywhere near the request. The margin absorbs the
# whole seconds both times are written in and a guest clock read from the hardware clock at boot, which can
# trail the clock the request was stamped with by a second or two before time sync corrects it.
REBOOT_CLOCK_MARGIN_SECONDS = 5


class RebootTimedOut(ExecutorError):
    def __init__(self, host: str, timeout: float, last: str):
        self.timeout = timeout
        super().__init__(host, f"did not come back from the reboot within {timeout:g} s (last: {last})")


async def read_boot_time(winrm: WinRMExecutor, host: str, deadline: float | None = None) -> datetime:
    result = await winrm.run(host, "boottime", deadline=deadline, retry_safe=True)
    return BootTime.from_script(host, "boottime", result.data).boot_time


def rebooted_since(boot_time: datetime, before_boot_time: datetime, requested_at: datetime | None) -> bool:
    """Whether ``boot_time`` is a boot after the reboot asked at ``requested_at`` (host clock).

    Without a request time (an older marker, a connection lost before the answer) only "it differs from
    the boot time before" is left, which a clock step fools.
    """
    if requested_at is None:
        return boot_time != before_boot_time
    return boot_time > requested_at - timedelta(seconds=REBOOT_CLOCK_MARGIN_SECONDS)


async def wait_for_reboot(
    winrm: WinRMExecutor,
    config: Config,
    host: str,
    before_boot_time: datetime,
    timeout: float,
    *,
    requested_at: datetime | None = None,
    max_delay: float | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> datetime:
    """Wait, bounded by ``timeout``, until the host answers with the boot time of a new boot.

    Like Ansible's win_reboot: a short probe per attempt, the boot time compared (a host that answers
    with the old boot time has not gone down yet), backoff with jitter, capped. A new boot is one later
    than ``requested_at`` (see ``rebooted_since``); a boot time that only moved is a clock step. The
    backoff starts at winrm.poll_seconds: a host that is back is noticed within one poll (benchmarked: a
    fixed 2 s first wait was most of a fast run's time).
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
            if rebooted_since(booted, before_boot_time, requested_at):
                return booted
            last = "the host still reports the old boot time (not restarted yet)"
            if booted != before_boot_time:
                last = (
                    f"the boot time moved ({before_boot_time:%Y-%m-%d %H:%M:%S} -> {booted:%Y-%m-%d %H:%M:%S} UTC) "
                    "but not past the reboot request: a clock step, not a restart"
                )
        except ExecutorError as exc:
            last = str(exc)
        attempt += 1
        delay = min(base * 2 ** (attempt - 1), cap) + random.uniform(0, min(base, 1.0))
        await sleep(min(delay, max(0.0, stop_at - time.monotonic())))
    raise RebootTimedOut(host, timeout, last)


async def wait_for_host(ctx: StepContext, before: datetime, requested_at: datetime | None = None) -> datetime:
    """This run's host, back from a restart asked at ``requested_at`` (host clock) from boot time ``before``."""
    timeout = ctx.config.reboot.timeout_seconds
    return await wait_for_reboot(ctx.winrm, ctx.config, ctx.host, before, timeout, requested_at=requested_at)


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
    title = "Reboot the server if needed"
    gate = REBOOT
    changes_host = True

    async def check(self, ctx: StepContext) -> CheckResult:
        preflight = HostFacts.stored(ctx.facts.get("preflight"))
        before = preflight.boot_time if preflight else None
        try:
            now = await read_host(ctx)
        except HostUnreachable:
            if not (ctx.resumed_after_apply and before):
                raise
            # The bot stopped after issuing the reboot: the server may be down now. Wait for it, bounded;
            # apply, run again, tells from the host's marker whether this boot is the reboot it asked for.
            ctx.note("resuming while the server reboots: waiting for it to come back")
            await wait_for_host(ctx, before)
            now = await read_host(ctx)
        facts: dict[str, Any] = {"host": now.dump()}
        install = InstallFacts.stored(ctx.facts.get("install"))
        if install and install.rebooted_by_installer:
            return CheckResult(False, "the installer already restarted the server (exit code 1641)", facts)
        if before and now.boot_time != before and not ctx.resumed_after_apply:
            # Nothing of this run restarted the server: a boot time that moved is a clock step (or someone
            # else's restart, which left nothing pending, so the reasons below come out empty).
            ctx.note(
                f"the boot time moved since preflight ({before:%Y-%m-%d %H:%M:%S} -> "
                f"{now.boot_time:%Y-%m-%d %H:%M:%S} UTC) without a reboot from this run; not counted as one"
            )
        reasons = reasons_for_reboot(install, now)
        if not reasons:
            return CheckResult(False, "no reboot needed: the JRE did not change and nothing is pending", facts)
        return CheckResult(True, "; ".join(reasons), {**facts, "reasons": reasons})

    async def plan(self, ctx: StepContext) -> PlannedStep:
        # Before the install only Windows' own pending reboot is known; the install may add a reason.
        now = await read_host(ctx)
        later = "a reboot is also needed if the installer changes the JRE or exits 3010"
        reasons = reasons_for_reboot(None, now)
        if reasons:
            return PlannedStep(True, f"expected: {'; '.join(reasons)} ({later})", [f"{ctx.host} restarts"], REBOOT.name)
        return PlannedStep(False, f"not expected now: nothing is pending on {ctx.host}; {later}", [], REBOOT.name)

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        now = HostFacts.model_validate(check.facts["host"])
        return {
            "what_changes": f"restart {ctx.host} now; the connector is unavailable until it is back "
            f"(up to {ctx.config.reboot.timeout_seconds:g} s)",
            "why": check.facts["reasons"],
            # in words, as every front end shows it (Slack, the terminal's prompt)
            "verified_so_far": f"connector version {now.connector.version}; service {now.service.state} "
            f"({now.service.start_mode}); JAVA_HOME {now.java.home}",
        }

    def change(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        return {"host": ctx.host, "restart": True, "reasons": check.facts["reasons"]}

    def changed(self, record: StepRecord) -> str | None:
        return "the server rebooted" if record.applied else None

    def unchanged(self, record: StepRecord) -> str | None:
        if record.applied or record.state in (StepState.succeeded, StepState.skipped, StepState.unavailable):
            return None
        return "the server (not rebooted)"

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
            "MarginSeconds": REBOOT_CLOCK_MARGIN_SECONDS,
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
        back = await wait_for_host(ctx, before, issued.requested_at)
        return {"reboot": issued.dump(), "boot_time_before": before.isoformat(), "boot_time_after": back.isoformat()}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        # WinRM answers before the services run: wait (bounded) while the connector is Stopped/Start Pending.
        waited = await wait_for_running(ctx, "the reboot", start=False)
        now = await read_host(ctx)
        facts: dict[str, Any] = {"after_reboot": now.dump(), "service_after_reboot": waited.dump()}
        if now.service.start_mode != "Auto":
            raise StepFailed(
                f"after the reboot {ctx.config.connector.service} is {now.service.state} with start mode "
                f"{now.service.start_mode}; expected Automatic (Set-Service -StartupType Automatic)",
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
        # The install step saw JAVA_HOME before this boot; a JRE the installer put in place takes over here.
        jre = (
            f"the JRE switched at this boot: {before.version} → {now.java.version}"
            if changed
            else f"JRE {now.java.version}, unchanged"
        )
        return VerifyResult(
            True,
            f"back up; {ctx.config.connector.service} Running; JAVA_HOME {now.java.home} ({jre})",
            facts,
        )
