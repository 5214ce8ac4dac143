"""Every steps/ps script: parses as PowerShell, follows DESIGN.md's rules, fits cmd.exe's limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tree_sitter_language_pack import get_parser

from bot.systems.winrm import CMD_LINE_LIMIT, build_script, command_line

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
    "filehash": {
        "Path": r"C:\ProgramData\idm-upgrade\staging\VMware_Identity_Manager_Connector_19.03.0.1_Installer.exe",
    },
    "stage": {
        "Url": "https://artifacts.corp.example.com/repository/vmware-releases/identity-manager/connector/19.03.0.1/"
        "VMware_Identity_Manager_Connector_19.03.0.1_Installer.exe",
        "Sha256": "5f2b0e6c3a1d4e8f9b7c6a5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f",
        "Directory": r"C:\ProgramData\idm-upgrade\staging",
        "FileName": "VMware_Identity_Manager_Connector_19.03.0.1_Installer.exe",
    },
    "install_start": {
        "Installer": r"C:\ProgramData\idm-upgrade\staging\VMware_Identity_Manager_Connector_19.03.0.1_Installer.exe",
        "Arguments": r'/s /v"/qn REBOOT=ReallySuppress /l*v ""C:\ProgramData\idm-upgrade\logs'
        r'\connector-install-19.03.0.1-20240304T050607Z.log"""',
        "Log": r"C:\ProgramData\idm-upgrade\logs\connector-install-19.03.0.1-20240304T050607Z.log",
        "StateFile": r"C:\ProgramData\idm-upgrade\install-state.json",
        "Token": "run-7f3c2a9e4b1d4c6f8a2e9d0b1c3f5a7e-install",
    },
    "install_status": {
        "StateFile": r"C:\ProgramData\idm-upgrade\install-state.json",
        "Tail": 40,
        "LineChars": 2000,
    },
    "service": {
        "ServiceName": "VMwareIDMConnector",
        "Start": True,
        "LogPath": r"C:\VMware\VMwareIdentityManager\Connector\opt\vmware\horizon\workspace\logs\connector.log",
        "Tail": 40,
        "LineChars": 2000,
    },
    "reboot": {
        "DelaySeconds": 5,
        "Reason": "idm-upgrade: VMware Identity Manager Connector 19.03.0.1 upgraded the JRE; reboot approved by "
        "U024BE7LH in run 7f3c2a9e-4b1d-4c6f-8a2e-9d0b1c3f5a7e",
        "Token": "apr-7f3c2a9e4b1d4c6f8a2e9d0b1c3f5a7e",
        "MarkerDirectory": r"C:\ProgramData\idm-upgrade\markers",
    },
    "product": {"ProductNamePattern": "VMware Identity Manager Connector*"},
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


def test_only_the_bootstrap_must_fit_the_command_line_limit():
    # scripts go on stdin (bot.systems.winrm.start_script), which cmd.exe's 8,191 characters do not bound
    assert len(command_line()) <= CMD_LINE_LIMIT
