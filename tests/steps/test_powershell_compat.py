"""Every steps/ps script runs on Windows PowerShell 5.1 and 4.0 (DESIGN.md section 3, field-notes section 8).

Checked on the tree-sitter parse of each script, on whatever the scripts are when the test runs:
- every cmdlet exists in both 5.1 and 4.0 (tests/data/windows-powershell-commands.json, compacted from
  PSScriptAnalyzer's desktop-5.1.14393.206 and desktop-4.0 settings), and every named parameter is one of its
  parameters by PowerShell's unique-prefix rule, or a common parameter that 4.0 has too;
- no PowerShell 7 syntax: pipeline chains (``&&``, ``||``), ``??``, ``?.``, the ternary;
- Get-Content's output is never serialized as 5.1 serializes it (an object per line with PSPath, PSDrive, ...):
  a script that writes JSON unwraps every Get-Content result to plain strings first.
Each check has a negative test on a small bad snippet, so a check that can no longer fail is noticed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tree_sitter import Node
from tree_sitter_language_pack import get_parser

PS_DIR = Path(__file__).resolve().parents[2] / "steps" / "ps"
SCRIPTS = sorted(PS_DIR.glob("*.ps1"))
# A copy kept with the tests (from the field notes' reference, MIT-licensed PSScriptAnalyzer data), so CI checks it.
REFERENCE_FILE = Path(__file__).resolve().parents[1] / "data" / "windows-powershell-commands.json"
VERSIONS = ("5.1", "4.0")

# Common parameters every cmdlet takes, and their aliases. -InformationAction/-InformationVariable are 5.0+:
# left out, because 4.0 (Server 2012 R2) must work too.
COMMON_PARAMETERS = {
    "Verbose": "vb",
    "Debug": "db",
    "ErrorAction": "ea",
    "WarningAction": "wa",
    "ErrorVariable": "ev",
    "WarningVariable": "wv",
    "OutVariable": "ov",
    "OutBuffer": "ob",
    "PipelineVariable": "pv",
}
# Aliases the scripts may use, resolved so their parameters are checked too.
RESOLVED_ALIASES = {"%": "ForEach-Object", "foreach": "ForEach-Object", "?": "Where-Object", "where": "Where-Object"}
# Built-in aliases that are not Verb-Noun and would otherwise pass for native programs: spell the cmdlet out.
# fmt: off
OTHER_ALIASES = {
    "ac", "cat", "cd", "chdir", "clc", "clear", "cli", "clp", "cls", "cpi", "cpp", "cp", "copy", "curl", "cvpa",
    "del", "diff", "dir", "echo", "epal", "epcsv", "erase", "etsn", "exsn", "fc", "fl", "ft", "fw", "gal",
    "gbp", "gc", "gci", "gcm", "gcs", "gdr", "ghy", "gi", "gjb", "gl", "gm", "gmo", "gp", "gps", "group", "gsn",
    "gsv", "gu", "gv", "gwmi", "h", "history", "icm", "iex", "ihy", "ii", "ipal", "ipcsv", "ipmo", "irm", "ise",
    "iwmi", "iwr", "kill", "lp", "ls", "man", "md", "measure", "mi", "mkdir", "mount", "move", "mp", "mv", "nal",
    "ndr", "ni", "nmo", "nsn", "nv", "ogv", "oh", "popd", "ps", "pushd", "pwd", "r", "rbp", "rcjb", "rd", "rdr",
    "ren", "ri", "rjb", "rm", "rmdir", "rmo", "rni", "rnp", "rp", "rsn", "rv", "rvpa", "rwmi", "sajb", "sal", "saps",
    "sasv", "sbp", "sc", "select", "set", "shcm", "si", "sl", "sleep", "sls", "sort", "sp", "spjb", "spps", "spsv",
    "start", "sv", "swmi", "tee", "trcm", "type", "wget", "wjb", "write",
}
# fmt: on
VERB_NOUN = re.compile(r"^[A-Za-z]+-[A-Za-z][A-Za-z0-9]*$")
STRING_NODES = {
    "string_literal",
    "expandable_string_literal",
    "expandable_here_string_literal",
    "verbatim_string_characters",
    "verbatim_here_string_characters",
    "comment",
}


def load_reference() -> dict[str, dict[str, list[str]]]:
    """{version: {cmdlet name lowercased: its parameters}}."""
    data = json.loads(REFERENCE_FILE.read_text())
    return {v: {name.lower(): entry["parameters"] for name, entry in data[v]["commands"].items()} for v in VERSIONS}


REFERENCE = load_reference()


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node: Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def line(node: Node) -> int:
    return node.start_point[0] + 1


def parse(source: str) -> Node:
    return get_parser("powershell").parse(source.encode("utf-8")).root_node


# -- cmdlets and parameters ---------------------------------------------------------------------------


def command_name(command: Node) -> str | None:
    """The name a command node invokes, or None when it is computed (``& $exe``)."""
    for child in command.named_children:
        if child.type == "command_name":
            return text(child)
        if child.type == "foreach_command":
            # This grammar gives ForEach-Object/%/foreach a node of its own that takes no -Parameter (one there
            # is a parse error, which test_powershell_scripts.py fails on)
            return "ForEach-Object"
    return None


def parameters(command: Node) -> Iterator[Node]:
    for elements in (c for c in command.named_children if c.type == "command_elements"):
        yield from (c for c in elements.named_children if c.type == "command_parameter")


def parameter_matches(given: str, declared: list[str]) -> list[str]:
    """PowerShell's rule: an exact name (or alias), else the one parameter the given text is a prefix of."""
    names = {**{p.lower(): p for p in declared}, **{p.lower(): p for p in COMMON_PARAMETERS}}
    names.update({alias: p for p, alias in COMMON_PARAMETERS.items()})
    wanted = given.lower()
    if wanted in names:
        return [names[wanted]]
    return sorted({p for key, p in names.items() if key.startswith(wanted) and key not in COMMON_PARAMETERS.values()})


