"""The configuration file (TOML) and the secrets (environment), validated by pydantic.

Unknown keys are errors: a typo in a production config must not be silently ignored.
Every problem is reported as one line naming its key path, e.g. ``hosts.host01.port: must be 1-65535``.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.core.signing import parse_public_key

DEFAULT_PATH = "idm-upgrade.toml"
ENV_PATH = "IDM_UPGRADE_CONFIG"

SECRET_NAMES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "WINRM_USERNAME",
    "WINRM_PASSWORD",
    "WS1_CLIENT_ID",
    "WS1_CLIENT_SECRET",
    "VCENTER_USERNAME",
    "VCENTER_PASSWORD",
    "SERVICENOW_USERNAME",
    "SERVICENOW_PASSWORD",
)

_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_PRINCIPAL_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_APP_ID = re.compile(r"^A[A-Z0-9]{2,}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^\d+(\.\d+){1,3}$")


# Words /idm-upgrade reads as verbs or options: no group may be named like one.
RESERVED_WORDS = ("check", "status", "history", "cancel", "help", "at", "ticket")


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be 1-65535")
    return value


def _principal(value: str) -> str:
    if not _PRINCIPAL_ID.match(value):
        raise ValueError(
            f"{value!r} is not a Slack user ID (U…/W…) or user group ID (S…); use upper-case IDs, not names or @handles"
        )
    return value


def _user(value: str) -> str:
    if not _USER_ID.match(value):
        raise ValueError(f"{value!r} is not a Slack user ID (U…/W…)")
    return value


# `slack.requesters = ["anyone"]`: the explicit opt-in to let every workspace member start runs.
ANYONE = "anyone"


def _requester(value: str) -> str:
    return value if value == ANYONE else _principal(value)


Port = Annotated[int, AfterValidator(_port)]
Principal = Annotated[str, AfterValidator(_principal)]
Requester = Annotated[str, AfterValidator(_requester)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackConfig(_Section):
    channel: str
    # No default that lets everyone in: an empty or missing list is refused (_requesters).
    requesters: list[Requester] = Field(default_factory=list, validate_default=True)
    approvers: list[Principal] = Field(default_factory=list)
    allow_self_approval: bool = False
    min_approvals: int = Field(default=1, ge=1, le=10)
    approval_timeout_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    messages_per_second: float = Field(default=1.0, gt=0, le=10)
    # chat.update is Slack's Tier 3 (about 50 a minute, per workspace): edits are paced on their own budget.
    updates_per_minute: float = Field(default=50.0, gt=0, le=600)
    # A request of several hosts: "card" (one fleet card per channel; host threads carry only what a person
    # must see) or "threads" (every run its own full thread, every call on the channel's one pace: as before).
    fleet_progress: Literal["card", "threads"] = "card"
    max_hosts_per_request: int = Field(default=20, ge=1, le=200)
    # The Slack app's id (A…); when unset the bot learns it from Slack (auth.test, bots.info).
    app_id: str | None = None
    # May /idm-upgrade be used in a direct message with the bot? Otherwise only in `channel`.
    allow_direct_messages: bool = False
    # The App Home tab: republished to the people who opened it at most once per this many seconds while runs
    # change state (bot/slack/home_tab.py).
    home_refresh_seconds: float = Field(default=5.0, gt=0, le=3600)

    @field_validator("app_id")
    @classmethod
    def _app_id(cls, value: str | None) -> str | None:
        if value is not None and not _APP_ID.match(value):
            raise ValueError(f"{value!r} is not a Slack app ID (A…, upper case)")
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _CHANNEL_ID.match(value):
            raise ValueError(f"{value!r} is not a Slack channel ID (C… or G…, upper case)")
        return value

    @field_validator("requesters")
    @classmethod
    def _requesters(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "is empty or missing, which would let anyone in the workspace start upgrades; list the Slack "
                'user IDs (U…/W…) or user group IDs (S…) who may, or write requesters = ["anyone"] to let '
                "everyone start runs"
            )
        if ANYONE in value and len(value) > 1:
            raise ValueError('"anyone" already lets everyone start runs; write it alone, or list only IDs')
        return value

    @property
    def anyone_may_request(self) -> bool:
        return self.requesters == [ANYONE]


class PreflightConfig(_Section):
    min_free_disk_gb: float = Field(default=4.0, ge=0)
    pending_reboot: Literal["refuse", "ask"] = "refuse"


class PolicyConfig(_Section):
    # The installer stops the connector service (downtime): ask an approver first, as for the reboot.
    approve_install: bool = True


class DatabaseConfig(_Section):
    path: str = "idm-upgrade.db"


class InstallerConfig(_Section):
    url: str
    sha256: str
    version: str
    # InstallShield: /s silent, /w wait for the MSI (else setup.exe returns before it ends, with its own
    # exit code), /v the msiexec options: quiet, no restart, verbose log.
    arguments: str = '/s /w /v"/qn /norestart /l*v \\"{log}\\""'
    work_dir: str = "C:\\ProgramData\\idm-upgrade"
    timeout_minutes: float = Field(default=60, gt=0, le=24 * 60)
    busy_retries: int = Field(default=3, ge=0, le=20)
    busy_wait_seconds: float = Field(default=120, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if re.match(r"^file:", value, re.IGNORECASE) or value.startswith("\\\\"):
            raise ValueError(
                "a file share cannot be read from a WinRM session: with NTLM or Kerberos that is a second hop, "
                "so the host reaches the share as ANONYMOUS LOGON and gets 'Access is denied'. Put the installer "
                "on an http(s):// server the hosts can read without credentials"
            )
        if not re.match(r"^https?://\S+$", value):
            raise ValueError("must be an http:// or https:// URL the Windows hosts can reach")
        # A password in the URL would be sent to the host, and shown wherever the URL is; a pre-signed
        # query string is allowed (the host needs it) and is redacted wherever the URL is shown.
        if "@" in urlsplit(value).netloc:
            raise ValueError(
                "must not contain a user name or password; serve the file without credentials or use a pre-signed URL"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        value = value.lower()
        if not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal characters (the installer's SHA-256)")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError("must be a dotted version such as 19.03.0.1")
        return value

    @field_validator("arguments")
    @classmethod
    def _arguments(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"is not a valid template ({exc}); write literal braces as {{{{ and }}}}") from None
        unknown = fields - {"installer", "log"}
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; only {{installer}} and {{log}} exist")
        return value


class ConnectorConfig(_Section):
    service: str = "VMwareIDMConnector"
    product_name: str = "VMware Identity Manager Connector*"
    log_path: str = "C:\\VMware\\VMwareIdentityManager\\Connector\\opt\\vmware\\horizon\\workspace\\logs\\connector.log"
    service_timeout_seconds: float = Field(default=300, gt=0)


Scheme = Literal["https", "http"]
Transport = Literal["ntlm", "kerberos", "credssp", "basic"]
CertValidation = Literal["validate", "ignore"]


class WinRMConfig(_Section):
    scheme: Scheme = "https"
    port: Port | None = None
    transport: Transport = "ntlm"
    server_cert_validation: CertValidation = "validate"
    ca_trust_path: str | None = None
    connect_timeout_seconds: float = Field(default=5, gt=0)
    operation_timeout_seconds: int = Field(default=20, ge=1)
    read_timeout_seconds: int = Field(default=30, ge=2)
    command_timeout_seconds: float = Field(default=300, gt=0)
    poll_seconds: float = Field(default=5, ge=0.05, le=300)
    max_parallel: int = Field(default=4, ge=1, le=200)
    # Each of a command's stdout and stderr keeps at most this much (its head and tail); more is read and dropped.
    max_output_kib: int = Field(default=256, ge=16, le=64 * 1024)

    @model_validator(mode="after")
    def _timeouts(self) -> WinRMConfig:
        if self.read_timeout_seconds <= self.operation_timeout_seconds:
            raise ValueError(
                "read_timeout_seconds must be larger than operation_timeout_seconds "
                "(pywinrm waits that long for each Receive)"
            )
        return self


class RebootConfig(_Section):
    timeout_seconds: float = Field(default=600, gt=0, le=24 * 3600)
    delay_seconds: int = Field(default=5, ge=2, le=600)


class TerminalConfig(_Section):
    allow_yes: bool = False


class WorkspaceOneConfig(_Section):
    url: str | None = None
    directory_change: Literal["api", "manual"] = "api"
    verify_tls: bool = True
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    # The API paths and media types below are the documented ones where documentation exists; the
    # update of an IWA directory is not publicly documented, so the verb and media type are settings.
    token_path: str = "/SAAS/auth/oauthtoken"
    directories_path: str = "/SAAS/jersey/manager/api/connectormanagement/directoryconfigs"
    directory_list_media_type: str = "application/vnd.vmware.horizon.manager.connector.management.directory.list+json"
    directory_media_type: str = "application/vnd.vmware.horizon.manager.connector.management.directory.ad.over.iwa+json"
    update_method: Literal["PUT", "POST", "PATCH"] = "PUT"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("must be the tenant root such as https://tenant.example.com (no /SAAS path)")
        return value.rstrip("/") if value else value


class VCenterConfig(_Section):
    url: str | None = None
    server_cert_validation: CertValidation = "validate"
    snapshot_timeout_seconds: float = Field(default=600, gt=0)
    # Revert to snapshot (issue 20): how long RevertToSnapshot_Task, and then PowerOnVM_Task, may each take.
    revert_timeout_seconds: float = Field(default=600, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/sdk)?/?$", value):
            raise ValueError("must be the vCenter address such as https://vcenter.example.com")
        return value.rstrip("/") if value else value


class HttpConfig(_Section):
    """`serve --http`: where it listens and how long a stranger may hold a connection (bot/slack/door.py)."""

    # 127.0.0.1 unless asked: the bot belongs behind a reverse proxy that terminates TLS (docs/RUNBOOK.md).
    bind: str = Field(default="127.0.0.1", min_length=1)
    # From accepting a connection to its request's last header line.
    header_timeout_seconds: float = Field(default=5, gt=0, le=300)
    # From the last header line to the body's last byte.
    body_timeout_seconds: float = Field(default=5, gt=0, le=300)
    # Connections not yet proven to be Slack's (no signed request on them): at the cap the oldest is closed.
    max_connections: int = Field(default=256, ge=1, le=100_000)


class HostConfig(_Section):
    address: str = Field(min_length=1)
    port: Port | None = None
    scheme: Scheme | None = None
    transport: Transport | None = None
    vm_name: str | None = None
    # The maintenance window ([windows.NAME]) its runs must keep to; a group's window applies when unset.
    window: str | None = None


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
Day = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _clock(value: str) -> str:
    if not _CLOCK.match(value):
        raise ValueError(f"{value!r} is not a time of day as HH:MM (24-hour, e.g. 22:00)")
    return value


Clock = Annotated[str, AfterValidator(_clock)]


class WindowConfig(_Section):
    """A weekly maintenance window: it opens at ``start`` on each of ``days`` (local time in ``timezone``) and
    closes at ``end``, on the next day when ``end`` is not after ``start`` (a window that crosses midnight)."""

    days: list[Day] = Field(min_length=1)
    start: Clock
    end: Clock
    timezone: str

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin or UTC") from None
        return value

    @model_validator(mode="after")
    def _length(self) -> WindowConfig:
        if self.start == self.end:
            raise ValueError("start and end are the same time; a window must have a length")
        if len(set(self.days)) != len(self.days):
            raise ValueError("days: a day is named more than once")
        return self


class FreezeConfig(_Section):
    """A change freeze: no run starts, and no scheduled run is started, between ``start`` and ``end``."""

    start: AwareDatetime
    end: AwareDatetime
    reason: str = Field(min_length=1, max_length=300)

    @model_validator(mode="after")
    def _order(self) -> FreezeConfig:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


class GroupConfig(_Section):
    """A cluster of hosts upgraded together (one at a time), with its own channel, people and window."""

    hosts: list[str] = Field(min_length=1)
    channel: str | None = None
    approvers: list[Principal] | None = None
    requesters: list[Requester] | None = None
    window: str | None = None

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL_ID.match(value):
            raise ValueError(f"{value!r} is not a Slack channel ID (C… or G…, upper case)")
        return value

    @field_validator("requesters")
    @classmethod
    def _requesters(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError('is empty; leave it out to use slack.requesters, or write ["anyone"]')
            if ANYONE in value and len(value) > 1:
                raise ValueError('"anyone" already lets everyone start runs; write it alone, or list only IDs')
        return value

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("is empty, so nobody could approve this group's runs; leave it out to use slack.approvers")
        return value


TicketMode = Literal["off", "optional", "required"]


class ServiceNowConfig(_Section):
    """Validate each run's change request in ServiceNow (Table API, Basic auth: SERVICENOW_USERNAME/PASSWORD)."""

    url: str
    # Instances customize both: these are the raw values the Table API returns (sysparm_display_value=false);
    # -1 is the out-of-the-box Implement state of change_request.
    implement_states: list[str] = Field(default_factory=lambda: ["-1"], min_length=1)
    approved_values: list[str] = Field(default_factory=lambda: ["approved"], min_length=1)
    table_path: str = "/api/now/table/change_request"
    timeout_seconds: float = Field(default=15, gt=0, le=300)
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("must be the instance root such as https://example.service-now.com (no /api path)")
        return value.rstrip("/")


