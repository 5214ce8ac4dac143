"""Slack's part of `check-config --probe`: the bot token works (`auth.test`) and the bot is in `slack.channel`
and in each host group's channel (`conversations.info` is_member). All are reads."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config, Secrets
from bot.core.probes import Probe, one_line
from bot.slack.app import web_client


def _slack_error(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error")
        needed = exc.response.get("needed")
        return f"Slack answered {error}" + (f" (the app needs the scope {needed}: reinstall it)" if needed else "")
    return f"cannot reach Slack: {one_line(exc)}"


def _channels(config: Config) -> list[str]:
    """slack.channel, then each group's own channel (its runs' threads are posted there), once each."""
    return list(dict.fromkeys([config.slack.channel, *(g.channel for g in config.groups.values() if g.channel)]))


async def probe_slack(config: Config, secrets: Secrets, api_url: str | None = None) -> list[Probe]:
    channels = _channels(config)
    if secrets.slack_bot_token is None:
        why = "SLACK_BOT_TOKEN is not set"
        return [Probe("Slack auth.test", False, why), *(Probe(f"Slack channel {c}", False, why) for c in channels)]
    client = web_client(secrets.slack_bot_token.get_secret_value(), api_url)
    try:
        who = await client.auth_test()
    except Exception as exc:
        why = "not asked: " + _slack_error(exc)
        return [
            Probe("Slack auth.test", False, _slack_error(exc)),
            *(Probe(f"Slack channel {c}", False, why) for c in channels),
        ]
    bot = f"the bot is @{who.get('user')} ({who.get('user_id')}) in {who.get('team')}"
    return [Probe("Slack auth.test", True, bot), *[await _probe_channel(client, c) for c in channels]]


async def _probe_channel(client: AsyncWebClient, channel: str) -> Probe:
    what = f"Slack channel {channel}"
    try:
        info = await client.conversations_info(channel=channel)
    except Exception as exc:
        why = _slack_error(exc)
        if isinstance(exc, SlackApiError) and exc.response.get("error") == "channel_not_found":
            why += " (a private channel is found only once the bot is invited: /invite the bot there)"
        return Probe(what, False, why)
    data = info.get("channel") or {}
    name = f"#{data.get('name')}" if data.get("name") else channel
    if not data.get("is_member"):
        return Probe(what, False, f"the bot is not a member of {name}: /invite it there")
    return Probe(what, True, f"the bot is a member of {name}")
