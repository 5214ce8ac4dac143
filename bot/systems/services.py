"""The outside systems a run talks to, built once from configuration and secrets for every front end."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.core.config import Config, Secrets
from bot.systems.servicenow import ServiceNowChanges
from bot.systems.winrm import WinRMExecutor
from bot.systems.workspace_one import WorkspaceOneClient

if TYPE_CHECKING:
    from bot.systems.vcenter import VCenterClient  # pyVmomi is optional

log = logging.getLogger(__name__)


class ServicesError(ValueError):
    """The configuration asks for a system whose credentials or library are missing."""


@dataclass
class Services:
    """WinRM always; Workspace ONE Access and vCenter when configured (None: their steps go manual);
    ServiceNow when [change.servicenow] is set (None: a ticket is checked against ticket_pattern only)."""

    winrm: WinRMExecutor
    workspace_one: WorkspaceOneClient | None = None
    vcenter: VCenterClient | None = None
    servicenow: ServiceNowChanges | None = None

    async def close(self) -> None:
        self.winrm.close()
        for client in (self.workspace_one, self.vcenter, self.servicenow):
            if client is not None:
                await client.close()


def build_services(config: Config, secrets: Secrets) -> Services:
    services = Services(winrm=WinRMExecutor(config, secrets))
    try:
        if config.workspace_one.url:
            if not (secrets.ws1_client_id and secrets.ws1_client_secret):
                raise ServicesError(
                    "workspace_one.url is set but WS1_CLIENT_ID / WS1_CLIENT_SECRET are not; set them, or remove "
                    "workspace_one.url to have a person change STARTTLS in the console"
                )
            services.workspace_one = WorkspaceOneClient(config.workspace_one, secrets)
        else:
            log.warning("workspace_one.url is not set: STARTTLS is checked and changed by a person in the console")
        if config.vcenter.url:
            if not (secrets.vcenter_username and secrets.vcenter_password):
                raise ServicesError(
                    "vcenter.url is set but VCENTER_USERNAME / VCENTER_PASSWORD are not; set them, or remove "
                    "vcenter.url to have a person take the snapshots"
                )
            from bot.systems.vcenter import VCenterClient, VCenterError

            try:
                services.vcenter = VCenterClient(config.vcenter, secrets)
            except VCenterError as exc:  # pyVmomi missing: the message says which extra to install
                raise ServicesError(str(exc)) from None
        if config.change.servicenow is not None:
            if not (secrets.servicenow_username and secrets.servicenow_password):
                raise ServicesError(
                    "change.servicenow is set but SERVICENOW_USERNAME / SERVICENOW_PASSWORD are not; set them, or "
                    "remove [change.servicenow] to check tickets against change.ticket_pattern only"
                )
            services.servicenow = ServiceNowChanges(config.change.servicenow, secrets)
    except BaseException:
        services.winrm.close()
        raise
    return services
