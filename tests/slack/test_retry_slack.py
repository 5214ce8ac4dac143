"""Retry in Slack, with signed requests into the bot and the stand-in as Slack: a run that failed at the
installer (exit 1603) shows **Retry** on its card; a stranger's click is refused; the requester's click, once
the fault is fixed, resumes the same run from its failed step, its thread says who retried it and why, and the
card shows the attempt. `/idm-upgrade retry RUN why…` does the same from the slash command."""

from __future__ import annotations

from bot.core.models import RunState
from sandbox.slack_state import APPROVER, OPS_CHANNEL, OUTSIDER, REQUESTER
from tests.support.waiting import eventually


async def failed_run(h):
    await h.sender.send_slash_command(REQUESTER, "host01")
    [run] = await eventually(h.runs, what="the slash command created a run")
    await h.settle(run.id, approver=APPROVER)
    assert h.store.get_run(run.id).state is RunState.failed
    return run


def card_text(h, run_id: str) -> str:
    [card] = [m for m in h.slack.top_level(OPS_CHANNEL) if run_id in str(m.blocks) and "Connector upgrade" in m.text]
    return str(card.blocks)


async def test_the_requester_clicks_retry_on_a_failed_run_and_it_resumes_from_its_failed_step(slack_bot):
    h = await slack_bot("install-fails-1603")
    run = await failed_run(h)
    found = await eventually(
        lambda: h.slack.latest_button(OPS_CHANNEL, "retry_run", value=run.id), what="the card's Retry button"
    )
    card, _button = found

    stranger = await h.sender.click_button(OUTSIDER, "retry_run", value=run.id, message_ts=card.ts)
    assert stranger.status == 200
    answer = await h.reply(stranger)
    assert answer.get("response_type") == "ephemeral"
    assert "Not accepted" in answer["text"] and "approver" in answer["text"]
    assert h.store.get_run(run.id).state is RunState.failed and h.store.get_run(run.id).attempt == 1

    h.host.state.installer.exit_code = 0  # the cause on the host is fixed
    click = await h.sender.click_button(REQUESTER, "retry_run", value=run.id, message_ts=card.ts)
    assert click.status == 200
    answer = await h.reply(click)
    assert answer.get("response_type") == "ephemeral" and "Retrying run" in answer["text"], answer
    await h.settle(run.id, approver=APPROVER)

    done = h.store.get_run(run.id)
    assert done.state is RunState.succeeded and done.attempt == 2, done.result
    [retried] = [e for e in h.store.audit_events(run.id) if e.event == "run.retried"]
    assert retried.actor == REQUESTER and retried.detail["why"] == "Retry button on the run card"
    channel = h.slack.render_channel(OPS_CHANNEL)
    assert "🔁 retried by" in channel and "(attempt 2): Retry button on the run card" in channel, channel
    assert "after a restart" not in channel  # the retried step's new start is not told as a restart
    assert "(attempt 2)" in card_text(h, run.id)  # the card, updated in place
    assert h.slack.latest_button(OPS_CHANNEL, "retry_run", value=run.id) is None  # succeeded: nothing to retry


async def test_slash_command_retry_with_a_why_and_its_refusals(slack_bot):
    h = await slack_bot("install-fails-1603")
    run = await failed_run(h)

    unknown = await h.sender.send_slash_command(REQUESTER, "retry run-00000000")
    assert "There is no run" in (await h.reply(unknown))["text"]
    stranger = await h.sender.send_slash_command(OUTSIDER, f"retry {run.id} because")
    assert "Not accepted" in (await h.reply(stranger))["text"]
    bad = await h.sender.send_slash_command(REQUESTER, "retry host01")
    assert "is not a run id" in (await h.reply(bad))["text"]
    assert h.store.get_run(run.id).attempt == 1
    assert not [e for e in h.store.audit_events(run.id) if e.event == "run.retried"]

    h.host.state.installer.exit_code = 0
    ok = await h.sender.send_slash_command(REQUESTER, f"retry {run.id} the <!channel> MSI log was read")
    assert "Retrying run" in (await h.reply(ok))["text"]
    await h.settle(run.id, approver=APPROVER)
    assert h.store.get_run(run.id).state is RunState.succeeded
    status = await h.sender.send_slash_command(REQUESTER, f"status {run.id}")
    assert "(attempt 2)" in (await h.reply(status))["text"]
    history = await h.sender.send_slash_command(REQUESTER, "history host01")
    assert "succeeded (attempt 2)" in (await h.reply(history))["text"]
    [retried] = [e for e in h.store.audit_events(run.id) if e.event == "run.retried"]
    assert retried.detail["why"] == "the <!channel> MSI log was read"
    channel = h.slack.render_channel(OPS_CHANNEL)
    assert "<!channel>" in channel or "&lt;!channel&gt;" in channel  # shown as written, never a ping
    assert not any(m.text and "@channel" in m.text for m in h.slack.messages(OPS_CHANNEL))
