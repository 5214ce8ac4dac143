"""What a Windows host makes of a WinRS command line: cmd.exe, then powershell.exe, then the script.

The host reproduces each layer's behaviour where the bot can trip on it: cmd.exe's 8,191-character limit
on the command line (stdin is not limited), PowerShell's refusal of a badly encoded command, the code page
output is written in (the shell's, 437 unless the client asked for another, or UTF-8 once the program set
`[Console]::OutputEncoding`), its CLIXML-serialised stderr (including the progress record a program gets
when it calls a cmdlet before `$ProgressPreference = 'SilentlyContinue'`), PowerShell's rule for where a
single-quoted string ends (at any of five quote characters), and an unknown script failing as an unknown
command instead of quietly succeeding.

Two ways a script arrives, both as on Windows: pywinrm's `run_ps` puts it in the command line
(`powershell -EncodedCommand <script>`); the bot sends a short bootstrap there that reads its script from
stdin and runs it as one script block (`StdinScript`: nothing runs until stdin ended).
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

# Every character PowerShell ends a single-quoted string at (CharExtensions.IsSingleQuote).
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
# The one line the executor may put before a script: preferences, then `$Params = '<json>' | ConvertFrom-Json`.
_PARAMS_START = re.compile(
    r"^\s*(?:\$(?:ErrorActionPreference|ProgressPreference)\s*=\s*'\w+'\s*;\s*)*\$Params\s*=\s*(?=["
    + SINGLE_QUOTES
    + "])",
    re.IGNORECASE,
)
_PARAMS_END = re.compile(r"^\s*\|\s*ConvertFrom-Json\s*$", re.IGNORECASE)
_MARKER = re.compile(r"^#\s*idm-upgrade:\s*(\S+)\s*$")
_PROGRESS_OFF = re.compile(r"\$ProgressPreference\s*=\s*''", re.IGNORECASE)  # on code with strings blanked
_PROGRESS_OFF_TEXT = re.compile(r"\$ProgressPreference\s*=\s*['\"]SilentlyContinue['\"]", re.IGNORECASE)
_CMDLET = re.compile(r"(?<![\w$.\-])[A-Za-z]+-[A-Za-z][A-Za-z0-9]*\b")
_OUTPUT_UTF8 = re.compile(
    r"\[(?:System\.)?Console\]::OutputEncoding\s*=\s*(?:New-Object\s+(?:-TypeName\s+)?(?:System\.)?Text\.UTF8Encoding"
    r"|\[(?:System\.)?Text\.Encoding\]::UTF8|\[(?:System\.)?Text\.UTF8Encoding\]::new)",
    re.IGNORECASE,
)
_READS_STDIN = re.compile(r"OpenStandardInput\(\)|\[(?:System\.)?Console\]::In\b", re.IGNORECASE)
_RUNS_TEXT = re.compile(r"\[ScriptBlock\]::Create\(|Invoke-Expression|\biex\b", re.IGNORECASE)
_STDIN_UTF8 = re.compile(r"(?:StreamReader|InputEncoding)[^\n]*UTF8", re.IGNORECASE)

# powershell.exe switches that take a value (and their accepted abbreviations).
_VALUE_SWITCHES = ("executionpolicy", "ep", "outputformat", "of", "inputformat", "if", "windowstyle", "version")


@dataclass(frozen=True)
class Execution:
    """One command as the host ran it: which script, with which parameters, and what it produced."""

    result: HandlerResult
    script: str | None = None  # the marker name, when the command was a marked script
    params: dict[str, Any] = field(default_factory=dict)
    powershell: bool = True  # stderr came from PowerShell (CLIXML) rather than cmd.exe (plain text)
    progress_noise: bool = False  # a cmdlet ran before progress was silenced
    output_codepage: int | None = None  # the program set [Console]::OutputEncoding (65001); else the shell's

    def stdout_bytes(self, codepage: int) -> bytes:
        out = self.result.stdout
        text = out if isinstance(out, str) else json.dumps(out, separators=(",", ":"), ensure_ascii=False)
        if text and not text.endswith("\n"):
            text += "\r\n"
        return self._encode(text, codepage)

    def stderr_bytes(self, codepage: int) -> bytes:
        plain = self.result.stderr + "\r\n" if self.result.stderr else ""
        if not self.powershell:
            return self._encode(plain, codepage)
        if self.result.stderr_plain:
            # [Console]::Error.WriteLine goes straight to the pipe; only PowerShell's own records are CLIXML.
            # A progress record written first opened the document, so the text lands inside it.
            return self._encode(clixml("", progress=True, inside=plain) if self.progress_noise else plain, codepage)
        if not self.result.stderr and not self.progress_noise:
            return b""
        return self._encode(clixml(self.result.stderr, progress=self.progress_noise), codepage)

    def _encode(self, text: str, codepage: int) -> bytes:
        # Redirected output uses the console code page WinRS set (437 unless the client asked for another)
        # unless the program changed [Console]::OutputEncoding: characters outside it arrive as '?', as
        # they do from a real host.
        return text.encode(_python_codec(self.output_codepage or codepage), errors="replace")


@dataclass(frozen=True)
class StdinScript:
    """powershell.exe running a bootstrap that reads all of stdin and runs it as one script block."""

    bootstrap: str

    def run(self, data: bytes, codepage: int, state: HostState, handlers: Mapping[str, Handler]) -> Execution:
        # A bootstrap that reads stdin through a UTF-8 reader gets UTF-8; else the console's input code page.
        codec = "utf-8" if _STDIN_UTF8.search(self.bootstrap) else _python_codec(codepage)
        return run_script(data.decode(codec, errors="replace"), state, handlers, preamble=self.bootstrap)


def run_command_line(command_line: str, state: HostState, handlers: Mapping[str, Handler]) -> Execution | StdinScript:
    """What the host runs for a command line: an Execution now, or a StdinScript waiting for its stdin."""
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
    code = _code_only(script)
    if _READS_STDIN.search(code) and ".readtoend()" in code.lower() and _RUNS_TEXT.search(code):
        return StdinScript(script)
    return run_script(script, state, handlers)


def run_script(script: str, state: HostState, handlers: Mapping[str, Handler], *, preamble: str = "") -> Execution:
    """Run a script's text; `preamble` is code that ran before it in the same session (the bootstrap)."""
    lines = script.lstrip("\ufeff").splitlines()
    program = preamble + "\n" + script
    facts: dict[str, Any] = {
        "progress_noise": _progress_noise(program),
        "output_codepage": 65001 if _OUTPUT_UTF8.search(_code_only(program)) else None,
    }
    params: dict[str, Any] = {}
    if lines and _PARAMS_START.match(lines[0]):
        parsed = _params_line(lines[0])
        if isinstance(parsed, HandlerResult):
            return Execution(parsed, **facts)
        params, lines = parsed, lines[1:]
    marker = _MARKER.match(lines[0]) if lines else None
    name = marker.group(1) if marker else None
    handler = handlers.get(name) if name else None
    if handler is None:
        first_word = next((ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
        return Execution(_not_recognized(name or first_word, sorted(handlers)), name, params, **facts)
    token = script_text.running(script)  # some answers depend on how the script is written (5.1)
    try:
        result = handler(state, params)
    except Exception as exc:
        # A bug in a handler must not look like a script that worked; show it as a script failure.
        log.exception("sandbox handler %r failed", name)
        result = script_error(f"{type(exc).__name__}: {exc}")
    finally:
        script_text.done(token)
    return Execution(result, name, params, **facts)


def _params_line(line: str) -> dict[str, Any] | HandlerResult:
    """`$Params = '<json>' | ConvertFrom-Json`, read as PowerShell reads it: the string ends at the first
    single-quote character (any of five) that is not doubled; a doubled pair is its second character."""
    start = _PARAMS_START.match(line)
    assert start is not None
    i, value = start.end() + 1, []
    while i < len(line):
        if line[i] in SINGLE_QUOTES:
            if i + 1 < len(line) and line[i + 1] in SINGLE_QUOTES:
                value.append(line[i + 1])
                i += 2
                continue
            break
        value.append(line[i])
        i += 1
    else:
        return script_error(
            "The string is missing the terminator: '.\n    + FullyQualifiedErrorId : TerminatorExpectedAtEndOfString"
        )
    rest = line[i + 1 :]
    if not _PARAMS_END.match(rest):
        # the string closed early: what follows is code, and not valid code
        token = rest.strip().split(" ", 1)[0]
        return script_error(
            f"Unexpected token '{token}' in expression or statement.\n"
            "    + CategoryInfo          : ParserError: (:) [], ParentContainsErrorRecordException\n"
            "    + FullyQualifiedErrorId : UnexpectedToken"
        )
    try:
        params = json.loads("".join(value))
    except json.JSONDecodeError as exc:
        return script_error(f"ConvertFrom-Json : Invalid JSON primitive: {exc.msg}.")
    if not isinstance(params, dict):
        return script_error("$Params is not a JSON object.")
    return params


def _progress_noise(program: str) -> bool:
    """Whether PowerShell writes its "Preparing modules for first use." progress record: a cmdlet runs
    before progress is silenced (a program that never silences it counts as noisy)."""
    code = _code_only(program)
    silenced = _PROGRESS_OFF.search(code)
    if silenced is None or _PROGRESS_OFF_TEXT.search(program) is None:
        return True
    cmdlet = _CMDLET.search(code)
    return cmdlet is not None and cmdlet.start() < silenced.start()


def _code_only(text: str) -> str:
    """The text with comments removed and every string literal emptied ('' or ""), so words inside data
    (a JSON value, a message) are not mistaken for cmdlets."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("<#", i):
            end = text.find("#>", i + 2)
            i = n if end < 0 else end + 2
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith(("@'\n", "@'\r\n", '@"\n', '@"\r\n'), i):
            closer = "\n" + text[i + 1] + "@"
            end = text.find(closer, i + 2)
            out.append("''")
            i = n if end < 0 else end + len(closer)
        elif ch in SINGLE_QUOTES:
            i += 1
            while i < n and not (text[i] in SINGLE_QUOTES and not (i + 1 < n and text[i + 1] in SINGLE_QUOTES)):
                i += 2 if text[i] in SINGLE_QUOTES else 1
            out.append("''")
            i += 1
        elif ch in '"\u201c\u201d\u201e':
            i += 1
            while i < n and not (
                text[i] in '"\u201c\u201d\u201e' and not (i + 1 < n and text[i + 1] in '"\u201c\u201d\u201e')
            ):
                i += 2 if text[i] == "`" or text[i] in '"\u201c\u201d\u201e' else 1
            out.append('""')
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


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


def clixml(error_text: str, *, progress: bool = False, inside: str = "") -> str:
    """stderr as powershell.exe writes it when its output is redirected: `#< CLIXML` and serialised records.

    `inside`: raw text written to stderr while the document was open (after the progress record)."""
    parts = [f'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="{_CLIXML_NS}">']
    if progress:
        parts.append(_PROGRESS_RECORD)
    parts.append(inside)
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
