"""The App Home (issue 20, part 3): signed events and clicks into the bot, views.publish/open/update and
chat.getPermalink on the Slack stand-in, runs against the simulated hosts."""

from __future__ import annotations

import json

from bot.core.models import RunState
from sandbox.slack_state import APPROVER, OUTSIDER, REQUESTER
from sandbox.slack_views import (
    click_home,
    home_click_payload,
    home_of,
    home_opened_event,
    modals_of,
    open_home,
    open_home_socket,
    submit_modal,
)
from tests.support.waiting import eventually

GROUPS = """
[groups.prod]
hosts = ["host02"]
"""


def home_text(h, user: str) -> str:
    view = home_of(h.slack, user)
    return "" if view is None else str(view.view.get("blocks"))


def publishes(h, user: str) -> int:
    return len([c for c in h.slack.calls_to("views.publish", ok=True) if c.params.get("user_id") == user])


async def checked(h, host: str = "host01") -> str:
    """A finished dry run of `host`, its thread delivered."""
    await h.sender.send_slash_command(REQUESTER, f"check {host}")
    run = await eventually(lambda: [r for r in h.runs() if r.host == host and not r.state.active], what="the check")
    assert run[0].state is RunState.succeeded, run[0].result
    assert await h.bot.progress.idle(60)
    return run[0].id


async def test_home_lists_every_host_by_group_with_version_state_and_thread(slack_bot):
    h = await slack_bot("default", hosts=2, tables=GROUPS, extra="slack: home_refresh_seconds = 0.05")
    run_id = await checked(h)
    assert (await open_home(h.sender, REQUESTER)).status == 200
    await eventually(lambda: run_id in home_text(h, REQUESTER) and "thread" in home_text(h, REQUESTER))
    text = home_text(h, REQUESTER)
    assert "*host01*" in text and "*host02*" in text and "Group prod" in text and "Hosts in no group" in text
    assert "connector 19.03.0.0 (seen by preflight" in text and "succeeded (check only)" in text
    assert "connector version not seen yet" in text  # host02 never ran
    assert "/archives/" in text  # the card's permalink
    assert text.count("home_check") == 2 and text.count("home_upgrade") == 2
    # the permalink is asked once per run, not at every publish
    before = publishes(h, REQUESTER)
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: publishes(h, REQUESTER) > before)
    assert len(h.slack.calls_to("chat.getPermalink", ok=True)) == 1


async def test_home_over_socket_mode(slack_bot):
    h = await slack_bot("default", socket_mode=True)
    await open_home_socket(h.slack, REQUESTER)
    await eventually(lambda: "*host01*" in home_text(h, REQUESTER), what="the Home over Socket Mode")


async def test_home_opened_in_another_workspace_is_refused(slack_bot):
    # signed, but from another workspace: nothing is published to it
    http = await slack_bot("default")
    foreign = {**home_opened_event(APPROVER), "team_id": "T0OTHERTEAM"}
    assert (await open_home(http.sender, APPROVER, body=foreign)).status == 200
    await open_home(http.sender, REQUESTER)
    await eventually(lambda: home_of(http.slack, REQUESTER), what="the Home of the bot's own workspace")
    assert home_of(http.slack, APPROVER) is None


async def test_check_button_starts_a_dry_run_and_a_strangers_click_is_refused(slack_bot):
    h = await slack_bot("default")
    await open_home(h.sender, OUTSIDER)
    await eventually(lambda: home_of(h.slack, OUTSIDER))
    assert (await click_home(h.sender, OUTSIDER, "home_check", "host01")).status == 200
    await eventually(lambda: "Not started" in home_text(h, OUTSIDER), what="the refusal atop the Home")
    assert h.runs() == []
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: home_of(h.slack, REQUESTER))
    await click_home(h.sender, REQUESTER, "home_check", "host01")
    [run] = await eventually(h.runs, what="the check run")
    assert run.check_only and run.requester == REQUESTER and run.host == "host01"
    await eventually(lambda: "queued" in home_text(h, REQUESTER) and run.id in home_text(h, REQUESTER))


