"""Smaller Slack contracts: start-up refusals, health, user groups, message limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from bot.slack.app import web_client
from bot.slack.context import SlackGroups
from bot.slack.messages import SECTION_LIMIT, fit
from sandbox.slack import SlackStandIn
from sandbox.slack_state import APPROVER, GROUP, GROUP_MEMBER
from tests.support.configs import write_config

ROOT = Path(__file__).resolve().parents[2]


def test_serve_without_a_token_stops_with_one_line_naming_it(tmp_path):
    config = write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env |= {"WINRM_USERNAME": "u", "WINRM_PASSWORD": "p", "SLACK_SIGNING_SECRET": "s"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "idm-upgrade: SLACK_BOT_TOKEN is not set in the environment; the Slack app needs it (see README)"
    ]


async def test_healthz_reports_database_and_slack(slack_bot):
    h = await slack_bot("physical", ws1=False)
    async with aiohttp.ClientSession() as session, session.get(f"{h.bot.url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {
            "ok": True,
            "database": "ok",
            "slack": "ok",
            "threads": {"runs_not_projected": 0, "pending_messages": 0},
        }
    h.bot._slack_ok = (0.0, False)  # force a fresh check
    await h.slack.down()
    async with aiohttp.ClientSession() as session, session.get(f"{h.bot.url}/healthz") as response:
        assert response.status == 503 and (await response.json())["slack"] == "unreachable"
    await h.slack.up()


async def test_user_group_members_come_from_slack_and_are_cached():
    async with SlackStandIn() as slack:
        groups = SlackGroups(web_client("xoxb-sandbox", slack.api_url))
        members = await groups.members(GROUP)
        assert GROUP_MEMBER in members and APPROVER in members
        calls = len(slack.calls_to("usergroups.users.list"))
        assert await groups.members(GROUP) == members
        assert len(slack.calls_to("usergroups.users.list")) == calls  # served from the cache


def test_long_text_is_truncated_with_a_note():
    text = fit("x" * 10_000)
    assert len(text) == SECTION_LIMIT and "truncated" in text and "audit export" in text
    assert fit("short") == "short"


async def test_a_slack_user_group_member_may_approve(make_config):
    from bot.core.models import Run
    from bot.engine.approvals import ApprovalPolicy
    from tests.support.configs import OUTSIDER, REQUESTER

    config = make_config(approvers=[GROUP])
    async with SlackStandIn() as slack:
        policy = ApprovalPolicy(config.slack, SlackGroups(web_client("xoxb-sandbox", slack.api_url)))
        run = Run.model_construct(requester=REQUESTER)
        assert (await policy.may_decide(GROUP_MEMBER, run, "approve", "reboot")).allowed
        assert not (await policy.may_decide(OUTSIDER, run, "approve", "reboot")).allowed
