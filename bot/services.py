"""The outside systems a run talks to, built once from configuration and secrets for every front end."""

from __future__ import annotations

import logging
from typing import Any

from bot.config import Config, Secrets
from bot.winrm import WinRMExecutor
from bot.workspace_one import WorkspaceOneClient

log = logging.getLogger(__name__)


class ServicesError(ValueError):
    """The configuration asks for a system whose credentials or library are missing."""


def build_services(config: Config, secrets: Secrets) -> dict[str, Any]:
    """WinRM always; Workspace ONE Access and vCenter when configured (else their steps go manual)."""
    services: dict[str, Any] = {"winrm": WinRMExecutor(config, secrets)}
    try:
        if config.workspace_one.url:
            if not (secrets.ws1_client_id and secrets.ws1_client_secret):
                raise ServicesError(
                    "workspace_one.url is set but WS1_CLIENT_ID / WS1_CLIENT_SECRET are not; set them, or remove "
                    "workspace_one.url to have a person change STARTTLS in the console"
                )
            services["workspace_one"] = WorkspaceOneClient(config.workspace_one, secrets)
        else:
            log.warning("workspace_one.url is not set: STARTTLS is checked and changed by a person in the console")
        if config.vcenter.url:
            if not (secrets.vcenter_username and secrets.vcenter_password):
                raise ServicesError(
                    "vcenter.url is set but VCENTER_USERNAME / VCENTER_PASSWORD are not; set them, or remove "
                    "vcenter.url to have a person take the snapshots"
                )
            from bot.vcenter import VCenterClient, VCenterError

            try:
                services["vcenter"] = VCenterClient(config.vcenter, secrets)
            except VCenterError as exc:  # pyVmomi missing: the message says which extra to install
                raise ServicesError(str(exc)) from None
    except BaseException:
        services["winrm"].close()
        raise
    return services


async def close_services(services: dict[str, Any]) -> None:
    if "winrm" in services:
        services["winrm"].close()
    for name in ("workspace_one", "vcenter"):
        if client := services.get(name):
            await client.close()
