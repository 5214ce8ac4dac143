"""`idm-upgrade check-config` as a real program: exit 1 when serve would refuse, only the secrets the
configuration uses, and `--probe` against the stand-ins (simulated WinRM host, Slack, Workspace ONE Access)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bot.core.config import SECRET_NAMES  # the one list of the secrets the program reads
from sandbox.servicenow import ServiceNowStandIn
from sandbox.slack import SlackStandIn
from sandbox.slack_state import OPS_CHANNEL
from sandbox.threaded import running_host
from sandbox.workspace_one import WorkspaceOneStandIn
from tests.support.configs import config_toml
from tests.vcsim import vcsim_fixture

ROOT = Path(__file__).resolve().parents[2]
READY = {"SLACK_BOT_TOKEN": "xoxb-sandbox", "SLACK_SIGNING_SECRET": "s", "WINRM_USERNAME": "u", "WINRM_PASSWORD": "p"}


async def check_config(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES and not k.startswith(("SLACK_", "IDM_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "check-config",
        "--config",
        str(config),
        *args,
        cwd=ROOT,
        env=clean | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def lines_with(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


async def test_exits_1_saying_serve_would_refuse_with_every_secret_missing_and_no_approvers(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tmp_path / "bot.db", hosts=1, approvers=[]))
    code, out, err = await check_config(config, {})
    assert code == 1, out + err
    assert lines_with(out, "serve would refuse") == [
        "serve would refuse: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, WINRM_USERNAME, WINRM_PASSWORD are not set in "
        "the environment (see README, Secrets)",
        "serve would refuse: slack.approvers is empty, so no gated step (STARTTLS, install, reboot) could be approved",
    ]
    # no min_approvals warning on top of the refusal
    assert "warning: slack.min_approvals" not in out


async def test_exits_0_when_serve_would_start_and_asks_only_for_what_is_configured(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tmp_path / "bot.db", hosts=1))
    code, out, err = await check_config(config, READY)
    assert code == 0, out + err
    [environment] = lines_with(out, "environment: ")
    assert environment == (
        "environment: SLACK_BOT_TOKEN set, SLACK_SIGNING_SECRET set, SLACK_APP_TOKEN missing (serve uses HTTP; "
        "--socket-mode would refuse), WINRM_USERNAME set, WINRM_PASSWORD set; serve would use HTTP"
    )
    assert "VCENTER" not in out and "WS1_" not in out and "serve would refuse" not in out


async def test_configured_systems_need_their_secrets(tmp_path):
    config = tmp_path / "c.toml"
    extra = '[workspace_one]\nurl = "https://ws1.example.com"\n[vcenter]\nurl = "https://vc.example.com"'
    config.write_text(config_toml(tmp_path / "bot.db", hosts=1, extra=extra))
    code, out, err = await check_config(config, READY | {"SLACK_APP_TOKEN": "xapp-1", "WS1_CLIENT_ID": "id"})
    assert code == 1, out + err
    assert "WS1_CLIENT_ID set, WS1_CLIENT_SECRET missing, VCENTER_USERNAME missing, VCENTER_PASSWORD missing" in out
    assert "serve would use Socket Mode" in out
    assert lines_with(out, "serve would refuse") == [
        "serve would refuse: WS1_CLIENT_SECRET, VCENTER_USERNAME, VCENTER_PASSWORD are not set in the environment "
        "(see README, Secrets)"
    ]


async def test_servicenow_needs_its_credentials_and_serve_refuses_in_one_line(tmp_path):
    config = tmp_path / "c.toml"
    extra = '[change]\nticket = "required"\n[change.servicenow]\nurl = "https://snow.example.com"\n'
    config.write_text(config_toml(tmp_path / "bot.db", hosts=1, extra=extra))
    code, out, err = await check_config(config, READY | {"SERVICENOW_USERNAME": "svc-idm"})
    assert code == 1, out + err
    assert "SERVICENOW_USERNAME set, SERVICENOW_PASSWORD missing" in out
    assert lines_with(out, "serve would refuse") == [
        "serve would refuse: SERVICENOW_PASSWORD is not set in the environment (see README, Secrets)"
    ]
    code, out, err = await check_config(config, READY | {"SERVICENOW_USERNAME": "u", "SERVICENOW_PASSWORD": "p"})
    assert code == 0, out + err


def probe_config(tmp_path: Path, host, ws1_url: str | None) -> Path:
    url = urlsplit(host.endpoint)
    extra = f'[hosts.host01]\naddress = "{url.hostname}"\nport = {url.port}\n'
    if ws1_url:
        extra += f'[workspace_one]\nurl = "{ws1_url}"\n'
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tmp_path / "bot.db", hosts=0, extra=extra))
    return config


def probe_env(slack: SlackStandIn, host, ws1: WorkspaceOneStandIn | None) -> dict[str, str]:
    env = READY | {"SLACK_API_URL": slack.api_url, "WINRM_USERNAME": host.username, "WINRM_PASSWORD": host.password}
    if ws1:
        env |= {"WS1_CLIENT_ID": ws1.client_id, "WS1_CLIENT_SECRET": ws1.client_secret}
    return env


async def test_probe_reaches_every_system_read_only_and_says_ok(tmp_path):
    with running_host("default") as host:
        async with SlackStandIn() as slack, WorkspaceOneStandIn() as ws1:
            config = probe_config(tmp_path, host, ws1.url)
            code, out, err = await check_config(config, probe_env(slack, host, ws1), "--probe")
            assert code == 0, out + err
            probes = lines_with(out, "probe ")
            assert probes == [
                f"probe host01: WinRM {host.endpoint}: ok: IDM-CONN01; connector 19.03.0.0; VMwareIDMConnector Running",
                f"probe Workspace ONE Access {ws1.url}: ok: token issued; 3 directories, 1 AD over IWA",
                "probe Slack auth.test: ok: the bot is @idm-upgrade (U0IDMBOT) in Sandbox",
                f"probe Slack channel {OPS_CHANNEL}: ok: the bot is a member of #idm-ops",
            ], out
            # read-only: the preflight script alone on the host, no write to Workspace ONE, only reads of Slack
            assert dict(host.server.scripts_run) == {"preflight": 1}
            assert host.state.connector.version == "19.03.0.0"
            assert ws1.updates == [] and all(r.method in ("GET", "POST") for r in ws1.requests)
            assert [r.path for r in ws1.requests if r.method == "POST"] == [ws1.token_path]
            assert {call.method for call in slack.calls} == {"auth.test", "conversations.info"}


async def test_probe_says_failed_for_each_system_that_does_not_answer_and_exits_1(tmp_path):
    with running_host("default") as host:
        async with SlackStandIn() as slack:
            ws1 = await WorkspaceOneStandIn().start()
            ws1_url = ws1.url
            await ws1.stop()  # Workspace ONE Access down: connection refused
            slack.workspace.channels[OPS_CHANNEL].bot_is_member = False  # the bot was never invited
            env = probe_env(slack, host, None) | {"WS1_CLIENT_ID": "id", "WS1_CLIENT_SECRET": "secret"}
            env["WINRM_PASSWORD"] = "wrong-password"
            code, out, err = await check_config(probe_config(tmp_path, host, ws1_url), env, "--probe")
    assert code == 1, out + err
    probes = lines_with(out, "probe ")
    assert len(probes) == 4, out
    winrm, workspace_one, auth, channel = probes
    assert winrm.startswith(f"probe host01: WinRM {host.endpoint}: FAILED: ") and "refused the credentials" in winrm
    assert workspace_one.startswith(f"probe Workspace ONE Access {ws1_url}: FAILED: "), workspace_one
    assert auth.startswith("probe Slack auth.test: ok: ")
    assert (
        channel == f"probe Slack channel {OPS_CHANNEL}: FAILED: the bot is not a member of #idm-ops: /invite it there"
    )
    assert "wrong-password" not in out + err and "Traceback" not in err


async def test_probe_with_slack_down_says_failed_in_one_line_each(tmp_path):
    with running_host("default") as host:
        async with SlackStandIn() as slack:
            await slack.down()
            code, out, err = await check_config(
                probe_config(tmp_path, host, None), probe_env(slack, host, None), "--probe"
            )
    assert code == 1, out + err
    auth, channel = lines_with(out, "probe Slack")
    assert auth.startswith("probe Slack auth.test: FAILED: cannot reach Slack: "), auth
    assert channel.startswith(f"probe Slack channel {OPS_CHANNEL}: FAILED: not asked: cannot reach Slack"), channel
    assert lines_with(out, "probe host01")[0].endswith("VMwareIDMConnector Running")
    assert "Traceback" not in err


async def test_probe_asks_servicenow_and_says_failed_on_wrong_credentials(tmp_path):
    with running_host("default") as host:
        async with SlackStandIn() as slack, ServiceNowStandIn() as snow:
            config = probe_config(tmp_path, host, None)
            config.write_text(
                config.read_text() + f'[change]\nticket = "required"\n[change.servicenow]\nurl = "{snow.url}"\n'
            )
            env = probe_env(slack, host, None) | snow.environment()
            code, out, err = await check_config(config, env, "--probe")
            assert code == 0, out + err
            [probe] = lines_with(out, "probe ServiceNow")
            assert probe == (
                f"probe ServiceNow {snow.url}: ok: the Table API answered a change_request lookup "
                "(/api/now/table/change_request)"
            )
            code, out, err = await check_config(config, env | {"SERVICENOW_PASSWORD": "wrong-snow"}, "--probe")
            assert [r.status for r in snow.requests] == [200, 401]
    assert code == 1, out + err
    [probe] = lines_with(out, "probe ServiceNow")
    assert probe.startswith(f"probe ServiceNow {snow.url}: FAILED: ") and "refused the bot's credentials" in probe
    assert "wrong-snow" not in out + err and snow.password not in out + err


vcsim = vcsim_fixture(username="svc-snapshots", password="vc-Pr0be-pass")


async def test_probe_logs_in_to_vcenter_and_says_failed_on_a_wrong_password(tmp_path, vcsim):
    with running_host("default") as host:
        async with SlackStandIn() as slack:
            config = probe_config(tmp_path, host, None)
            config.write_text(config.read_text() + f'[vcenter]\nurl = "{vcsim["url"]}"\n')
            env = probe_env(slack, host, None) | {
                "VCENTER_USERNAME": "svc-snapshots",
                "VCENTER_PASSWORD": "vc-Pr0be-pass",
            }
            code, out, err = await check_config(config, env, "--probe")
            assert code == 0, out + err
            [vcenter] = lines_with(out, "probe vCenter")
            assert vcenter.startswith(f"probe vCenter {vcsim['url']}: ok: logged in ("), vcenter
            code, out, err = await check_config(config, env | {"VCENTER_PASSWORD": "wrong-one"}, "--probe")
    assert code == 1, out + err
    [vcenter] = lines_with(out, "probe vCenter")
    assert vcenter.startswith(f"probe vCenter {vcsim['url']}: FAILED: ") and "refused the login" in vcenter, vcenter
    assert "wrong-one" not in out + err and "vc-Pr0be-pass" not in out + err