async def test_upgrade_opens_the_plan_and_its_submission_starts_the_run_for_requesters_only(slack_bot):
    h = await slack_bot("default")
    for user in (OUTSIDER, REQUESTER):
        await open_home(h.sender, user)
        await eventually(lambda u=user: home_of(h.slack, u))
    # a person who may not start upgrades clicks Upgrade: refused, no modal
    await click_home(h.sender, OUTSIDER, "home_upgrade", "host01")
    await eventually(lambda: "Not started" in home_text(h, OUTSIDER), what="the refusal atop the Home")
    assert modals_of(h.slack, OUTSIDER) == []
    # no dry run yet: the modal says so and lists the steps and who each gate asks
    await click_home(h.sender, REQUESTER, "home_upgrade", "host01")
    [modal] = await eventually(lambda: modals_of(h.slack, REQUESTER), what="the confirmation modal")
    shown = str(modal.view["blocks"])
    assert "No dry run of host01 yet" in shown and f"<@{APPROVER}>" in shown and "reboot" in shown
    assert modal.view["callback_id"] == "home_upgrade_confirm" and modal.view["private_metadata"] == "host01"
    # submitted by a person who may not start upgrades (a captured modal): refused at submission, nothing created
    await open_home(h.sender, OUTSIDER)  # a fresh Home: the earlier answer is gone
    await eventually(lambda: "Not started" not in home_text(h, OUTSIDER))
    result, errors = await submit_modal(h.sender, OUTSIDER, modal.id)
    assert result.status == 200 and errors == {} and modals_of(h.slack, REQUESTER) == []  # the ack closed it
    await eventually(lambda: "Not started" in home_text(h, OUTSIDER), what="the refusal atop the Home")
    assert h.runs() == []
    # after a dry run, the modal shows its plan and its age; the requester's submission starts the upgrade
    check_id = await checked(h)
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: check_id in home_text(h, REQUESTER) and "home_upgrade" in home_text(h, REQUESTER))
    await click_home(h.sender, REQUESTER, "home_upgrade", "host01")
    [modal] = await eventually(lambda: modals_of(h.slack, REQUESTER), what="the requester's modal")
    shown = str(modal.view["blocks"])
    assert "The plan from the last dry run" in shown and check_id in shown and " UTC, " in shown
    await submit_modal(h.sender, REQUESTER, modal.id)
    upgrade = await eventually(lambda: [r for r in h.runs() if not r.check_only], what="the upgrade run")
    assert upgrade[0].requester == REQUESTER and upgrade[0].host == "host01"
    await eventually(lambda: "Upgrade queued" in home_text(h, REQUESTER) and upgrade[0].id in home_text(h, REQUESTER))
    await h.bot.engine.cancel(upgrade[0].id, REQUESTER)


async def test_a_forged_host_in_the_modal_is_refused(slack_bot):
    h = await slack_bot("default")
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: home_of(h.slack, REQUESTER))
    await click_home(h.sender, REQUESTER, "home_upgrade", "host01")
    [modal] = await eventually(lambda: modals_of(h.slack, REQUESTER))
    modal.view["private_metadata"] = "<!channel>"  # a client that changed the view's metadata
    await submit_modal(h.sender, REQUESTER, modal.id)
    await eventually(lambda: "is not a configured host" in home_text(h, REQUESTER))
    assert "&lt;!channel&gt;" in home_text(h, REQUESTER) and h.runs() == []


async def test_runs_changing_state_republish_the_home_debounced(slack_bot):
    h = await slack_bot("default", extra="slack: home_refresh_seconds = 3600")
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: home_of(h.slack, REQUESTER))
    assert publishes(h, REQUESTER) == 1
    events_before = len(h.store.audit_events())
    await checked(h)
    await h.bot.engine.progress.drain()
    # the run's many changes: one republish at the first, the rest wait for the pause (an hour here)
    assert len(h.store.audit_events()) - events_before > 4
    assert publishes(h, REQUESTER) == 2


