"""The text of the script a handler is answering, for handlers whose answer depends on how it is written.

A handler normally answers from its parameters alone. A few behaviours of Windows PowerShell 5.1 depend
on the script's own code (field notes §8): `Get-Content` lines serialise as objects unless the script
unwraps them, and a script that builds code from a value runs that code. `sandbox.powershell` sets the
text around each handler call; `current()` is "" outside one.
"""

from __future__ import annotations

import re
from contextvars import ContextVar, Token

_SCRIPT: ContextVar[str] = ContextVar("sandbox_script_text", default="")

# `Get-Content ... -Tail n` piped on to something that makes plain strings of its lines.
_UNWRAPPED_TAIL = re.compile(
    r"Get-Content\b[^|\r\n]*-Tail\b[^|\r\n]*\|\s*ForEach-Object\s*\{\s*(?:\[string\]\s*\$_|\$_\.PSObject\.BaseObject)\s*\}",
    re.IGNORECASE,
)


# The Uninstall-entry selection product.ps1 and preflight.ps1 make: SystemComponent entries out, sorted by
# version, the highest first.
_SKIPS_SYSTEM_COMPONENTS = re.compile(r"\$_\.SystemComponent\s+-ne\s+1", re.IGNORECASE)
_SORTS_BY_VERSION = re.compile(r"Sort-Object\b[^\r\n]*DisplayVersion[^\r\n]*-Descending", re.IGNORECASE)


# `... | ForEach-Object { if ($w -gt 0 -and $_.Length -gt $w) { $_.Substring(0, $w) + ' [' + ... ' characters cut]' } ...`
_CUTS_LONG_LINES = re.compile(
    r"\$_\.Length\s+-gt\s+\$w\s*\)\s*\{\s*\$_\.Substring\(\s*0\s*,\s*\$w\s*\)\s*\+\s*' \['\s*\+\s*\(\$_\.Length\s*-\s*\$w\)"
    r"\s*\+\s*' characters cut\]'",
    re.IGNORECASE,
)


def current() -> str:
    return _SCRIPT.get()


def running(script: str) -> Token[str]:
    """Set the script text for one handler call; pass the result to `done`."""
    return _SCRIPT.set(script)


def done(token: Token[str]) -> None:
    _SCRIPT.reset(token)


def unwraps_get_content_tail(script: str | None = None) -> bool:
    """Whether the script turns `Get-Content -Tail` lines into plain strings before ConvertTo-Json (outside a
    handler call, with no script text, as the current scripts do)."""
    text = current() if script is None else script
    return not text or _UNWRAPPED_TAIL.search(text) is not None


def get_content_lines(path: str, lines: list[str]) -> list[object]:
    """What `@(Get-Content -LiteralPath path -Tail n)` is to ConvertTo-Json on Windows PowerShell 5.1:
    each line a string with the provider's NoteProperties, serialised as an object (PowerShell issue
    6458). A script that unwraps them gets the plain strings."""
    if unwraps_get_content_tail():
        return list(lines)
    parent, _, child = path.replace("/", "\\").rpartition("\\")
    drive = path[:1].upper() if path[1:2] == ":" else "C"
    provider = "Microsoft.PowerShell.Core\\FileSystem"
    return [
        {
            "value": line,
            "PSPath": f"{provider}::{path}",
            "PSParentPath": f"{provider}::{parent}",
            "PSChildName": child,
            "PSDrive": {"CurrentLocation": "", "Name": drive, "Root": f"{drive}:\\", "Description": ""},
            "PSProvider": {
                "ImplementingType": "Microsoft.PowerShell.Commands.FileSystemProvider",
                "Name": "FileSystem",
            },
            "ReadCount": number,
        }
        for number, line in enumerate(lines, start=1)
    ]


def picks_highest_version(script: str | None = None) -> bool:
    """Whether the script picks the highest-version Uninstall entry that is not a SystemComponent (outside
    a handler call, with no script text, the handler answers as the current scripts do)."""
    text = current() if script is None else script
    if not text:
        return True
    return _SKIPS_SYSTEM_COMPONENTS.search(text) is not None and _SORTS_BY_VERSION.search(text) is not None


def cut_long_lines(lines: list[str], width: int, script: str | None = None) -> list[str]:
    """What the scripts' LineChars cut makes of log lines: a line over ``width`` characters is its first
    ``width`` and a note. Only when the script cuts (outside a handler call, as the current scripts do)."""
    text = current() if script is None else script
    if width <= 0 or (text and _CUTS_LONG_LINES.search(text) is None):
        return list(lines)
    return [f"{line[:width]} [{len(line) - width} characters cut]" if len(line) > width else line for line in lines]
