"""What `serve` needs before it starts, said once for everything missing: serve refuses with it, and
check-config reports it ("serve would refuse: ...") so an operator learns it before the first start."""

from __future__ import annotations

from bot.core.config import Config, Secrets


def needed_secrets(config: Config, *, socket_mode: bool) -> list[str]:
    """The environment variables serve reads: Slack's, WinRM's, and those of the systems that are configured."""
    names = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"] + (["SLACK_APP_TOKEN"] if socket_mode else [])
    names += ["WINRM_USERNAME", "WINRM_PASSWORD"]
    if config.workspace_one.url:
        names += ["WS1_CLIENT_ID", "WS1_CLIENT_SECRET"]
    if config.vcenter.url:
        names += ["VCENTER_USERNAME", "VCENTER_PASSWORD"]
    if config.change.servicenow is not None:
        names += ["SERVICENOW_USERNAME", "SERVICENOW_PASSWORD"]
    return names


def missing_secrets(config: Config, secrets: Secrets, *, socket_mode: bool) -> list[str]:
    present = secrets.present()
    return [name for name in needed_secrets(config, socket_mode=socket_mode) if not present[name]]


def serve_refusals(config: Config, secrets: Secrets, *, socket_mode: bool) -> list[str]:
    """Why serve would not start (empty: it would), each reason a short clause."""
    reasons = []
    missing = missing_secrets(config, secrets, socket_mode=socket_mode)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        reasons.append(f"{', '.join(missing)} {verb} not set in the environment (see README, Secrets)")
    if not config.slack.approvers:
        # STARTTLS and the reboot always ask an approver: a run could never get past them. A host group with
        # its own approvers ([groups.NAME] approvers) covers its hosts.
        covered = {h for g in config.groups.values() if g.approvers for h in g.hosts}
        if uncovered := [host for host in config.hosts if host not in covered]:
            which = "" if not covered else f" for {', '.join(uncovered)} (in no group with its own approvers)"
            reasons.append(
                f"slack.approvers is empty, so no gated step (STARTTLS, install, reboot) could be approved{which}"
            )
    return reasons
