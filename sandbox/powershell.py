"""What a Windows host makes of a WinRS command line: cmd.exe, then powershell.exe, then the script.

pywinrm's `run_ps` sends `powershell -encodedcommand <base64 of UTF-16LE>` through cmd.exe. The host
reproduces each layer's behaviour where the bot can trip on it: cmd.exe's 8,191-character limit,
PowerShell's refusal of a badly encoded command, its CLIXML-serialised stderr (including the progress
noise a script gets when it forgets `$ProgressPreference = 'SilentlyContinue'`), and an unknown script
failing as an unknown command instead of quietly succeeding.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import logging
import ntpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from sandbox import script_text
from sandbox.handler_base import Handler, HandlerResult, script_error
from sandbox.host import HostState

log = logging.getLogger(__name__)

CMD_MAX_COMMAND_LINE = 8191  # cmd.exe's limit, in characters
CMD_TOO_LONG = "The command line is too long."

# The one line the executor may put before a script: `$Params = '<json, quotes doubled>' | ConvertFrom-Json`
_PARAMS_LINE = re.compile(r"^\s*\$Params\s*=\s*'((?:[^']|'')*)'\s*\|\s*ConvertFrom-Json\s*$", re.IGNORECASE)
_MARKER = re.compile(r"^#\s*idm-upgrade:\s*(\S+)\s*$")
_PROGRESS_OFF = re.compile(r"\$ProgressPreference\s*=\s*['\"]SilentlyContinue['\"]", re.IGNORECASE)

# powershell.exe switches that take a value (and their accepted abbreviations).
_VALUE_SWITCHES = ("executionpolicy", "ep", "outputformat", "of", "inputformat", "if", "windowstyle", "version")


@dataclass(frozen=True)
class Execution:
    """One command as the host ran it: which script, with which parameters, and what it produced."""

    result: HandlerResult
    script: str | None = None  # the marker name, when the command was a marked script
    params: dict[str, Any] = field(default_factory=dict)
    powershell: bool = True  # stderr came from PowerShell (CLIXML) rather than cmd.exe (plain text)
    progress_noise: bool = False  # the script left progress records on

    def stdout_bytes(self, codepage: int) -> bytes:
        out = self.result.stdout
        text = out if isinstance(out, str) else json.dumps(out, separators=(",", ":"), ensure_ascii=False)
        if text and not text.endswith("\n"):
            text += "\r\n"
        # Redirected PowerShell output uses the console code page WinRS set (437 unless the client asked
        # for another): characters outside it arrive as '?', as they do from a real host.
        return text.encode(_python_codec(codepage), errors="replace")

    def stderr_bytes(self) -> bytes:
        plain = (self.result.stderr + "\r\n").encode() if self.result.stderr else b""
        if not self.powershell:
            return plain
        if self.result.stderr_plain:
            # [Console]::Error.WriteLine goes straight to the pipe; only PowerShell's own records are CLIXML.
            return plain + (clixml("", progress=True).encode() if self.progress_noise else b"")
        if not self.result.stderr and not self.progress_noise:
            return b""
        return clixml(self.result.stderr, progress=self.progress_noise).encode()


def run_command_line(command_line: str, state: HostState, handlers: Mapping[str, Handler]) -> Execution:
    if len(command_line) > CMD_MAX_COMMAND_LINE:
        return Execution(HandlerResult(exit_code=1, stderr=CMD_TOO_LONG), powershell=False)
    tokens = command_line.split()
    if not tokens or ntpath.basename(tokens[0].strip('"')).lower() not in ("powershell", "powershell.exe"):
        term = tokens[0] if tokens else ""
        message = f"'{term}' is not recognized as an internal or external command,\r\noperable program or batch file."
        return Execution(HandlerResult(exit_code=9009, stderr=message), powershell=False)
    script = _script_text(tokens[1:])
    if script is None:
        # powershell.exe's own message and exit code (-196608) for an undecodable -EncodedCommand.
        message = (
            "Cannot process the command because the value specified with -EncodedCommand is not properly "
            "encoded. The value must be Base64 encoded."
        )
        return Execution(HandlerResult(exit_code=-196608, stderr=message), powershell=False)
    return run_script(script, state, handlers)


def run_script(script: str, state: HostState, handlers: Mapping[str, Handler]) -> Execution:
    lines = script.lstrip("\ufeff").splitlines()
    params: dict[str, Any] = {}
    if lines and (match := _PARAMS_LINE.match(lines[0])):
        lines = lines[1:]
        try:
            params = json.loads(match.group(1).replace("''", "'"))
        except json.JSONDecodeError as exc:
            return Execution(script_error(f"ConvertFrom-Json : Invalid JSON primitive: {exc.msg}."))
        if not isinstance(params, dict):
            return Execution(script_error("$Params is not a JSON object."))
    marker = _MARKER.match(lines[0]) if lines else None
    name = marker.group(1) if marker else None
    noise = _PROGRESS_OFF.search(script) is None
    handler = handlers.get(name) if name else None
    if handler is None:
        first_word = next((ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
        return Execution(_not_recognized(name or first_word, sorted(handlers)), name, params, progress_noise=noise)
    token = script_text.running(script)  # some answers depend on how the script is written (5.1)
    try:
        result = handler(state, params)
    except Exception as exc:
        # A bug in a handler must not look like a script that worked; show it as a script failure.
        log.exception("sandbox handler %r failed", name)
        result = script_error(f"{type(exc).__name__}: {exc}")
    finally:
        script_text.done(token)
    return Execution(result, name, params, progress_noise=noise)


def _script_text(args: list[str]) -> str | None:
    """The script PowerShell would run: the -EncodedCommand payload, else the remaining words."""
    i = 0
    while i < len(args):
        switch = args[i].lstrip("-/").lower()
        if switch in ("e", "ec") or (len(switch) >= 2 and "encodedcommand".startswith(switch)):
            if i + 1 >= len(args):
                return None
            try:
                return base64.b64decode(args[i + 1], validate=True).decode("utf-16-le")
            except (binascii.Error, UnicodeDecodeError):
                return None
        if switch in ("command", "c"):
            return " ".join(args[i + 1 :])
        if not args[i].startswith(("-", "/")):
            return " ".join(args[i:])
        i += 2 if switch in _VALUE_SWITCHES else 1
    return ""


def _not_recognized(term: str, known: list[str]) -> HandlerResult:
    return script_error(
        f"The term '{term}' is not recognized as the name of a cmdlet, function, script file, or operable "
        "program. Check the spelling of the name, or if a path was included, verify that the path is correct "
        "and try again.\n"
        f"    + CategoryInfo          : ObjectNotFound: ({term}:String) [], CommandNotFoundException\n"
        "    + FullyQualifiedErrorId : CommandNotFoundException\n"
        f"(sandbox host: no handler for this script; handlers exist for: {', '.join(known) or 'none'})"
    )


_CLIXML_NS = "http://schemas.microsoft.com/powershell/2004/04"
# The record every cold PowerShell session emits while it loads modules, unless progress is silenced.
_PROGRESS_RECORD = (
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for '
    "first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR>"
    "</MS></Obj>"
)


def clixml(error_text: str, *, progress: bool = False) -> str:
    """stderr as powershell.exe writes it when its output is redirected: `#< CLIXML` and serialised records."""
    parts = [f'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="{_CLIXML_NS}">']
    if progress:
        parts.append(_PROGRESS_RECORD)
    for line in error_text.splitlines() if error_text else []:
        parts.append(f'<S S="Error">{escape(_clixml_escape(line))}_x000D__x000A_</S>')
    parts.append("</Objs>")
    return "".join(parts)


def _clixml_escape(text: str) -> str:
    # CLIXML writes control characters as _xHHHH_ (the same escaping as XmlConvert.EncodeName).
    return "".join(f"_x{ord(ch):04X}_" if ord(ch) < 0x20 else ch for ch in text)


def _python_codec(codepage: int) -> str:
    name = "utf-8" if codepage == 65001 else f"cp{codepage}"
    try:
        codecs.lookup(name)
    except LookupError:
        return "cp437"
    return name
