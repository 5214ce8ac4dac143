"""What a script handler returns, and helpers every handler module shares.

Kept apart from the handler modules so `ps_handlers` (which holds the `HANDLERS` registry) and
`upgrade_handlers` can both use them without importing each other in a circle.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox import script_text
from sandbox.host import HostState, InstalledProduct


@dataclass(frozen=True)
class BackgroundProcess:
    """A process a command started outside its WinRM shell (`Win32_Process.Create`).

    It outlives the command and the shell, but not a reboot: the server runs it for `duration_seconds`
    (simulated), then calls `on_exit`; if the host goes down first it calls `on_kill` instead.
    """

    name: str
    duration_seconds: float
    on_exit: Callable[[], None]
    on_kill: Callable[[], None]
    reboot_after_seconds: float | None = None  # the process itself restarts the host after exiting (1641)


@dataclass(frozen=True)
class HandlerResult:
    stdout: Any = ""  # a str is written as is; anything else as JSON (ConvertTo-Json -Compress)
    exit_code: int = 0
    stderr: str = ""  # plain text; the server wraps it in CLIXML as PowerShell does (unless stderr_plain)
    duration_seconds: float = 0.0  # simulated seconds before the command is Done
    on_complete: Callable[[], None] | None = None  # state changes applied when (if) it finishes
    reboot_after_seconds: float | None = None  # like `shutdown /r /t N`, counted from completion
    # stderr written with [Console]::Error.WriteLine (raw text) rather than as a PowerShell error record
    stderr_plain: bool = False
    process: BackgroundProcess | None = None  # started when the command is accepted; see BackgroundProcess


Handler = Callable[[HostState, Mapping[str, Any]], HandlerResult]


def script_error(message: str, *, exit_code: int = 1) -> HandlerResult:
    """A script that stopped on a terminating error (`throw` under ErrorActionPreference Stop)."""
    return HandlerResult(stdout="", exit_code=exit_code, stderr=message)


def script_exit(message: str, exit_code: int) -> HandlerResult:
    """A script that wrote `message` with [Console]::Error.WriteLine and then ran `exit N`."""
    return HandlerResult(stdout="", exit_code=exit_code, stderr=message, stderr_plain=True)


def missing_param(script: str, params: Mapping[str, Any], *names: str) -> HandlerResult | None:
    """`foreach ($k in ...) { if (-not $Params.$k) { throw "SCRIPT: $k is required" } }`."""
    for name in names:
        if not params.get(name):
            return script_error(f"{script}: {name} is required")
    return None


def like(value: str | None, pattern: str) -> bool:
    """PowerShell's -like: case-insensitive, whole string, with * ? [a-z] wildcards and ` escapes."""
    if value is None:
        return False
    regex, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "`" and i + 1 < len(pattern):
            i += 1
            regex.append(re.escape(pattern[i]))
        elif ch == "*":
            regex.append(".*")
        elif ch == "?":
            regex.append(".")
        elif ch == "[" and (end := pattern.find("]", i + 1)) > i + 1:
            regex.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end
        else:
            regex.append(re.escape(ch))
        i += 1
    return re.fullmatch("".join(regex), value, re.IGNORECASE | re.DOTALL) is not None


def find_product(state: HostState, pattern: str) -> InstalledProduct | None:
    """As product.ps1/preflight.ps1 choose: of the Uninstall entries whose DisplayName is -like pattern and
    that are not SystemComponent = 1, the highest DisplayVersion by its leading dotted numbers (native view
    first among equals)."""
    products = sorted(state.products(), key=lambda product: product.wow64)
    if not script_text.picks_highest_version():
        # A script without that selection keeps the first match, SystemComponent entries included.
        return next((p for p in products if like(p.display_name, pattern)), None)
    matching = [p for p in products if like(p.display_name, pattern) and not p.system_component]
    return max(matching, key=lambda p: version_key(p.version), default=None)


def version_key(version: str | None) -> tuple[int, ...]:
    """The scripts' sort key: the leading dotted numbers of DisplayVersion ("19.03.0.1 Build 123" -> 19.03.0.1)."""
    match = re.match(r"\s*\d+(?:\.\d+)*", version or "")
    return tuple(int(part) for part in match.group().strip().split(".")) if match else ()


def iso_utc(state: HostState) -> str:
    """LastBootUpTime as the scripts print it: `.ToUniversalTime().ToString('s') + 'Z'`."""
    return state.boot_time.strftime("%Y-%m-%dT%H:%M:%SZ")


def ps_int(value: Any) -> int:
    """PowerShell's [int] cast of a JSON value: null is 0, numbers round half to even, strings parse."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return round(value)
    return round(float(str(value).strip()))