def compatibility_findings(source: str) -> list[str]:
    """What in this script would not run on Windows PowerShell 5.1 and 4.0."""
    root = parse(source)
    functions = {
        text(name).lower()
        for node in walk(root)
        if node.type == "function_statement"
        for name in node.named_children
        if name.type == "function_name"
    }
    findings = []
    for command in (n for n in walk(root) if n.type == "command"):
        name = command_name(command)
        if name is None or name.lower() in functions:
            continue
        cmdlet = RESOLVED_ALIASES.get(name.lower(), name)
        if name.lower() in OTHER_ALIASES:
            findings.append(f"line {line(command)}: {name} is an alias: spell the cmdlet out")
            continue
        known = [v for v in VERSIONS if cmdlet.lower() in REFERENCE[v]]
        if not known:
            if VERB_NOUN.match(cmdlet):
                findings.append(f"line {line(command)}: {cmdlet} is not a cmdlet of Windows PowerShell 5.1 or 4.0")
            continue  # a native program (shutdown.exe, chcp): its arguments are its own
        if missing := [v for v in VERSIONS if v not in known]:
            findings.append(f"line {line(command)}: {cmdlet} does not exist in Windows PowerShell {missing[0]}")
            continue
        for parameter in parameters(command):
            given = text(parameter).lstrip("-").rstrip(":")
            if not given or given[0].isdigit():
                continue  # a negative number, not a parameter
            for version in VERSIONS:
                matches = parameter_matches(given, REFERENCE[version][cmdlet.lower()])
                if len(matches) != 1:
                    why = f"is ambiguous ({', '.join(matches)})" if matches else "does not exist"
                    findings.append(f"line {line(parameter)}: {cmdlet} -{given} {why} in Windows PowerShell {version}")
                    break
    return findings


# -- PowerShell 7 syntax ------------------------------------------------------------------------------


def code_only(root: Node, source: str) -> bytes:
    """The source with strings and comments blanked (same length), so their text cannot look like syntax."""
    raw = bytearray(source.encode("utf-8"))
    for node in walk(root):
        if node.type in STRING_NODES:
            raw[node.start_byte : node.end_byte] = re.sub(rb"[^\n]", b" ", raw[node.start_byte : node.end_byte])
    return bytes(raw)


def powershell_7_findings(source: str) -> list[str]:
    root = parse(source)
    code = code_only(root, source)
    findings = []
    for node in walk(root):
        if node.type == "pipeline_chain_tail":
            findings.append(f"line {line(node)}: {text(node).strip()} (a pipeline chain) is PowerShell 7 only")
        elif node.type == "ERROR" and b"?" in code[node.start_byte : node.end_byte]:
            # 5.1's grammar (and this one) has no ?? ?. or a ? b : c: they parse as errors around the ?
            findings.append(f"line {line(node)}: {text(node).strip()!r}: ??, ?. and ? : are PowerShell 7 only")
    # The same by text, in case a newer grammar parses them as nodes of their own
    for number, token in powershell_7_tokens(code):
        if not any(f.startswith(f"line {number}:") for f in findings):
            findings.append(f"line {number}: {token!r} is PowerShell 7 syntax")
    return findings


