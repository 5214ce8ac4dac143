"""How a run's end reads in Slack, from the rendered thread: a denial, a 1603 failure, nothing to do.

The operator reads the thread as Slack shows it (the stand-in's render), so the wording is tested there: no
raw JSON, Python flags, internal phase words or doubled parentheses in any message; deciders as mentions
(rendered as names); a denial is not a failure and advises a revert only when the host was changed; a
failure's log tail is shown once, in the step's reply.
"""

from __future__ import annotations

import pytest

from bot.core.gates import gate_named
from bot.core.models import ApprovalState, RunState
from sandbox.host import scenario
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.workspace_one import default_directories
from tests.support.waiting import eventually

# The audit checkpoint's marker line is a machine-readable contract (read back by `audit verify
# --checkpoints slack`): JSON by design, so it is left out of the wording rules.
CHECKPOINT_MARKER = "idm-upgrade-checkpoint"
RAW = ('{"', "{'", "False", "True", "during apply", "during check", "during verify", "((")


async def finish(h, run_id: str, deny: str | None = None) -> None:
    """Click every request as the approver (Deny for the gate named ``deny``) until the thread is sent."""
    clicked: set[str] = set()

    async def click_until_done() -> bool:
        if not h.store.get_run(run_id).state.active:
            return True
        for approval in h.store.approvals(run_id):
            if approval.state is not ApprovalState.open or approval.id in clicked:
                continue
            button = gate_named(approval.gate).button
            found = h.slack.latest_button(OPS_CHANNEL, button, value=approval.id)
            if found is None:
                continue
            action = "deny" if approval.gate == deny else button
            response = await h.sender.click_button(APPROVER, action, value=approval.id, message_ts=found[0].ts)
            assert response.status == 200
            clicked.add(approval.id)
        return False

    await eventually(click_until_done, timeout=120, what=f"the run {run_id} ended")
    assert await h.bot.progress.idle(timeout=60), "the outbox did not drain"


def rendered(h) -> str:
    """The channel as people read it, without the checkpoints' machine-readable marker lines."""
    lines = h.slack.render_channel(OPS_CHANNEL).splitlines()
    return "\n".join(line for line in lines if CHECKPOINT_MARKER not in line)


def assert_plain_words(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} in the thread:\n{text}"
    assert APPROVER not in text and REQUESTER not in text, "an account shown as a bare id, not a mention"


def card_result(h) -> str:
    [card] = [m for m in h.slack.top_level(OPS_CHANNEL) if m.thread_ts is None and "Connector upgrade" in m.text]
    return next(b["text"]["text"] for b in card.blocks if b.get("type") == "section" and "*Result:*" in str(b))


def final_message(h):
    [final] = [m for m in h.slack.messages(OPS_CHANNEL) if m.reply_broadcast]
    return final


async def start(h, host: str = "host01"):
    await h.sender.send_slash_command(REQUESTER, host)
    [run] = await eventually(h.runs, what="the slash command created a run")
    return run


async def test_the_default_thread_reads_in_words(slack_bot):
    h = await slack_bot("default")
    run = await start(h)
    await finish(h, run.id)
    assert h.store.get_run(run.id).state is RunState.succeeded
    text = rendered(h)
    print(text)
    assert_plain_words(text)
    # the install read JAVA_HOME before the reboot; the reboot says the JRE switched then, not "changed" twice
    assert "JAVA_HOME unchanged so far" in text and "the JRE switched at this boot" in text
    assert "jre changed" not in text.lower()


@pytest.mark.parametrize("gate", ["STARTTLS", "install"])
async def test_a_denial_ends_denied_and_says_nothing_needs_a_revert(slack_bot, gate):
    h = await slack_bot("default")
    run = await start(h)
    await finish(h, run.id, deny=gate)
    assert h.store.get_run(run.id).state is RunState.denied
    text = rendered(h)
    print(text)
    assert_plain_words(text)
    assert "FAILED" not in text and "❌" not in text  # a person's refusal is not a failure
    card = card_result(h)
    assert "*State:* ⛔ denied" in str(h.slack.top_level(OPS_CHANNEL)[0].blocks)
    assert f"approval denied by <@{APPROVER}>" in card  # a mention, shown as the approver's name
    assert "*Not changed:*" in card and "the server (not rebooted)" in card
    # the install request showed the version it would replace; a step never reached only says it did not run
    connector = "still 19.03.0.0; the installer did not run" if gate == "install" else "the installer did not run"
    assert f"the connector ({connector})" in card
    assert "Nothing on the host needs a revert" in card and "revert the VM" not in text
    if gate == "install":  # STARTTLS was turned off before: the tenant's state is said in the card and channel
        assert "STARTTLS turned off tenant-wide on corp.example.com" in card
        assert "STARTTLS turned off tenant-wide" in final_message(h).blocks[0]["text"]["text"]
    else:
        assert "STARTTLS (still on for corp.example.com)" in card
    # history shows the run denied, its decider as a mention
    await h.reply(await h.sender.send_slash_command(REQUESTER, "history host01"))
    history = "\n".join(h.ephemeral_texts(REQUESTER))
    assert f"{run.id}` host01: denied — {gate} approval denied by <@{APPROVER}>" in history


async def test_a_1603_failure_gives_one_line_of_cause_and_the_log_once(slack_bot):
    h = await slack_bot("install-fails-1603")
    run = await start(h)
    await finish(h, run.id)
    assert h.store.get_run(run.id).state is RunState.failed
    text = rendered(h)
    print(text)
    assert_plain_words(text)
    last_log_line = "MainEngineThread is returning 1603"
    assert text.count(last_log_line) == 1  # only in the install step's reply
    [reply] = [m for m in h.slack.messages(OPS_CHANNEL) if last_log_line in str(m.blocks)]
    assert "```" in str(reply.blocks) and "Run the connector installer" in reply.text
    cause = card_result(h).split("\n")[0]
    assert "exit code 1603" in cause and len(cause) < 400
    assert "STARTTLS turned off tenant-wide on corp.example.com" in card_result(h)
    broadcast = final_message(h).blocks[0]["text"]["text"]
    assert "exit code 1603" in broadcast and "STARTTLS turned off tenant-wide" in broadcast
    assert len(broadcast) < 1000 and last_log_line not in broadcast


async def test_already_current_succeeds_with_one_reply_for_the_skipped_steps(slack_bot):
    state = scenario("already-current")
    assert not state.directory_starttls  # an upgraded host's tenant: the upgrade turned STARTTLS off
    directories = default_directories(iwa_starttls=state.directory_starttls)
    h = await slack_bot("already-current", ws1_directories=directories)
    run = await start(h)
    await finish(h, run.id)
    run = h.store.get_run(run.id)
    assert run.state is RunState.succeeded, run.result
    assert run.result.startswith("nothing to do: the connector is already at 19.03.0.1")
    text = rendered(h)
    print(text)
    assert_plain_words(text)
    skipped = [m for m in h.slack.messages(OPS_CHANNEL) if m.is_reply and ": skipped" in m.text]
    assert len(skipped) == 1
    for title in ("Snapshot the virtual machine", "Run the connector installer", "Reboot the server if needed"):
        assert title in skipped[0].text
