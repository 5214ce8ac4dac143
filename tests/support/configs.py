"""Valid configurations for tests, written as real TOML files."""

from __future__ import annotations

import json
from pathlib import Path

REQUESTER = "U0REQUESTER"
APPROVER = "U0APPROVER1"
APPROVER2 = "U0APPROVER2"
OUTSIDER = "U0OUTSIDER1"
GROUP = "S0APPROVERS"
GROUP_MEMBER = "U0GROUPMEMB"


def config_toml(
    db_path: str | Path,
    hosts: int = 3,
    slack: str = "",
    winrm: str = "",
    approvers: list[str] | None = None,
    extra: str = "",
) -> str:
    approvers = [APPROVER, APPROVER2, GROUP] if approvers is None else approvers
    # slack.requesters is required; a test that sets its own passes it in `slack`.
    requesters = "" if "requesters" in slack else f'requesters = ["{REQUESTER}"]'
    host_tables = "\n".join(
        f'[hosts.host{i:02d}]\naddress = "127.0.0.1"\nport = {5985 + i}\n' for i in range(1, hosts + 1)
    )
    return f"""
[slack]
channel = "C0OPSCHANL"
approvers = {json.dumps(approvers)}
{requesters}
{slack}

[database]
path = "{db_path}"

[installer]
url = "http://127.0.0.1:8000/connector.exe"
sha256 = "{"ab" * 32}"
version = "19.03.0.1"

[winrm]
scheme = "http"
transport = "basic"
{winrm}

{host_tables}
{extra}
"""


def write_config(directory: Path, **kwargs) -> Path:
    path = directory / "idm-upgrade.toml"
    path.write_text(config_toml(directory / "idm-upgrade.db", **kwargs))
    return path