def powershell_7_tokens(code: bytes) -> list[tuple[int, str]]:
    """(line, token) for && || ?? ?. and a ternary ? in code whose strings and comments are blanked; a ? after
    a pipe or before a script block is Where-Object."""
    return [
        (code.count(b"\n", 0, m.start()) + 1, m.group().decode().strip())
        for m in re.finditer(rb"&&|\|\||\?\?|\?\.|(?<![|\s])\s+\?\s+(?!\{)", code)
    ]


# -- Get-Content's lines are unwrapped before they are serialized --------------------------------------

# Nodes that only pass their one inner value on (a parenthesis, an array subexpression, the grammar's chain of
# precedence levels around a single operand)
PASS_THROUGH = {
    "pipeline",
    "pipeline_chain",
    "parenthesized_expression",
    "sub_expression",
    "array_expression",
    "statement_list",
    "unary_expression",
    "array_literal_expression",
    "range_expression",
    "format_expression",
    "multiplicative_expression",
    "additive_expression",
    "comparison_expression",
    "bitwise_expression",
    "logical_expression",
}
# Cmdlets that hand the same objects on down the pipeline
PASSES_OBJECTS_ON = {"where-object", "select-object", "sort-object"}
UNWRAP_BLOCK = re.compile(r"\[string\]\$_|\$_\.psobject\.baseobject|\"\$_\"", re.IGNORECASE)


def unwraps(command: Node) -> bool:
    """A pipeline step whose output is plain strings (or parsed data), not Get-Content's annotated lines."""
    name = (command_name(command) or "").lower()
    if name == "convertfrom-json":
        return True
    return name == "foreach-object" and bool(UNWRAP_BLOCK.search(re.sub(r"\s+", "", text(command))))


def value_is_plain(node: Node) -> bool:
    """Whether what ``node`` evaluates to reaches its user as plain strings: cast with [string] or [string[]],
    expanded into a string, or only a member of it used (``.Trim()``, ``.Length``)."""
    while node.parent is not None and node.parent.type in PASS_THROUGH and node.parent.named_child_count == 1:
        node = node.parent
    user = node.parent
    if user is None:
        return False
    if user.type == "cast_expression":
        cast = next((c for c in user.named_children if c.type == "type_literal"), None)
        return cast is not None and re.sub(r"\s+", "", text(cast)).lower() in ("[string]", "[string[]]")
    if user.type in ("expandable_string_literal", "expandable_here_string_literal"):
        return True
    return user.type in ("member_access", "invokation_expression") and user.named_children[0] == node


def get_content_findings(source: str) -> list[str]:
    root = parse(source)
    commands = [n for n in walk(root) if n.type == "command"]
    if not any((command_name(c) or "").lower() == "convertto-json" for c in commands):
        return []  # writes no JSON: nothing to keep the line objects out of
    findings = []
    for command in commands:
        if (command_name(command) or "").lower() != "get-content":
            continue
        chain = command.parent
        if chain is not None and chain.type == "pipeline_chain":
            after = [c for c in chain.named_children if c.type == "command"]
            after = after[after.index(command) + 1 :]
            while after and (command_name(after[0]) or "").lower() in PASSES_OBJECTS_ON:
                after = after[1:]
            if after:
                if unwraps(after[0]):
                    continue
                findings.append(
                    f"line {line(command)}: Get-Content piped into {command_name(after[0]) or text(after[0])!r}"
                    " without unwrapping: pipe it through ForEach-Object { [string]$_ }"
                )
                continue
        if not value_is_plain(chain if chain is not None and chain.type == "pipeline_chain" else command):
            findings.append(
                f"line {line(command)}: Get-Content's lines keep their PSPath/PSDrive notes and 5.1's ConvertTo-Json"
                " writes each as an object: pipe through ForEach-Object { [string]$_ } or cast with [string]"
            )
    return findings


# -- the scripts --------------------------------------------------------------------------------------


