"""Every steps/ps script: parses as PowerShell, follows DESIGN.md's rules, fits cmd.exe's limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tree_sitter_language_pack import get_parser

from bot.winrm import CMD_LINE_LIMIT, build_script, command_line

PS_DIR = Path(__file__).resolve().parents[2] / "steps" / "ps"
SCRIPTS = sorted(PS_DIR.glob("*.ps1"))

# Parameters as large as production sends them: long but real paths, patterns and URLs.
REALISTIC_PARAMS: dict[str, dict] = {
    "preflight": {
        "ServiceName": "VMwareIDMConnector",
        "ProductNamePattern": "VMware Identity Manager Connector*",
        "Drive": "C:",
    },
    "boottime": {},
}

FORBIDDEN = re.compile(r"\b(Win32_Product|Invoke-Expression|iex|Write-Host)\b", re.IGNORECASE)


def parse_errors(source: bytes) -> list[str]:
    tree = get_parser("powershell").parse(source)
    errors, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            errors.append(f"line {node.start_point[0] + 1}: {source[node.start_byte : node.end_byte][:60]!r}")
        stack.extend(node.children)
    return errors


def code_lines(text: str) -> str:
    """The script without its comments, so a comment may name what the code must not do."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_the_parser_catches_broken_powershell():
    assert parse_errors(b"if ($x) { Get-Item 'a' ") != []
    assert parse_errors(b"$a = @{ b = 1 }\n$a | ConvertTo-Json -Compress") == []


def test_there_are_scripts_and_each_has_realistic_parameters():
    assert SCRIPTS
    assert {p.stem for p in SCRIPTS} == set(REALISTIC_PARAMS)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_parses_as_powershell(path):
    assert parse_errors(path.read_bytes()) == []
    # and still parses with the $Params line the executor puts in front of it
    assert parse_errors(build_script(path.stem, REALISTIC_PARAMS[path.stem]).encode()) == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_follows_the_rules(path):
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == f"# idm-upgrade: {path.stem}"
    code = code_lines(text)
    assert re.search(r"^\$ErrorActionPreference = 'Stop'$", code, re.MULTILINE)
    assert re.search(r"^\$ProgressPreference = 'SilentlyContinue'$", code, re.MULTILINE)
    assert not FORBIDDEN.search(code), FORBIDDEN.search(code)
    assert "ConvertTo-Json -Compress -Depth 5" in code


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_fits_the_command_line_limit(path):
    line = command_line(build_script(path.stem, REALISTIC_PARAMS[path.stem]))
    assert len(line) <= CMD_LINE_LIMIT, f"{path.stem}: {len(line)} characters"
