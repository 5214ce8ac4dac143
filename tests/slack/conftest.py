"""The bot as a real HTTP server (or Socket Mode client), the stand-in as Slack, simulated hosts behind."""

from __future__ import annotations

import contextlib
import secrets

import pytest

from bot.core.config import Secrets
from bot.core.gates import gate_named
from bot.core.models import ApprovalState
from bot.slack.app import SlackBot
from sandbox.slack import SlackStandIn
from sandbox.slack_state import OPS_CHANNEL
from sandbox.threaded import running_fleet, running_host
from sandbox.workspace_one import WorkspaceOneStandIn
from tests.steps.conftest import sandbox_config
from tests.support.waiting import eventually

SIGNING_SECRET = "sandbox-signing-secret-7f3a"


class Harness:
    def __init__(self, slack, bot, host, ws1):
        self.slack, self.bot, self.host, self.ws1 = slack, bot, host, ws1
        self.sender = slack.sender(f"{bot.url}/slack/events", SIGNING_SECRET) if bot.url else None
        self.store = bot.store

    def runs(self):
        return self.store.runs()

    def ephemeral_texts(self, user: str) -> list[str]:
        return [e.text for e in self.slack.ephemerals(user=user)]

    async def reply(self, result, timeout: float = 30) -> dict:
        """The bot's first post to the response_url of a request it was sent (`result`: the sender's answer).

        The HTTP answer is only Bolt's ack; the command or click is handled after it and answered here. The
        stand-in shows the post (an ephemeral, say) before it records it, so once this returns it is visible.
        """
        rid = str(result.sent_payload["response_url"]).rsplit("/", 1)[-1]
        posts = await eventually(
            lambda: self.slack.response_urls[rid].posts, timeout=timeout, what="the bot's reply to the request"
        )
        return posts[0].body

    async def settle(
        self, run_id: str, *, approver: str, timeout: float = 120, socket: bool = False, channel: str = OPS_CHANNEL
    ) -> None:
        """Click every open request's button as `approver` until the run ends and the thread is sent."""
        clicked: set[str] = set()

        async def click_open_requests_until_done() -> bool:
            if not self.store.get_run(run_id).state.active:
                return True
            for approval in self.store.approvals(run_id):
                if approval.state is not ApprovalState.open or approval.id in clicked:
                    continue
                action = gate_named(approval.gate).button
                found = self.slack.latest_button(channel, action, value=approval.id)
                if found is None:
                    continue  # not delivered to Slack yet
                message, _button = found
                if socket:
                    await self.slack.socket_click_button(
                        approver, action, value=approval.id, message_ts=message.ts, channel_id=channel
                    )
                else:
                    response = await self.sender.click_button(
                        approver, action, value=approval.id, message_ts=message.ts, channel_id=channel
                    )
                    assert response.status == 200
                clicked.add(approval.id)
            return False

        await eventually(click_open_requests_until_done, timeout=timeout, what=f"the run {run_id} finished")
        assert await self.bot.progress.idle(timeout=60), "the outbox did not drain"


@pytest.fixture
async def slack_bot(tmp_path):
    """slack_bot(scenario=..., socket_mode=..., ws1=True, extra=..., messages_per_second=..., tables=...,
    before_start=...) -> Harness."""
    stack = contextlib.AsyncExitStack()

    async def start(
        scenario="default",
        *,
        socket_mode=False,
        ws1=True,
        extra="",
        messages_per_second=10,
        ws1_directories=None,
        hosts=1,
        tables="",
        clock=None,
        servicenow=None,
        before_start=None,
    ):
        """tables: TOML tables after the hosts' ([windows.NAME], [[freeze]]); clock: admission's clock;
        servicenow: a running sandbox.servicenow.ServiceNowStandIn to check tickets against ([change] is
        then ticket = "required" unless `tables` has a [change] of its own)."""
        slack = await stack.enter_async_context(SlackStandIn(signing_secret=SIGNING_SECRET))
        if hosts > 1:  # host01, host02, ...: one WinRM account for all of them
            fleet = stack.enter_context(running_fleet(hosts, scenario, password=secrets.token_urlsafe(12)))
            host, more_hosts = fleet[0], tuple(fleet)[1:]
            for other in more_hosts:  # one artifact store for the fleet, as the sandbox has
                other.server.state.artifact_url = host.installer_url
        else:
            host, more_hosts = stack.enter_context(running_host(scenario)), ()
        stand_in = await stack.enter_async_context(WorkspaceOneStandIn(ws1_directories)) if ws1 else None
        if servicenow is not None:
            if "[change]" not in tables:
                tables += '\n[change]\nticket = "required"\n'
            tables += f'\n[change.servicenow]\nurl = "{servicenow.url}"\ntimeout_seconds = 5\n'
        config = sandbox_config(
            host,
            tmp_path / "bot.db",
            f"slack: messages_per_second = {messages_per_second}\n{extra}",
            ws1_url=stand_in.url if stand_in else None,
            more_hosts=more_hosts,
            tables=tables,
        )
        env = {
            "SLACK_BOT_TOKEN": "xoxb-sandbox",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "WINRM_USERNAME": host.username,
            "WINRM_PASSWORD": host.password,
        }
        if socket_mode:
            env["SLACK_APP_TOKEN"] = "xapp-sandbox"
        if servicenow is not None:
            env |= servicenow.environment()
        if stand_in:
            env |= {"WS1_CLIENT_ID": stand_in.client_id, "WS1_CLIENT_SECRET": stand_in.client_secret}
        if before_start is not None:  # channels and users of the test's own (the stand-in's workspace)
            before_start(slack.workspace)
        more = {"clock": clock} if clock else {}
        bot = SlackBot(config, Secrets.from_env(env), socket_mode=socket_mode, api_url=slack.api_url, **more)
        await bot.start(port=0)
        stack.push_async_callback(bot.stop)
        if socket_mode:
            await slack.wait_socket_connected(30)
        return Harness(slack, bot, host, stand_in)

    yield start
    await stack.aclose()