async def test_home_follows_a_run_to_its_end(slack_bot):
    h = await slack_bot("default", extra="slack: home_refresh_seconds = 0.05")
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: home_of(h.slack, REQUESTER))
    run_id = await checked(h)
    await eventually(lambda: run_id in home_text(h, REQUESTER) and "succeeded" in home_text(h, REQUESTER))


async def test_a_hostile_version_string_is_escaped(slack_bot):
    h = await slack_bot("default", extra="slack: home_refresh_seconds = 0.05")
    h.host.state.connector.version = "19.03.0.0 <!channel> <https://evil.example|click>"
    await h.sender.send_slash_command(REQUESTER, "check host01")
    await eventually(lambda: h.runs() and not h.runs()[0].state.active, what="the check ended")
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: "seen by preflight" in home_text(h, REQUESTER))
    text = home_text(h, REQUESTER)
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text and "<https://evil" not in text


async def test_many_hosts_are_paged_within_slacks_block_limit(slack_bot):
    h = await slack_bot("default", hosts=50)
    await open_home(h.sender, REQUESTER)
    view = await eventually(lambda: home_of(h.slack, REQUESTER))
    blocks = view.view["blocks"]
    assert len(blocks) <= 100 and "Page 1 of 2" in str(blocks)
    await click_home(h.sender, REQUESTER, "home_page_next", "1")
    await eventually(lambda: "Page 2 of 2" in home_text(h, REQUESTER))
    assert "*host50*" in home_text(h, REQUESTER)


async def test_a_submission_without_a_view_is_refused_at_the_door(slack_bot):
    h = await slack_bot("default")
    bad = {"type": "view_submission", "user": {"id": REQUESTER}, "api_app_id": "A0SANDBOX1", "trigger_id": "1.2.3"}
    result = await h.sender.replay(h.sender.build({"payload": json.dumps(bad)}))
    assert result.status == 400 and h.runs() == []


async def test_a_replayed_home_click_acts_once_and_another_apps_click_is_refused(slack_bot):
    h = await slack_bot("default")
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: home_of(h.slack, REQUESTER))
    payload = home_click_payload(h.slack, REQUESTER, "home_check", "host01")
    foreign = {**payload, "api_app_id": "A0OTHERAPP", "trigger_id": payload["trigger_id"] + "x"}
    assert (await h.sender.replay(h.sender.build({"payload": json.dumps(foreign)}))).status == 200
    await eventually(lambda: "another Slack app" in home_text(h, REQUESTER), what="the refusal atop the Home")
    assert h.runs() == []
    first = await h.sender.replay(h.sender.build({"payload": json.dumps(payload)}))
    [run] = await eventually(h.runs, what="the check run")
    copy = await h.sender.replay(first.request)  # the same bytes again: Slack's retry or a captured copy
    assert copy.status == 200 and copy.body == ""
    assert [r.id for r in h.runs()] == [run.id]
    assert any(e.event == "request.refused" for e in h.store.audit_events())


async def test_a_required_ticket_is_asked_in_the_modal_and_checked_at_submission(slack_bot):
    h = await slack_bot("default", tables='[change]\nticket = "required"\n')
    await open_home(h.sender, REQUESTER)
    await eventually(lambda: home_of(h.slack, REQUESTER))
    await click_home(h.sender, REQUESTER, "home_upgrade", "host01")
    [modal] = await eventually(lambda: modals_of(h.slack, REQUESTER))
    assert "Change ticket (required)" in str(modal.view["blocks"])
    await submit_modal(h.sender, REQUESTER, modal.id)
    await eventually(lambda: "Not started" in home_text(h, REQUESTER) and "ticket" in home_text(h, REQUESTER))
    assert h.runs() == []
    await click_home(h.sender, REQUESTER, "home_upgrade", "host01")
    [modal] = await eventually(lambda: modals_of(h.slack, REQUESTER))
    await submit_modal(h.sender, REQUESTER, modal.id, {"ticket": {"ticket": "CHG0001234"}})
    [run] = await eventually(h.runs, what="the upgrade with its ticket")
    assert run.ticket == "CHG0001234" and not run.check_only
    await h.bot.engine.cancel(run.id, REQUESTER)
