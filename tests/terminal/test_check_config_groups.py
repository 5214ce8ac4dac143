"""check-config with host groups: a group with its own approvers covers its hosts when slack.approvers is
empty, and --probe asks Slack whether the bot is in each group's channel too (it posts those runs there)."""

from __future__ import annotations

from sandbox.slack import SlackStandIn
from sandbox.slack_state import OPS_CHANNEL
from sandbox.threaded import running_host
from tests.support.configs import APPROVER, config_toml
from tests.terminal.test_check_config import READY, check_config, lines_with, probe_config, probe_env


async def test_a_group_with_its_own_approvers_covers_its_hosts_when_slack_approvers_is_empty(tmp_path):
    config = tmp_path / "c.toml"
    group = f'[groups.prod]\nhosts = ["host01"]\napprovers = ["{APPROVER}"]\n'
    config.write_text(config_toml(tmp_path / "bot.db", hosts=2, approvers=[], extra=group))
    code, out, err = await check_config(config, READY)
    assert code == 1, out + err
    assert lines_with(out, "serve would refuse") == [
        "serve would refuse: slack.approvers is empty, so no gated step (STARTTLS, install, reboot) could be "
        "approved for host02 (in no group with its own approvers)"
    ]
    everyone = group.replace('["host01"]', '["host01", "host02"]')
    config.write_text(config_toml(tmp_path / "bot.db", hosts=2, approvers=[], extra=everyone))
    code, out, err = await check_config(config, READY)
    assert code == 0, out + err
    assert "serve would refuse" not in out


async def test_probe_asks_about_each_group_channel(tmp_path):
    with running_host("default") as host:
        async with SlackStandIn() as slack:
            slack.workspace.add_channel("C0PRODCHAN", "idm-prod", bot_is_member=False)  # not invited there
            config = probe_config(tmp_path, host, None)
            config.write_text(config.read_text() + '\n[groups.prod]\nhosts = ["host01"]\nchannel = "C0PRODCHAN"\n')
            code, out, err = await check_config(config, probe_env(slack, host, None), "--probe")
    assert code == 1, out + err
    assert lines_with(out, "probe Slack channel") == [
        f"probe Slack channel {OPS_CHANNEL}: ok: the bot is a member of #idm-ops",
        "probe Slack channel C0PRODCHAN: FAILED: the bot is not a member of #idm-prod: /invite it there",
    ], out