class ChangeConfig(_Section):
    ticket: TicketMode = "off"
    ticket_pattern: str = r"^CHG[0-9]{7}$"
    servicenow: ServiceNowConfig | None = None

    @field_validator("ticket_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _servicenow_needs_tickets(self) -> ChangeConfig:
        if self.servicenow is not None and self.ticket == "off":
            raise ValueError('servicenow is set but ticket = "off": set ticket = "required" (or "optional")')
        return self


class AuditConfig(_Section):
    # Ed25519 key that signs the checkpoints (`idm-upgrade audit keygen`); outside the database's directory.
    signing_key_file: str | None = None
    # The public key checkpoints must be signed with, for `audit verify --checkpoints` (as keygen prints it).
    public_key: str | None = None
    checkpoint_minutes: float = Field(default=15, gt=0, le=24 * 60)

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is not None:
            parse_public_key(value)  # SigningKeyError is a ValueError: reported as this key's problem
        return value


class Config(_Section):
    slack: SlackConfig
    installer: InstallerConfig
    hosts: dict[str, HostConfig] = Field(min_length=1)
    preflight: PreflightConfig = PreflightConfig()
    policy: PolicyConfig = PolicyConfig()
    database: DatabaseConfig = DatabaseConfig()
    connector: ConnectorConfig = ConnectorConfig()
    winrm: WinRMConfig = WinRMConfig()
    reboot: RebootConfig = RebootConfig()
    workspace_one: WorkspaceOneConfig = WorkspaceOneConfig()
    vcenter: VCenterConfig = VCenterConfig()
    terminal: TerminalConfig = TerminalConfig()
    audit: AuditConfig = AuditConfig()
    http: HttpConfig = HttpConfig()
    change: ChangeConfig = ChangeConfig()
    windows: dict[str, WindowConfig] = Field(default_factory=dict)
    freeze: list[FreezeConfig] = Field(default_factory=list)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, hosts: dict[str, HostConfig]) -> dict[str, HostConfig]:
        bad = [name for name in hosts if not _HOST_NAME.match(name)]
        if bad:
            raise ValueError(
                f"host name(s) {', '.join(repr(n) for n in bad)} must be a DNS label: "
                "lower-case letters, digits and '-', 1-63 characters, not starting or ending with '-'"
            )
        return hosts

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = []
        for name, entry in self.hosts.items():
            if entry.window is not None and entry.window not in self.windows:
                problems.append(f"hosts.{name}.window: no [windows.{entry.window}] is configured")
        owner: dict[str, str] = {}
        for name, group in self.groups.items():
            if not _HOST_NAME.match(name) or name in RESERVED_WORDS:
                problems.append(
                    f"groups.{name}: a group name must be a DNS label and not one of {', '.join(RESERVED_WORDS)}"
                )
            if name in self.hosts:
                problems.append(f"groups.{name}: a host has that name too; /idm-upgrade {name} would be ambiguous")
            if group.window is not None and group.window not in self.windows:
                problems.append(f"groups.{name}.window: no [windows.{group.window}] is configured")
            for host in group.hosts:
                if host not in self.hosts:
                    problems.append(f"groups.{name}.hosts: {host!r} is not a configured host")
                elif host in owner:
                    problems.append(
                        f"groups.{name}.hosts: {host!r} is already in group {owner[host]!r}; a host belongs to "
                        "one group (its channel, approvers and window)"
                    )
                else:
                    owner[host] = name
            if len(set(group.hosts)) != len(group.hosts):
                problems.append(f"groups.{name}.hosts: a host is named more than once")
        if problems:
            raise ValueError("\n".join(problems))  # one line each (parse_config)
        return self

    def group_of(self, host: str) -> str | None:
        return next((name for name, group in self.groups.items() if host in group.hosts), None)

    def window_of(self, host: str) -> str | None:
        """The name of the maintenance window a host's runs keep to: its own, else its group's, else none."""
        if own := self.hosts[host].window:
            return own
        group = self.group_of(host)
        return self.groups[group].window if group else None

    def channel_of(self, host: str) -> str:
        group = self.group_of(host)
        return (self.groups[group].channel if group else None) or self.slack.channel

    def winrm_endpoint(self, host: str) -> str:
        """The WS-Management URL for a configured host, with its per-host overrides applied."""
        entry = self.hosts[host]
        scheme = entry.scheme or self.winrm.scheme
        port = entry.port or self.winrm.port or (5986 if scheme == "https" else 5985)
        return f"{scheme}://{entry.address}:{port}/wsman"

    def transport_for(self, host: str) -> str:
        return self.hosts[host].transport or self.winrm.transport


