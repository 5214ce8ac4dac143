"""The real steps, the real executor and pywinrm, against a simulated host: an upgrade in-process."""

from __future__ import annotations

import tomllib
from urllib.parse import urlsplit

import pytest

from bot.core.config import Secrets, parse_config
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import Engine
from bot.runtime import Runtime
from bot.systems.services import build_services
from bot.systems.winrm import WinRMExecutor
from sandbox.threaded import running_host
from tests.support.configs import APPROVER, REQUESTER


class Clicker:
    """Answers approval requests as APPROVER would in Slack; records what it was asked.

    ``decision`` answers every request; ``decisions`` maps a gate to its own answer.
    """

    def __init__(self, decision: str = "approve", decisions: dict[str, str] | None = None):
        self.decision = decision
        self.decisions = decisions or {}
        self.engine: Engine | None = None
        self.asked: list[dict] = []
        self.events = []
        self.host = None  # the simulated host of the run (set by the upgrade fixture)

    async def deliver(self, event) -> None:
        self.events.append(event)
        if event.kind == "approval.requested":
            self.asked.append(event.data)
            decision = self.decisions.get(event.data["gate"], self.decision)
            if decision != "none":
                await self.engine.decide(event.data["approval_id"], APPROVER, decision)


def sandbox_config(
    host,
    db_path,
    extra: str = "",
    reboot_timeout: float = 20,
    ws1_url: str | None = None,
    *,
    more_hosts: tuple = (),
    vcenter_url: str | None = None,
    vm_name: str | None = None,
    tables: str = "",
):
    """A real configuration for simulated hosts (host01, host02, ...): what an operator would write.
    ``tables``: more TOML tables, after the hosts ([groups.NAME], say)."""
    sections = {
        "slack": "",
        "preflight": "",
        "policy": "",
        "connector": "",
        "reboot": f"timeout_seconds = {reboot_timeout}",
        "winrm": "",
        "installer": "",
        "workspace_one": f'url = "{ws1_url}"' if ws1_url else "",
        "vcenter": f'url = "{vcenter_url}"' if vcenter_url else "",
        "audit": "",
        "http": "",
    }
    more: dict[str, str] = {}  # "hosts.host01: window = ..." goes into that host's table
    for line in extra.strip().splitlines():
        section, _, setting = line.partition(":")
        into = sections if section.strip() in sections else more
        into[section.strip()] = into.get(section.strip(), "") + "\n" + setting.strip()
    more_tables, tables = tables, ""
    for index, each in enumerate((host, *more_hosts), start=1):
        url = urlsplit(each.endpoint)
        tables += f'[hosts.host{index:02d}]\naddress = "{url.hostname}"\nport = {url.port}\n'
        if vm_name and index == 1:
            tables += f'vm_name = "{vm_name}"\n'
        tables += more.pop(f"hosts.host{index:02d}", "").strip() + "\n"
    if more:
        raise ValueError(f"sandbox_config: no such section for extra settings: {', '.join(more)}")
    # slack.requesters is required; `extra` may set its own ("slack: requesters = [...]").
    requesters = "" if "requesters" in sections["slack"] else f'requesters = ["{REQUESTER}"]'
    approvers = "" if "approvers" in sections["slack"] else f'approvers = ["{APPROVER}"]'
    text = f"""
[slack]
channel = "C0OPSCHANL"
{approvers}
{requesters}
approval_timeout_minutes = 1
{sections["slack"]}
[database]
path = "{db_path}"
[installer]
url = "{host.installer_url}"
sha256 = "{host.state.artifact.advertised_sha256}"
version = "19.03.0.1"
{sections["installer"]}
[preflight]
{sections["preflight"]}
[policy]
{sections["policy"]}
[connector]
{sections["connector"]}
[reboot]
{sections["reboot"]}
[winrm]
scheme = "http"
transport = "basic"
poll_seconds = 0.1
{sections["winrm"]}
[workspace_one]
{sections["workspace_one"]}
[vcenter]
{sections["vcenter"]}
[audit]
{sections["audit"]}
[http]
{sections["http"]}
{tables}
{more_tables}
"""
    return parse_config(tomllib.loads(text))


@pytest.fixture
def upgrade(tmp_path):
    """upgrade(scenario, decision=..., extra=...) -> (engine, host, clicker, run) after the run ended."""
    cleanups = []

    async def go(
        scenario="default",
        *,
        decision="approve",
        extra="",
        check_only=False,
        tweak=None,
        ws1=None,
        vcenter=None,
        then=None,
    ):
        """ws1: a running WorkspaceOneStandIn (STARTTLS through the API), or None (console by hand);
        vcenter: a running vCenter simulator (tests.vcsim), or None (snapshot by hand); then: an async
        callable (engine, host, clicker, run) run after the run ended, before the engine stops."""
        reboot_timeout = 3 if scenario == "reboot-never-returns" else 20
        context = running_host(scenario)
        host = context.__enter__()
        cleanups.append(lambda: context.__exit__(None, None, None))
        if tweak:
            tweak(host.state)
        config = sandbox_config(
            host,
            tmp_path / f"{scenario}.db",
            extra,
            reboot_timeout,
            ws1.url if ws1 else None,
            vcenter_url=vcenter["url"] if vcenter else None,
            vm_name="DC0_H0_VM0" if vcenter else None,
        )
        secrets = {"WINRM_USERNAME": host.username, "WINRM_PASSWORD": host.password}
        if ws1:
            secrets |= {"WS1_CLIENT_ID": ws1.client_id, "WS1_CLIENT_SECRET": ws1.client_secret}
        if vcenter:
            secrets |= {"VCENTER_USERNAME": vcenter["username"], "VCENTER_PASSWORD": vcenter["password"]}
        secrets = Secrets.from_env(secrets)
        services = build_services(config, secrets)
        services.winrm.close()
        services.winrm = WinRMExecutor(config, secrets, retry_delays=(0.1, 0.2))
        if isinstance(decision, Clicker):
            clicker = decision
        elif isinstance(decision, str):
            clicker = Clicker(decision)
        else:
            clicker = Clicker("approve", decision)
        clicker.host = host  # a sink that acts on the host while the run goes on (an outage) may use it
        runtime = Runtime.build(
            config,
            secrets,
            policy=ApprovalPolicy(config.slack),
            sinks=[clicker],
            services=services,
            approval_poll_seconds=0.05,
        )
        cleanups.append(runtime.store.close)
        engine = clicker.engine = runtime.engine
        [run] = await engine.submit(["host01"], REQUESTER, check_only=check_only)
        await engine.join()
        if then is not None:  # more to do with the same engine after the run ended (a retry, say)
            await then(engine, host, clicker, engine.store.get_run(run.id))
            await engine.join()
        await runtime.stop()
        return engine, host, clicker, engine.store.get_run(run.id)

    yield go
    for cleanup in reversed(cleanups):
        cleanup()
