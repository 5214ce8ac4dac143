"""`/idm-upgrade check HOST`: the plan of every step, in one message in the run's thread; nothing changed."""

from __future__ import annotations

import copy

from bot.core.models import RunState
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from tests.support.waiting import eventually


def host_snapshot(host) -> dict:
    """What an upgrade would change on the simulated host: files, services, versions, processes, reboots."""
    state = host.state
    return copy.deepcopy(
        {
            "files": sorted(state.files),
            "text_files": sorted(state.text_files),
            "service": state.service,
            "connector": state.connector,
            "java_home": state.java_home,
            "processes": state.processes,
            "downloads": state.downloads,
            "installs_started": state.installs_started,
            "reboots_requested": state.reboots_requested,
            "shutdown_calls": state.shutdown_calls,
            "service_starts": state.service_starts,
            "boot_time": state.boot_time,
        }
    )


async def test_check_shows_the_plan_and_changes_nothing(slack_bot):
    h = await slack_bot("default")
    before = host_snapshot(h.host)
    directories = copy.deepcopy(h.ws1.directories)
    response = await h.sender.send_slash_command(REQUESTER, "check host01")
    assert response.status == 200
    [run] = await eventually(h.runs, what="the check run")
    await h.settle(run.id, approver=APPROVER)
    run = h.store.get_run(run.id)
    assert run.check_only and run.state is RunState.succeeded, run.result
    assert run.result.startswith("dry run: ") and "nothing was changed" in run.result
    # nothing changed: the host, the tenant (no PUT/POST/PATCH/DELETE), no approval asked
    assert host_snapshot(h.host) == before
    assert h.ws1.update_requests == [] and h.ws1.updates == []
    assert h.ws1.directories == directories
    assert h.store.approvals(run.id) == []
    # the plan, one message in the run's thread, before the run's end
    [card] = [m for m in h.slack.top_level(OPS_CHANNEL) if run.id in m.text and m.thread_ts is None]
    thread = h.slack.thread(OPS_CHANNEL, card.ts)[1:]
    [plan] = [m for m in thread if m.text.startswith("Dry run of host01")]
    assert thread.index(plan) < next(i for i, m in enumerate(thread) if m.reply_broadcast)
    text = "\n".join(b["text"]["text"] for b in plan.blocks if b["type"] == "section")
    lines = text.splitlines()

    def line_of(title: str) -> str:
        return next(line for line in lines if f"*{title}*" in line)

    assert "Nothing was changed" in lines[0]
    assert line_of("Preflight checks").startswith("✅ ran (read only)")
    assert line_of("Snapshot the virtual machine").startswith("▶️ would run")
    starttls = line_of("Turn STARTTLS off on AD-over-IWA directories")
    assert starttls.startswith("▶️ would run") and "tenant-wide" in starttls
    # which directories would change, and how
    assert any("corp.example.com" in line and "useStartTls true → false" in line for line in lines), text
    assert "would run" in line_of("Download the installer on the host")
    assert "upgrade 19.03.0.0 → 19.03.0.1" in line_of("Run the connector installer")
    assert any("~ connector 19.03.0.0 → 19.03.0.1" in line for line in lines)
    reboot = line_of("Reboot the server if needed")
    assert reboot.startswith("⏭️ skip") and "not expected now" in reboot and "JRE" in reboot
    # which approvals, of whom
    asks = text.split("*An upgrade would ask:*", 1)[1]
    for gate in ("snapshot confirmation", "STARTTLS approval", "install approval", "reboot approval"):
        assert gate in asks, asks
    assert f"<@{APPROVER}>" in asks and "(if that step runs)" in asks
    assert "may not approve their own run" in asks
    print(h.slack.render_channel(OPS_CHANNEL))