class Secrets(BaseModel):
    """Secrets come from the environment only; SecretStr keeps them out of reprs and logs."""

    model_config = ConfigDict(frozen=True)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    winrm_username: SecretStr | None = None
    winrm_password: SecretStr | None = None
    ws1_client_id: SecretStr | None = None
    ws1_client_secret: SecretStr | None = None
    vcenter_username: SecretStr | None = None
    vcenter_password: SecretStr | None = None
    servicenow_username: SecretStr | None = None
    servicenow_password: SecretStr | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Secrets:
        env = os.environ if environ is None else environ
        return cls.model_validate({name.lower(): env[name] for name in SECRET_NAMES if env.get(name)})

    def present(self) -> dict[str, bool]:
        return {name: getattr(self, name.lower()) is not None for name in SECRET_NAMES}


def config_path(explicit: str | None = None, environ: dict[str, str] | None = None) -> Path:
    """--config, else $IDM_UPGRADE_CONFIG, else ./idm-upgrade.toml."""
    env = os.environ if environ is None else environ
    return Path(explicit or env.get(ENV_PATH) or DEFAULT_PATH)


def _describe(error: dict) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key (check the spelling; every key is listed in idm-upgrade.example.toml)"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message}"


def parse_config(data: dict) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors(include_url=False)]
        # the cross-references are checked together and come as several lines, each naming its own key
        raise ConfigError([part.removeprefix("(top level): ") for line in lines for part in line.split("\n")]) from None


def load_config(explicit: str | None = None) -> Config:
    """Read and validate the configuration file; raises ConfigError with one line per problem."""
    path = config_path(explicit)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [
                f"{path}: configuration file not found (pass --config PATH or set {ENV_PATH}; "
                "start from idm-upgrade.example.toml)"
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration file ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    return parse_config(data)
