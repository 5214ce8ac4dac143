"""Typed facts: the JSON each steps/ps script writes, and what one step records for the next.

One naming convention: the scripts write camelCase (PowerShell's habit); every model reads that by its
alias and is stored and used in snake_case. A document that does not fit its model is a clear
``bad output`` error naming the script and the field, never a KeyError or AttributeError further on.
Facts written by an older version (camelCase, in the database) still read, by alias.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from bot.systems.winrm import BadOutput


class Facts(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    @classmethod
    def from_script(cls, host: str, script: str, data: Any) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "(the document)"
            raise BadOutput(host, f"{script}: bad output: {field}: {first['msg']}") from None

    @classmethod
    def stored(cls, data: dict[str, Any] | None) -> Self | None:
        """A step's recorded facts, or None when that step recorded none (or not in this shape)."""
        if not data:
            return None
        try:
            return cls.model_validate(data)
        except ValidationError:
            return None

    def dump(self) -> dict[str, Any]:
        """For the step's record: snake_case, JSON types, and only what was read or set (no defaults)."""
        return self.model_dump(mode="json", exclude_unset=True)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object" if isinstance(value, dict) else "text"


def _lines(value: Any) -> list[str]:
    """Lines of text, however ConvertTo-Json wrote them. Windows PowerShell 5.1 writes ``null`` for an empty
    array, the bare element for a one-element array, and a line from Get-Content as an object whose text is its
    ``value`` (the line keeps its PSPath/PSDrive NoteProperties). Anything else is not a line: a clear error."""
    if value is None:
        return []
    lines = []
    for number, item in enumerate(value if isinstance(value, list) else [value], start=1):
        text = item.get("value") if isinstance(item, dict) else item
        if not isinstance(text, str):
            what = "an object without a text value" if isinstance(item, dict) else _json_kind(item)
            raise ValueError(f"line {number} is {what}, not text")
        lines.append(text)
    return lines


TextLines = Annotated[list[str], BeforeValidator(_lines)]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What Windows PowerShell 5.1's ConvertTo-Json writes for a DateTime: "\/Date(ms since 1970 UTC)\/", the
# offset after the milliseconds (if any) being only the zone it was shown in.
_MS_DATE = re.compile(r"\\?/Date\((-?\d{1,20})(?:[+-]\d{4})?\)\\?/")


def _from_ms_date(value: Any) -> Any:
    """A 5.1 "/Date(ms)/" as a UTC datetime; Get-Date's (which carries a DisplayHint) is an object whose
    ``value`` is that text. Anything else is left for the datetime or str validation that follows."""
    text = value.get("value") if isinstance(value, dict) else value
    match = _MS_DATE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        return value
    try:
        return _EPOCH + timedelta(milliseconds=int(match.group(1)))
    except OverflowError:
        raise ValueError(f"date out of range: {text}") from None


def _utc(value: datetime) -> datetime:
    # A time without its zone could be any zone, and comparing it with an aware one raises later.
    if value.utcoffset() is None:
        raise ValueError("a time must carry its timezone (the scripts write UTC with a Z)")
    return value.astimezone(UTC)


def _iso_from_ms_date(value: Any) -> Any:
    when = _from_ms_date(value)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(when, datetime) else when


# A moment, as the scripts write it ("YYYY-MM-DDTHH:MM:SSZ") or as 5.1 writes a DateTime; always UTC.
Instant = Annotated[datetime, BeforeValidator(_from_ms_date), AfterValidator(_utc)]
# A moment kept as the scripts' text, "YYYY-MM-DDTHH:MM:SSZ" (a 5.1 "/Date(ms)/" is rewritten to that).
IsoTime = Annotated[str, BeforeValidator(_iso_from_ms_date)]


# -- preflight.ps1 (also read again by install and reboot) -------------------------------------------


class OsInfo(Facts):
    caption: str | None = None
    version: str | None = None


class Product(Facts):
    """product.ps1, and the connector part of preflight.ps1: the Programs & Features entry."""

    installed: bool
    display_name: str | None = None
    version: str | None = None


class ServiceState(Facts):
    name: str | None = None
    exists: bool
    state: str | None = None
    start_mode: str | None = None


class Java(Facts):
    home: str | None = None
    version: str | None = None


class Disk(Facts):
    drive: str | None = None
    free_bytes: int | None = None


class PendingReboot(Facts):
    any: bool
    reasons: TextLines = Field(default_factory=list)


class Machine(Facts):
    manufacturer: str | None = None
    model: str | None = None
    virtual: bool = False


class HostFacts(Facts):
    """preflight.ps1: every fact DESIGN.md lists, in one round trip."""

    computer_name: str | None = None
    os: OsInfo = Field(default_factory=OsInfo)
    connector: Product
    service: ServiceState
    java: Java
    disk: Disk
    pending_reboot: PendingReboot
    machine: Machine = Field(default_factory=Machine)
    boot_time: Instant


class BootTime(Facts):
    boot_time: Instant


# -- stage and install ------------------------------------------------------------------------------


class FileHash(Facts):
    exists: bool
    path: str
    sha256: str | None = None
    bytes: int | None = None


class Staged(Facts):
    path: str
    sha256: str
    bytes: int | None = None
    reused: bool = False
    seconds: float | None = None


class InstallStarted(Facts):
    """install_start.ps1: the detached wrapper, where it writes its own failure, the service's account before."""

    token: str
    pid: int | None = None
    started_at: IsoTime | None = None
    log: str | None = None
    exit_file: str | None = None
    already_started: bool = False
    error_file: str | None = None
    start_name_before: str | None = None


class InstallStatus(Facts):
    known: bool
    token: str | None = None
    pid: int | None = None
    started_at: IsoTime | None = None
    running: bool = False
    exit_code: int | None = None
    log_tail: TextLines = Field(default_factory=list)
    msi_busy: bool = False
    msi_status: int | None = None  # the verbose log's "Installation success or error status: N"
    launch_error: str | None = None  # the wrapper could not start the installer
    start_name: str | None = None  # the account the connector service runs as, now
    start_name_before: str | None = None

    @property
    def finished(self) -> bool:
        return self.exit_code is not None or not self.running


class InstallFacts(Facts):
    """What the install step records, for the reboot and verify steps and the thread."""

    exit_code: int | None
    attempts: int
    seconds: float
    log: str
    java_before: Java
    java_after: Java | None = None
    jre_changed: bool = False
    reboot_required: bool = False
    pending_reboot_after: list[str] = Field(default_factory=list)
    rebooted_by_installer: bool = False
    setup_exit_code: int | None = None
    msi_status: int | None = None
    exit_code_note: str | None = None  # why exit_code is not setup.exe's own, when it is not
    service_account_before: str | None = None
    service_account_after: str | None = None


# -- service and reboot -----------------------------------------------------------------------------


class ServiceStatus(Facts):
    exists: bool
    state: str | None = None
    start_mode: str | None = None
    start_error: str | None = None
    log_tail: TextLines = Field(default_factory=list)


class RebootIssued(Facts):
    issued: bool = False
    already_scheduled: bool = False
    already_rebooted: bool = False
    shutdown_exit_code: int | None = None
    boot_time: Instant | None = None
    requested_at: Instant | None = None  # the host's clock when the reboot was asked (reboot.ps1's marker)
    connection_dropped: bool = False
