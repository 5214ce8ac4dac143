"""Smaller Slack contracts: start-up refusals, health, user groups, message limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.engine.approvals import IdentityUnknown
from bot.slack.app import web_client
from bot.slack.context import SlackGroups, SlackIdentities
from bot.slack.messages import SECTION_LIMIT, fit
from sandbox.slack import SlackStandIn
from sandbox.slack_state import (
    APPROVER,
    APPROVER2,
    APPROVER_ALT,
    GROUP,
    GROUP_MEMBER,
    REQUESTER,
    REQUESTER_ADMIN,
)
from tests.support.configs import config_toml, write_config

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
        "idm-upgrade: SLACK_BOT_TOKEN is not set in the environment (see README, Secrets)"
    ]


def test_serve_names_every_missing_variable_and_empty_approvers_in_one_line(tmp_path):
    config = tmp_path / "idm-upgrade.toml"
    config.write_text(
        config_toml(
            tmp_path / "bot.db", hosts=1, approvers=[], extra='[workspace_one]\nurl = "https://ws1.example.com"'
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "WINRM_", "WS1_", "VCENTER_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--socket-mode", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env | {"WINRM_USERNAME": "u", "WS1_CLIENT_ID": "id"},
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "idm-upgrade: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN, WINRM_PASSWORD, WS1_CLIENT_SECRET are "
        "not set in the environment (see README, Secrets); slack.approvers is empty, so no gated step (STARTTLS, "
        "install, reboot) could be approved"
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
    h.bot._health_at = float("-inf")  # past the answer's 1 s cache
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
        run = Run.model_construct(requester=REQUESTER, host="host01")  # the policy reads its host group
        assert (await policy.may_decide(GROUP_MEMBER, run, "approve", "reboot")).allowed
        assert not (await policy.may_decide(OUTSIDER, run, "approve", "reboot")).allowed


async def test_the_person_behind_an_account_comes_from_users_info_and_is_cached():
    """Enterprise Grid user id first, else the profile email (case does not matter), else the account."""
    async with SlackStandIn() as slack:
        slack.workspace.add_user("U0NOEMAIL1", "noemail")
        people = SlackIdentities(web_client("xoxb-sandbox", slack.api_url))
        assert await people.person(APPROVER) == await people.person(APPROVER_ALT) == "enterprise:W0ENTALEX1"
        assert await people.person(REQUESTER) == await people.person(REQUESTER_ADMIN) == "email:rita@sandbox.example"
        assert await people.person(APPROVER2) == "email:blake@sandbox.example"
        assert await people.person("U0NOEMAIL1") == "U0NOEMAIL1"
        assert await people.person("cli:operator") == "cli:operator"  # not a Slack account: Slack is not asked
        calls = len(slack.calls_to("users.info"))
        slack.server_errors(1000, 503, methods=["users.info"])
        assert await people.person(APPROVER) == "enterprise:W0ENTALEX1"  # from the cache
        assert len(slack.calls_to("users.info")) == calls
        people.ttl = 0  # expired: Slack is asked, fails, and the last answer stands
        assert await people.person(APPROVER) == "enterprise:W0ENTALEX1"
        with pytest.raises(IdentityUnknown):
            await people.person(GROUP_MEMBER)  # never seen, Slack failing: unknown, not a guess
