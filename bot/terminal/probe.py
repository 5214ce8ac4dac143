"""`check-config --probe`: reach each system a run would use, read-only, and say in one line what answered.

Hosts: the preflight script over WinRM (reads versions, service, disk; changes nothing), one short attempt
each. Workspace ONE Access: a token and the directory list. vCenter, when configured: a login. ServiceNow,
when configured: one change_request lookup (a number no change has, so nothing is read but the answer). Slack's part
is bot/slack/probe.py. Nothing here writes anything, on a host or anywhere else.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.core.config import Config, Secrets
from bot.core.probes import Probe, one_line
from bot.systems.servicenow import ServiceNowChanges
from bot.systems.winrm import WinRMExecutor
from bot.systems.workspace_one import IWA_TYPE, WorkspaceOneClient

HOST_PROBE_SECONDS = 60.0  # preflight asks CIM a few questions: seconds on a real server, allowed a minute


async def probe_hosts(config: Config, secrets: Secrets) -> list[Probe]:
    try:
        executor = WinRMExecutor(config, secrets)
    except ValueError as exc:  # WINRM_USERNAME / WINRM_PASSWORD missing
        return [Probe(f"{name}: WinRM {config.winrm_endpoint(name)}", False, str(exc)) for name in config.hosts]
    try:
        return list(await asyncio.gather(*(_probe_host(executor, config, name) for name in config.hosts)))
    finally:
        executor.close()


async def _probe_host(executor: WinRMExecutor, config: Config, name: str) -> Probe:
    what = f"{name}: WinRM {config.winrm_endpoint(name)}"
    connector = config.connector
    params = {"ServiceName": connector.service, "ProductNamePattern": connector.product_name, "Drive": "C:"}
    try:
        result = await executor.probe(name, "preflight", HOST_PROBE_SECONDS, params)
    except Exception as exc:  # every failure is a line of the report, never a traceback
        return Probe(what, False, one_line(exc))
    return Probe(what, True, _host_summary(result.data, connector.service))


def _host_summary(data: Any, service_name: str) -> str:
    """A few words from preflight's document; a document without them is still an answer."""
    facts: dict[str, Any] = data if isinstance(data, dict) else {}
    product: dict[str, Any] = facts["connector"] if isinstance(facts.get("connector"), dict) else {}
    service: dict[str, Any] = facts["service"] if isinstance(facts.get("service"), dict) else {}
    installed = f"connector {product.get('version')}" if product.get("installed") else "no connector installed"
    state = f"{service_name} {service.get('state')}" if service.get("exists") else f"no service {service_name}"
    return f"{facts.get('computerName') or 'answered'}; {installed}; {state}"


async def probe_workspace_one(config: Config, secrets: Secrets) -> list[Probe]:
    if not config.workspace_one.url:
        return []
    what = f"Workspace ONE Access {config.workspace_one.url}"
    try:
        client = WorkspaceOneClient(config.workspace_one, secrets)
    except ValueError as exc:
        return [Probe(what, False, str(exc))]
    try:
        items = await client.list_directories()  # asks for the token first
    except Exception as exc:
        return [Probe(what, False, one_line(exc))]
    finally:
        await client.close()
    iwa = sum(1 for item in items if item.get("type") == IWA_TYPE)
    return [Probe(what, True, f"token issued; {len(items)} directories, {iwa} AD over IWA")]


async def probe_vcenter(config: Config, secrets: Secrets) -> list[Probe]:
    if not config.vcenter.url:
        return []
    what = f"vCenter {config.vcenter.url}"
    try:
        from bot.systems.vcenter import VCenterClient  # pyVmomi is optional

        client = VCenterClient(config.vcenter, secrets)
    except Exception as exc:  # pyVmomi missing (VCenterError), credentials missing (ValueError)
        return [Probe(what, False, one_line(exc))]
    try:
        name = await client.about()
    except Exception as exc:
        return [Probe(what, False, one_line(exc))]
    finally:
        await client.close()
    return [Probe(what, True, f"logged in ({name})")]


PROBE_NUMBER = "CHG0000000"  # looked up to see the Table API answer and accept the credentials


async def probe_servicenow(config: Config, secrets: Secrets) -> list[Probe]:
    if config.change.servicenow is None:
        return []
    what = f"ServiceNow {config.change.servicenow.url}"
    try:
        client = ServiceNowChanges(config.change.servicenow, secrets)
    except ValueError as exc:  # SERVICENOW_USERNAME / SERVICENOW_PASSWORD missing
        return [Probe(what, False, str(exc))]
    try:
        await client.fetch(PROBE_NUMBER)
    except Exception as exc:
        return [Probe(what, False, one_line(exc))]
    finally:
        await client.close()
    return [
        Probe(what, True, f"the Table API answered a change_request lookup ({config.change.servicenow.table_path})")
    ]