def test_there_are_scripts():
    assert SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_uses_only_cmdlets_and_parameters_of_windows_powershell_51_and_40(path):
    assert compatibility_findings(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_has_no_powershell_7_syntax(path):
    assert powershell_7_findings(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_unwraps_get_content_before_writing_json(path):
    assert get_content_findings(path.read_text(encoding="utf-8")) == []


# -- each check fails where it should -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "finding"),
    [
        ("Get-Foo -Bar 1", "Get-Foo is not a cmdlet"),
        ("Start-Service -Name x -NoWait", "Start-Service -NoWait does not exist in Windows PowerShell 5.1"),
        ("Get-ComputerInfo", "Get-ComputerInfo does not exist in Windows PowerShell 4.0"),
        ("Get-ChildItem C:\\ -Depth 2", "Get-ChildItem -Depth does not exist in Windows PowerShell 4.0"),
        ("Get-Item x -InformationAction Ignore", "Get-Item -InformationAction does not exist"),
        ("Get-Content x -T 5", "Get-Content -T is ambiguous (Tail, TotalCount)"),
        ("gc x", "gc is an alias"),
        ("$a | ? { $_ } | Where-Object -Bogus x", "Where-Object -Bogus does not exist"),
        ("$a | Where-Object -Bogus 1", "Where-Object -Bogus does not exist"),
        ("$a | foreach { $_ } | where -Bogus 1", "Where-Object -Bogus does not exist"),
    ],
)
def test_the_compatibility_check_finds(snippet, finding):
    assert any(finding in f for f in compatibility_findings(snippet)), compatibility_findings(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "Get-Content -Lit $p -Ta 5 -ErrorAction Stop -ea 0 -WarningAction SilentlyContinue -OutVariable o",
        "& shutdown.exe /r /t 0 2>$null | Out-Null; chcp.com 65001 | Out-Null",
        "function Q($s) { $s }\nQ -Anything 1",
        "Get-Process -Id 1 | Where-Object ProcessName -eq 'powershell' | Select-Object -First 1",
        "$x = [IO.Path]::Combine('a', 'b'); $y = $x.Replace('a', 'b')",
        "Select-Object -First -1",
    ],
)
def test_the_compatibility_check_lets_through(snippet):
    assert compatibility_findings(snippet) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "Get-Content -Tail 5 x && y",
        "Test-Path x || throw 'no'",
        "$a = $b ?? 'default'",
        "$a ??= 3",
        "$n = $svc?.Name",
        "$x = $ok ? 1 : 2",
    ],
)
def test_the_powershell_7_check_finds(snippet):
    assert powershell_7_findings(snippet) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "$a = 'x && y || z ?? w ?. v ? u : t' # && || ?? ?. a ? b : c",
        "$a | ? { $_ } | Where-Object { $? }",
        '$s = "$($x)?" + "${y}?"',
        "if ($a -and $b -or -not $c) { $d = $e }",
    ],
)
def test_the_powershell_7_check_lets_through(snippet):
    assert powershell_7_findings(snippet) == []


def test_the_powershell_7_text_check_stands_on_its_own():
    """Should the grammar learn these as nodes of their own, the text check still finds them."""
    code = b"$a = $b ?? 1\n$c = $d?.e\n$f = $g ? 1 : 2\nx && y\nx || y\n$h | ? { $_ }\n$i | Where-Object { $? }"
    assert powershell_7_tokens(code) == [(1, "??"), (2, "?."), (3, "?"), (4, "&&"), (5, "||")]


JSON_OUT = "\n[ordered]@{ t = $t } | ConvertTo-Json -Compress -Depth 5"


@pytest.mark.parametrize(
    "snippet",
    [
        "$t = @(Get-Content -LiteralPath $p -Tail 5)",
        "$t = Get-Content -LiteralPath $p -Raw",
        "$t = (Get-Content -LiteralPath $p)[0]",
        "$t = @(Get-Content -LiteralPath $p -Tail 5 | Select-Object -Last 2)",
        "$t = @(Get-Content -LiteralPath $p | Where-Object { $_ } | ForEach-Object { $_ })",
        "$t = Get-Content $p | Write-Output",
        "$t = [object[]](Get-Content $p)",
    ],
)
def test_the_get_content_check_finds(snippet):
    assert get_content_findings(snippet + JSON_OUT) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "$t = @(Get-Content -LiteralPath $p -Tail 5 | ForEach-Object { [string]$_ })",
        "$t = @(Get-Content -LiteralPath $p | Select-Object -Last 5 | ForEach-Object { $_.PSObject.BaseObject })",
        "$t = [string](Get-Content -LiteralPath $p -Raw)",
        "$t = [string[]]@(Get-Content -LiteralPath $p -Tail 5)",
        '$t = "$(Get-Content -LiteralPath $p -Raw)".Trim()',
        "$t = (Get-Content -LiteralPath $p -Raw | ConvertFrom-Json).token",
        "$t = [string](Get-Content -LiteralPath $p -Raw | ConvertFrom-Json).bootTime",
        "$t = (Get-Content -LiteralPath $p -Raw).Trim()",
    ],
)
def test_the_get_content_check_lets_through(snippet):
    assert get_content_findings(snippet + JSON_OUT) == []


def test_the_get_content_check_needs_json_output():
    assert get_content_findings("$t = @(Get-Content -LiteralPath $p)") == []
