"""Slack as the audit trail's outside witness: a run's end is checkpointed, signed, posted in its thread, and
`audit verify --checkpoints slack` reads it back (the real bot over HTTP, the Slack stand-in, real hosts)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bot.core.signing import generate_key_file, parse_public_key
from bot.slack.witness import read_checkpoints
from bot.store import checkpoints
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from tests.support.audit_attacks import rewrite
from tests.support.configs import config_toml
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


async def verify_from_slack(tmp_path: Path, h, public_key: str) -> subprocess.CompletedProcess:
    """The auditor's command, with the bot's token, against the bot's database and channel (the stand-in
    runs on this event loop, so the command runs in a thread)."""
    config = tmp_path / "auditor.toml"
    config.write_text(config_toml(h.bot.config.database.path, extra=f'[audit]\npublic_key = "{public_key}"\n'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "IDM_UPGRADE_"))}
    env |= {"SLACK_BOT_TOKEN": "xoxb-sandbox", "SLACK_API_URL": h.slack.api_url, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bot", "audit", "verify", "--checkpoints", "slack", "--config", str(config)]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


async def test_a_run_posts_its_signed_checkpoint_and_slack_catches_a_rewrite(slack_bot, tmp_path, tmp_path_factory):
    key = tmp_path_factory.mktemp("etc") / "audit.key"  # not under the database's directory
    public = generate_key_file(key)
    h = await slack_bot("physical", ws1=False, extra=f'audit: signing_key_file = "{key}"')
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    await h.settle(run.id, approver=APPROVER)

    # the checkpoint of the run's end is in its thread, from the bot, signed, covering every event
    [card] = [m for m in h.slack.top_level(OPS_CHANNEL) if run.id in str(m.blocks) + m.text]
    posted = [m for m in h.slack.thread(OPS_CHANNEL, card.ts) if checkpoints.MARKER in m.text]
    assert len(posted) == 1 and posted[0].bot_id
    witnessed = checkpoints.from_message_text(posted[0].text)
    assert witnessed is not None and witnessed.run_id == run.id and witnessed.key == public
    assert witnessed.seq == h.store.audit_events()[-1].seq
    assert "Audit checkpoint" in str(posted[0].blocks)

    found, notes = await asyncio.to_thread(read_checkpoints, "xoxb-sandbox", OPS_CHANNEL, api_url=h.slack.api_url)
    assert witnessed in found and not notes
    ok = await verify_from_slack(tmp_path, h, public)
    assert ok.returncode == 0 and "hold" in ok.stdout, ok.stderr

    # someone pastes a checkpoint of their own into the channel: ignored, and said so
    forged = witnessed.model_copy(update={"count": 1})
    h.slack.post_as_user(REQUESTER, f"{checkpoints.MARKER} {forged.to_json()}")
    found, notes = await asyncio.to_thread(read_checkpoints, "xoxb-sandbox", OPS_CHANNEL, api_url=h.slack.api_url)
    assert forged not in found and any("not posted by the bot" in n for n in notes)

    # the database writer's attack: who approved is rewritten, every hash recomputed
    assert h.store.verify_audit().ok
    granted = [e.seq for e in h.store.audit_events(run.id) if e.event == "approval.granted"]
    rewrite(h.store.conn, ("UPDATE audit SET actor = 'U0MALLORY1' WHERE seq = ?", (granted[0],)))
    assert h.store.verify_audit().ok  # the chain alone cannot tell
    caught = await verify_from_slack(tmp_path, h, public)
    assert caught.returncode == 1 and "BROKEN: checkpoint" in caught.stderr and "recomputed" in caught.stderr
    assert checkpoints.check(h.store.conn, found, {public: parse_public_key(public)}).ok is False


async def test_a_checkpoint_message_edited_after_posting_is_not_trusted(slack_bot, tmp_path):
    h = await slack_bot("physical", ws1=False)  # no key: unsigned checkpoints, still posted
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    await h.settle(run.id, approver=APPROVER)
    [message] = [m for m in h.slack.messages(OPS_CHANNEL) if checkpoints.MARKER in m.text]
    assert "not signed" in message.text
    found, notes = await asyncio.to_thread(read_checkpoints, "xoxb-sandbox", OPS_CHANNEL, api_url=h.slack.api_url)
    assert len(found) == 1 and checkpoints.check(h.store.conn, found, None).ok
    h.slack.workspace.edit(message, message.text, message.blocks)
    found, notes = await asyncio.to_thread(read_checkpoints, "xoxb-sandbox", OPS_CHANNEL, api_url=h.slack.api_url)
    assert found == [] and any("edited after it was posted" in n for n in notes)
